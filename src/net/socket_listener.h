#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "continuum/net/listener.h"
#include "net/openssl_util.h"
#include "net/socket_util.h"
#include "net/tls_context.h"

namespace continuum::net {

// A Listener over a non-blocking TCP socket. Accept multiplexes the listening
// socket, an eventfd that Close signals, and every handshake in progress, so a
// client that connects and then stalls delays nobody: its handshake simply
// times out on its own deadline.
//
// Threading: Accept on one thread at a time (pending_ belongs to it); Close
// and Address from any thread.
class SocketListener final : public Listener {
 public:
  static Result<std::unique_ptr<Listener>> Create(const std::string& host_port, const TlsOptions& options);
  ~SocketListener() override;
  SocketListener(const SocketListener&) = delete;
  SocketListener& operator=(const SocketListener&) = delete;

  std::string Address() const override { return address_; }
  Result<std::unique_ptr<Connection>> Accept() override;
  void Close() override;

 private:
  // A TCP connection whose TLS handshake is in progress.
  struct Pending {
    int fd = -1;
    ossl::SslPtr ssl;
    std::string address;
    Clock::time_point deadline;
    short events = 0;
  };
  // Beyond this many concurrent handshakes, new TCP connections wait in the
  // kernel backlog; bounds the memory an unauthenticated flood can take.
  static constexpr size_t kMaxPending = 64;

  SocketListener(int listen_fd, int wake_fd, std::string address, std::unique_ptr<TlsContext> tls, TlsOptions options)
      : listen_fd_(listen_fd),
        wake_fd_(wake_fd),
        address_(std::move(address)),
        tls_(std::move(tls)),
        options_(std::move(options)) {}

  // Accepts one TCP connection: a plaintext Connection in insecure mode,
  // otherwise nullptr after queueing its handshake.
  Result<std::unique_ptr<Connection>> AcceptTcp();
  // Advances pending_[i]; a Connection when its handshake finished, nullptr
  // while it is still going, or the handshake's error. Removes it when done.
  Result<std::unique_ptr<Connection>> Advance(size_t i);
  void Drop(size_t i);

  const int listen_fd_;
  const int wake_fd_;
  const std::string address_;
  const std::unique_ptr<TlsContext> tls_;  // nullptr in insecure mode
  const TlsOptions options_;
  std::atomic<bool> closed_{false};
  std::vector<Pending> pending_;  // owned by the Accept thread
};

}  // namespace continuum::net
