#include "net/socket_listener.h"

#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "net/socket_connection.h"
#include "net/tls_handshake.h"

namespace continuum::net {
namespace {

Result<int> BindListen(const std::string& host_port) {
  CONTINUUM_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(host_port));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(hp.host.empty() ? nullptr : hp.host.c_str(), hp.port.c_str(), &hints, &res);
  if (rc != 0) return InvalidArgument("resolve listen address " + host_port + ": " + gai_strerror(rc));
  Status last = InvalidArgument("no address to listen on for " + host_port);
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last = NetError("socket for " + host_port, errno);
      continue;
    }
    int one = 1;
    // A restarted server must rebind while old connections sit in TIME_WAIT.
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, 128) == 0) {
      ::freeaddrinfo(res);
      return fd;
    }
    last = NetError("listen on " + host_port, errno);
    ::close(fd);
  }
  ::freeaddrinfo(res);
  return last;
}

}  // namespace

Result<std::unique_ptr<Listener>> Listener::Listen(const std::string& host_port, const TlsOptions& options) {
  return SocketListener::Create(host_port, options);
}

Result<std::unique_ptr<Listener>> SocketListener::Create(const std::string& host_port, const TlsOptions& options) {
  std::unique_ptr<TlsContext> tls;
  if (!options.insecure) {
    CONTINUUM_ASSIGN_OR_RETURN(tls, TlsContext::Load(options, TlsRole::kServer));
  }
  CONTINUUM_ASSIGN_OR_RETURN(int listen_fd, BindListen(host_port));
  int wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd < 0) {
    int err = errno;
    ::close(listen_fd);
    return PosixError("eventfd for listener " + host_port, err);
  }
  return std::unique_ptr<Listener>(
      new SocketListener(listen_fd, wake_fd, LocalAddress(listen_fd), std::move(tls), options));
}

SocketListener::~SocketListener() {
  while (!pending_.empty()) Drop(pending_.size() - 1);
  ::close(listen_fd_);
  ::close(wake_fd_);
}

void SocketListener::Close() {
  closed_.store(true);
  uint64_t one = 1;
  // Only fails when the counter would overflow, i.e. it is already signalled.
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof(one));
}

void SocketListener::Drop(size_t i) {
  pending_[i].ssl.reset();
  ::close(pending_[i].fd);
  pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
}

Result<std::unique_ptr<Connection>> SocketListener::Accept() {
  for (;;) {
    if (closed_.load()) return Unavailable("listener on " + address_ + " is closed");

    Clock::time_point now = Clock::now();
    for (size_t i = 0; i < pending_.size(); ++i) {
      if (pending_[i].deadline <= now) {
        std::string address = pending_[i].address;
        Drop(i);
        return Unavailable("tls handshake with " + address + " timed out after " +
                           std::to_string(options_.connect_timeout_ms) + " ms");
      }
    }

    std::vector<pollfd> fds;
    fds.push_back({.fd = wake_fd_, .events = POLLIN, .revents = 0});
    fds.push_back({.fd = pending_.size() < kMaxPending ? listen_fd_ : -1, .events = POLLIN, .revents = 0});
    int timeout = -1;
    for (const Pending& p : pending_) {
      fds.push_back({.fd = p.fd, .events = p.events, .revents = 0});
      int left = RemainingMs(p.deadline);
      if (left >= 0 && (timeout < 0 || left < timeout)) timeout = left;
    }
    int n = ::poll(fds.data(), fds.size(), timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      return NetError("poll listener on " + address_, errno);
    }
    if (fds[0].revents != 0) continue;  // Close(): reported at the top

    for (size_t i = 0; i < pending_.size(); ++i) {
      if (fds[i + 2].revents == 0) continue;
      // Other ready handshakes stay ready (poll is level-triggered) for the next call.
      auto conn = Advance(i);
      if (!conn.ok() || *conn != nullptr) return conn;
    }
    if (fds[1].revents != 0) {
      auto conn = AcceptTcp();
      if (!conn.ok() || *conn != nullptr) return conn;
    }
  }
}

Result<std::unique_ptr<Connection>> SocketListener::AcceptTcp() {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
      return std::unique_ptr<Connection>();
    // EMFILE and friends: the caller sees it, backs off, and calls again.
    return NetError("accept on " + address_, errno);
  }
  std::string address = FormatSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
  if (Status st = SetStreamOptions(fd, address); !st.ok()) {
    ::close(fd);
    return st;
  }
  if (!tls_) {
    return std::unique_ptr<Connection>(
        new SocketConnection(fd, nullptr, {}, "insecure:" + address, options_.io_timeout_ms));
  }
  auto ssl = tls_->NewSession(fd, "");
  if (!ssl.ok()) {
    ::close(fd);
    return ssl.status();
  }
  pending_.push_back({.fd = fd,
                      .ssl = std::move(*ssl),
                      .address = std::move(address),
                      .deadline = DeadlineAfter(options_.connect_timeout_ms),
                      .events = POLLIN});
  return std::unique_ptr<Connection>();
}

Result<std::unique_ptr<Connection>> SocketListener::Advance(size_t i) {
  Pending& p = pending_[i];
  auto want = StepHandshake(p.ssl.get(), tls_->identity(), p.address);
  if (!want.ok()) {
    Drop(i);
    return want.status();
  }
  if (*want == TlsWant::kRead || *want == TlsWant::kWrite) {
    p.events = *want == TlsWant::kRead ? POLLIN : POLLOUT;
    return std::unique_ptr<Connection>();
  }
  std::string peer_name = VerifiedPeerName(p.ssl.get());
  std::unique_ptr<Connection> conn(
      new SocketConnection(p.fd, std::move(p.ssl), tls_->identity(), std::move(peer_name), options_.io_timeout_ms));
  pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));  // the fd now belongs to conn
  return conn;
}

}  // namespace continuum::net
