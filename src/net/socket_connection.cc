#include "net/socket_connection.h"

#include <openssl/err.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>

#include "net/tls_failure.h"

namespace continuum::net {
namespace {

// How long a thread waits for the *other* direction's readiness (SSL_write
// wanting to read, SSL_read wanting to write) before retrying. These happen
// only around TLS post-handshake messages, and the other thread may consume
// the readiness first, so the wait is short instead of exact.
constexpr int kCrossWaitMs = 20;

bool WritableNow(int fd) {
  pollfd pfd{.fd = fd, .events = POLLOUT, .revents = 0};
  return ::poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLOUT) != 0;
}

std::string Label(const std::string& peer_name, const std::string& address, bool tls) {
  return tls ? peer_name + " (" + address + ")" : address;
}

}  // namespace

SocketConnection::SocketConnection(int fd, ossl::SslPtr ssl, TlsIdentity self, std::string peer_name, int io_timeout_ms)
    : fd_(fd),
      ssl_(std::move(ssl)),
      self_(std::move(self)),
      peer_name_(std::move(peer_name)),
      peer_address_(RemoteAddress(fd)),
      peer_label_(Label(peer_name_, peer_address_, ssl_ != nullptr)),
      io_timeout_ms_(io_timeout_ms) {}

SocketConnection::~SocketConnection() {
  if (ssl_ && !dead_.load()) {
    // Best effort close_notify, so the peer sees an orderly close; never waits.
    ERR_clear_error();
    SSL_shutdown(ssl_.get());
    ERR_clear_error();
  }
  ssl_.reset();
  ::close(fd_);
}

Status SocketConnection::Fail(Status st) {
  {
    std::lock_guard lock(error_mu_);
    if (first_error_.ok()) first_error_ = std::move(st);
  }
  dead_.store(true);
  // Wakes the other direction's poll; the fd itself stays open until the
  // destructor, so it cannot be reused under a thread still polling it.
  ::shutdown(fd_, SHUT_RDWR);
  return FirstError();
}

Status SocketConnection::FirstError() {
  std::lock_guard lock(error_mu_);
  return first_error_;
}

void SocketConnection::Shutdown() {
  Fail(Unavailable("connection to " + peer_label_ + " was shut down")).IgnoreError();
}

Status SocketConnection::Wait(Op op, short events, Clock::time_point deadline, int max_wait_ms) {
  auto ready = WaitFd(fd_, events, deadline, max_wait_ms);
  if (!ready.ok()) return Fail(ready.status());
  if (*ready == WaitResult::kReady) return Status::Ok();
  std::string what = op == Op::kWrite ? "sending to " : "receiving from ";
  return Fail(Unavailable("timed out " + what + peer_label_ + " after " + std::to_string(io_timeout_ms_.load()) +
                          " ms without progress"));
}

Status SocketConnection::SendAll(std::span<const uint8_t> data) {
  if (dead_.load()) return FirstError();
  return ssl_ ? SendTls(data) : SendPlain(data);
}

Status SocketConnection::RecvAll(std::span<uint8_t> out) {
  if (dead_.load()) return FirstError();
  return ssl_ ? RecvTls(out) : RecvPlain(out);
}

bool SocketConnection::Readable() {
  if (dead_.load()) return false;
  if (ssl_) {
    std::lock_guard lock(ssl_mu_);
    if (SSL_has_pending(ssl_.get()) == 1) return true;
  }
  struct pollfd p = {fd_, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & POLLIN) != 0;
}

Status SocketConnection::SendPlain(std::span<const uint8_t> data) {
  size_t done = 0;
  Clock::time_point deadline = DeadlineAfter(io_timeout_ms_.load());
  while (done < data.size()) {
    if (dead_.load()) return FirstError();
    ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<size_t>(n);
      deadline = DeadlineAfter(io_timeout_ms_.load());
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      if (errno == EPIPE || errno == ECONNRESET) return Fail(Unavailable("connection to " + peer_label_ + " closed"));
      return Fail(NetError("send to " + peer_label_, errno));
    }
    CONTINUUM_RETURN_IF_ERROR(Wait(Op::kWrite, POLLOUT, deadline, -1));
  }
  return Status::Ok();
}

