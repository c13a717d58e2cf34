#pragma once

#include <atomic>
#include <mutex>
#include <string>

#include "continuum/net/connection.h"
#include "net/openssl_util.h"
#include "net/socket_util.h"
#include "net/tls_context.h"

namespace continuum::net {

// A Connection over a non-blocking TCP socket, with TLS (ssl != nullptr) or
// plaintext.
//
// Threading: an OpenSSL SSL object is not safe for concurrent SSL_read and
// SSL_write, not even with TLS 1.3 (both touch shared record-layer and
// post-handshake state). So every SSL_* call holds ssl_mu_, and no call ever
// blocks while holding it: the socket is non-blocking, a call that cannot make
// progress returns WANT_READ/WANT_WRITE, and the thread releases the lock and
// waits in poll(2). A sender blocked on a full socket buffer therefore never
// stops the receiver, and the other way round. The cost is that encryption in
// one direction and decryption in the other do not run in parallel.
// Plaintext mode needs no lock: the kernel serialises send and recv.
//
// Failure: the first error in either direction (or Shutdown) is recorded, the
// socket is shut down so the other direction wakes at once, and every later
// call returns that first error, so both threads report the root cause.
class SocketConnection final : public Connection {
 public:
  // Takes ownership of `fd` and `ssl` (nullptr: plaintext). `peer_name` is the
  // verified certificate name, or "insecure:<addr>".
  SocketConnection(int fd, ossl::SslPtr ssl, TlsIdentity self, std::string peer_name, int io_timeout_ms);
  ~SocketConnection() override;
  SocketConnection(const SocketConnection&) = delete;
  SocketConnection& operator=(const SocketConnection&) = delete;

  Status SendAll(std::span<const uint8_t> data) override;
  Status RecvAll(std::span<uint8_t> out) override;
  void Shutdown() override;
  std::string PeerName() const override { return peer_name_; }
  std::string PeerAddress() const override { return peer_address_; }
  void SetIoTimeout(int ms) override { io_timeout_ms_.store(ms); }
  bool Readable() override;

  // Tests shorten the key update interval to exercise it under load.
  void SetKeyUpdateIntervalForTesting(uint64_t bytes) { key_update_interval_ = bytes; }

 private:
  enum class Op { kWrite, kRead };
  // Records `st` as the connection's failure unless one is already recorded,
  // shuts the socket down, and returns the first failure.
  Status Fail(Status st);
  Status FirstError();
  Status Wait(Op op, short events, Clock::time_point deadline, int max_wait_ms);
  Status SendPlain(std::span<const uint8_t> data);
  Status RecvPlain(std::span<uint8_t> out);
  Status SendTls(std::span<const uint8_t> data);
  Status RecvTls(std::span<uint8_t> out);

  const int fd_;
  std::mutex ssl_mu_;
  ossl::SslPtr ssl_;  // GUARDED_BY(ssl_mu_) for every SSL_* call; the pointer itself is const
  const TlsIdentity self_;
  const std::string peer_name_;
  const std::string peer_address_;
  const std::string peer_label_;  // "dr1 (10.0.0.5:7700)" or "10.0.0.5:7700", for messages
  std::atomic<int> io_timeout_ms_;
  // TLS 1.3 wants AES-GCM keys changed long before 2^24.5 records (~380 GiB,
  // minutes on a fast link), and OpenSSL does not do it by itself; the sender
  // sends a KeyUpdate every key_update_interval_ bytes. Owned by the sending thread.
  uint64_t key_update_interval_ = 64ull << 30;
  uint64_t sent_since_key_update_ = 0;
  std::atomic<bool> dead_{false};
  std::mutex error_mu_;
  Status first_error_;  // GUARDED_BY(error_mu_)
};

}  // namespace continuum::net
