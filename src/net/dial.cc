#include <poll.h>
#include <unistd.h>

#include "continuum/net/tls.h"
#include "net/socket_connection.h"
#include "net/socket_util.h"
#include "net/tls_context.h"
#include "net/tls_handshake.h"

namespace continuum::net {
namespace {

// Runs `step` until it is done, waiting for the socket between steps.
template <typename Step>
Status Drive(int fd, Step step, Clock::time_point deadline, const std::string& what, int timeout_ms) {
  for (;;) {
    CONTINUUM_ASSIGN_OR_RETURN(TlsWant want, step());
    if (want == TlsWant::kDone) return Status::Ok();
    CONTINUUM_ASSIGN_OR_RETURN(WaitResult ready, WaitFd(fd, want == TlsWant::kRead ? POLLIN : POLLOUT, deadline));
    if (ready == WaitResult::kTimedOut) {
      return Unavailable(what + " timed out after " + std::to_string(timeout_ms) + " ms");
    }
  }
}

}  // namespace

Result<std::unique_ptr<Connection>> Dial(const std::string& host_port, const TlsOptions& options,
                                         const std::string& expected_peer_name) {
  Clock::time_point deadline = DeadlineAfter(options.connect_timeout_ms);
  std::unique_ptr<TlsContext> tls;
  if (!options.insecure) {
    // Loaded before connecting: a local PKI problem is not the peer's fault.
    CONTINUUM_ASSIGN_OR_RETURN(tls, TlsContext::Load(options, TlsRole::kClient));
  }
  CONTINUUM_ASSIGN_OR_RETURN(int fd, ConnectTcp(host_port, deadline, options.connect_timeout_ms));
  auto fail = [fd](Status st) -> Result<std::unique_ptr<Connection>> {
    ::close(fd);
    return st;
  };
  if (Status st = SetStreamOptions(fd, host_port); !st.ok()) return fail(st);
  if (!tls) {
    return std::unique_ptr<Connection>(
        new SocketConnection(fd, nullptr, {}, "insecure:" + RemoteAddress(fd), options.io_timeout_ms));
  }

  auto ssl = tls->NewSession(fd, expected_peer_name);
  if (!ssl.ok()) return fail(ssl.status());
  SSL* s = ssl->get();
  const TlsIdentity& self = tls->identity();
  Status st = Drive(
      fd, [&] { return StepHandshake(s, self, host_port); }, deadline, "tls handshake with " + host_port,
      options.connect_timeout_ms);
  if (st.ok()) {
    st = Drive(
        fd, [&] { return StepAwaitAcceptance(s, self, host_port); }, deadline,
        "waiting for " + host_port + " to accept our certificate", options.connect_timeout_ms);
  }
  if (!st.ok()) {
    ssl->reset();  // before the fd it reads from is closed
    return fail(st);
  }
  std::string peer_name = VerifiedPeerName(s);
  return std::unique_ptr<Connection>(
      new SocketConnection(fd, std::move(*ssl), self, std::move(peer_name), options.io_timeout_ms));
}

}  // namespace continuum::net
