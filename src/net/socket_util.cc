#include "net/socket_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace continuum::net {

Result<HostPort> ParseHostPort(const std::string& host_port) {
  HostPort hp;
  std::string::size_type colon;
  if (!host_port.empty() && host_port[0] == '[') {
    std::string::size_type close = host_port.find(']');
    if (close == std::string::npos || close + 1 >= host_port.size() || host_port[close + 1] != ':') {
      return InvalidArgument("invalid address '" + host_port + "': expected [ipv6]:port");
    }
    hp.host = host_port.substr(1, close - 1);
    colon = close + 1;
  } else {
    colon = host_port.rfind(':');
    if (colon == std::string::npos) return InvalidArgument("invalid address '" + host_port + "': expected host:port");
    hp.host = host_port.substr(0, colon);
    if (hp.host.find(':') != std::string::npos) {
      return InvalidArgument("invalid address '" + host_port + "': put an ipv6 address in brackets");
    }
  }
  hp.port = host_port.substr(colon + 1);
  bool numeric = !hp.port.empty() && hp.port.size() <= 5 &&
                 std::all_of(hp.port.begin(), hp.port.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!numeric || std::stoi(hp.port) > 65535) {
    return InvalidArgument("invalid port in '" + host_port + "'");
  }
  return hp;
}

std::string FormatSockaddr(const sockaddr* addr, socklen_t len) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (addr->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
    auto* in = reinterpret_cast<const sockaddr_in*>(addr);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    return std::string(host) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (addr->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  return "unknown-address";
}

std::string LocalAddress(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "unknown-address";
  return FormatSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

std::string RemoteAddress(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "unknown-address";
  return FormatSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

Status NetError(const std::string& context, int err) {
  Status st = PosixError(context, err);
  switch (err) {
    case ECONNRESET:
    case ECONNREFUSED:
    case ECONNABORTED:
    case EPIPE:
    case ETIMEDOUT:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case ENETDOWN:
    case EHOSTDOWN:
      return Status(StatusCode::kUnavailable, st.message(), err);
    default:
      return st;
  }
}

Status SetStreamOptions(int fd, const std::string& peer) {
  int one = 1;
  // Probe after 30 s idle, every 10 s, give up after 3 misses: ~1 minute.
  int idle = 30, interval = 10, count = 3;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
      ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) != 0 ||
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) != 0 ||
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval)) != 0 ||
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count)) != 0) {
    return NetError("set tcp options on connection to " + peer, errno);
  }
  return Status::Ok();
}

int RemainingMs(Clock::time_point deadline) {
  if (deadline == Clock::time_point::max()) return -1;
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, 1 << 30));
}

Clock::time_point DeadlineAfter(int timeout_ms) {
  if (timeout_ms <= 0) return Clock::time_point::max();
  return Clock::now() + std::chrono::milliseconds(timeout_ms);
}

Result<WaitResult> WaitFd(int fd, short events, Clock::time_point deadline, int max_wait_ms) {
  for (;;) {
    int wait = RemainingMs(deadline);
    if (wait == 0) return WaitResult::kTimedOut;
    if (max_wait_ms >= 0 && (wait < 0 || wait > max_wait_ms)) wait = max_wait_ms;
    pollfd pfd{.fd = fd, .events = events, .revents = 0};
    int n = ::poll(&pfd, 1, wait);
    if (n > 0) return WaitResult::kReady;
    if (n == 0) {
      // A capped wait returns to let the caller retry; a real deadline is checked above.
      if (max_wait_ms >= 0 && wait == max_wait_ms) return WaitResult::kReady;
      continue;
    }
    if (errno != EINTR) return NetError("poll", errno);
  }
}

namespace {

Result<int> ConnectOne(const addrinfo* ai, const std::string& host_port, Clock::time_point deadline, int timeout_ms) {
  int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0) return NetError("socket for " + host_port, errno);
  std::string addr = FormatSockaddr(ai->ai_addr, ai->ai_addrlen);
  auto fail = [&](Status st) -> Result<int> {
    ::close(fd);
    return st;
  };
  if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
    if (errno != EINPROGRESS) return fail(NetError("connect to " + addr, errno));
    auto ready = WaitFd(fd, POLLOUT, deadline);
    if (!ready.ok()) return fail(ready.status());
    if (*ready == WaitResult::kTimedOut) {
      return fail(Unavailable("connect to " + addr + " timed out after " + std::to_string(timeout_ms) + " ms"));
    }
    int err = 0;
    socklen_t len = sizeof(err);
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) return fail(NetError("connect to " + addr, err));
  }
  return fd;
}

}  // namespace

Result<int> ConnectTcp(const std::string& host_port, Clock::time_point deadline, int timeout_ms) {
  CONTINUUM_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(host_port));
  if (hp.host.empty()) return InvalidArgument("invalid address '" + host_port + "': no host");
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(hp.host.c_str(), hp.port.c_str(), &hints, &res);
  if (rc != 0) {
    std::string why = rc == EAI_SYSTEM ? std::string(strerror(errno)) : gai_strerror(rc);
    return Unavailable("resolve " + hp.host + ": " + why);
  }
  Status last = Unavailable("resolve " + hp.host + ": no addresses");
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    auto fd = ConnectOne(ai, host_port, deadline, timeout_ms);
    if (fd.ok()) {
      ::freeaddrinfo(res);
      return fd;
    }
    last = fd.status();
    if (RemainingMs(deadline) == 0) break;
  }
  ::freeaddrinfo(res);
  return last;
}

}  // namespace continuum::net