Status SocketConnection::RecvPlain(std::span<uint8_t> out) {
  size_t done = 0;
  Clock::time_point deadline = DeadlineAfter(io_timeout_ms_.load());
  while (done < out.size()) {
    if (dead_.load()) return FirstError();
    ssize_t n = ::recv(fd_, out.data() + done, out.size() - done, 0);
    if (n > 0) {
      done += static_cast<size_t>(n);
      deadline = DeadlineAfter(io_timeout_ms_.load());
      continue;
    }
    if (n == 0) return Fail(Unavailable("connection to " + peer_label_ + " closed"));
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      if (errno == ECONNRESET) return Fail(Unavailable("connection to " + peer_label_ + " closed (reset)"));
      return Fail(NetError("receive from " + peer_label_, errno));
    }
    CONTINUUM_RETURN_IF_ERROR(Wait(Op::kRead, POLLIN, deadline, -1));
  }
  return Status::Ok();
}

Status SocketConnection::SendTls(std::span<const uint8_t> data) {
  size_t done = 0;
  Clock::time_point deadline = DeadlineAfter(io_timeout_ms_.load());
  while (done < data.size()) {
    if (dead_.load()) return FirstError();
    short events;
    {
      std::lock_guard lock(ssl_mu_);
      if (sent_since_key_update_ >= key_update_interval_ && WritableNow(fd_)) {
        // SSL_key_update only queues the message; the SSL_write below sends it
        // ahead of the data. Until it is sent, libssl makes SSL_read on this
        // connection try to send it too, so a receiver could stall behind a
        // full send buffer; if both peers did that at once, neither would read
        // again. Hence only when the socket has room now (nothing else writes
        // to it while we hold ssl_mu_) so the tiny record goes out at once.
        // NOT_REQUESTED: the peer need not answer, so its receiver never writes.
        ERR_clear_error();
        if (SSL_key_update(ssl_.get(), SSL_KEY_UPDATE_NOT_REQUESTED) == 1) sent_since_key_update_ = 0;
        ERR_clear_error();
      }
      int chunk = static_cast<int>(std::min<size_t>(data.size() - done, INT_MAX));
      ERR_clear_error();
      errno = 0;
      int n = SSL_write(ssl_.get(), data.data() + done, chunk);
      if (n > 0) {
        done += static_cast<size_t>(n);
        sent_since_key_update_ += static_cast<uint64_t>(n);
        deadline = DeadlineAfter(io_timeout_ms_.load());
        continue;
      }
      int err = SSL_get_error(ssl_.get(), n);
      if (err == SSL_ERROR_WANT_WRITE) {
        events = POLLOUT;
      } else if (err == SSL_ERROR_WANT_READ) {
        events = POLLIN;
      } else {
        return Fail(TlsFailure(ssl_.get(), n, TlsPhase::kData, self_, peer_label_));
      }
    }
    CONTINUUM_RETURN_IF_ERROR(Wait(Op::kWrite, events, deadline, events == POLLIN ? kCrossWaitMs : -1));
  }
  return Status::Ok();
}

Status SocketConnection::RecvTls(std::span<uint8_t> out) {
  size_t done = 0;
  Clock::time_point deadline = DeadlineAfter(io_timeout_ms_.load());
  while (done < out.size()) {
    if (dead_.load()) return FirstError();
    short events;
    {
      std::lock_guard lock(ssl_mu_);
      int chunk = static_cast<int>(std::min<size_t>(out.size() - done, INT_MAX));
      ERR_clear_error();
      errno = 0;
      int n = SSL_read(ssl_.get(), out.data() + done, chunk);
      if (n > 0) {
        done += static_cast<size_t>(n);
        deadline = DeadlineAfter(io_timeout_ms_.load());
        continue;
      }
      int err = SSL_get_error(ssl_.get(), n);
      if (err == SSL_ERROR_WANT_READ) {
        events = POLLIN;
      } else if (err == SSL_ERROR_WANT_WRITE) {
        events = POLLOUT;
      } else {
        return Fail(TlsFailure(ssl_.get(), n, TlsPhase::kData, self_, peer_label_));
      }
    }
    CONTINUUM_RETURN_IF_ERROR(Wait(Op::kRead, events, deadline, events == POLLOUT ? kCrossWaitMs : -1));
  }
  return Status::Ok();
}

}  // namespace continuum::net
