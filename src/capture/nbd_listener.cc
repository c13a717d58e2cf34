#include "capture/nbd_listener.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include <fmt/format.h>

namespace continuum::capture {
namespace {

constexpr int kBacklog = 128;

std::string FormatInet(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(ss);
    inet_ntop(AF_INET, &in.sin_addr, host, sizeof(host));
    return fmt::format("{}:{}", host, ntohs(in.sin_port));
  }
  const auto& in6 = reinterpret_cast<const sockaddr_in6&>(ss);
  inet_ntop(AF_INET6, &in6.sin6_addr, host, sizeof(host));
  return fmt::format("[{}]:{}", host, ntohs(in6.sin6_port));
}

Result<int> ListenUnix(const std::string& path) {
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(sun.sun_path)) {
    return InvalidArgument(fmt::format("nbd unix socket path '{}' must be 1 to {} bytes", path,
                                       sizeof(sun.sun_path) - 1));
  }
  path.copy(sun.sun_path, path.size());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return PosixError("create nbd socket " + path, errno);
  auto* addr = reinterpret_cast<const sockaddr*>(&sun);
  int rc = ::bind(fd, addr, sizeof(sun));
  if (rc != 0 && errno == EADDRINUSE) {
    // A socket file left by a crashed server is replaced; one that a live
    // server answers on, or anything that is not a socket, is not.
    struct stat st {};
    int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool live = probe >= 0 && ::connect(probe, addr, sizeof(sun)) == 0;
    if (probe >= 0) ::close(probe);
    if (live || ::lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) {
      ::close(fd);
      return Status(StatusCode::kAlreadyExists, "nbd socket path " + path + " is in use", EADDRINUSE);
    }
    ::unlink(path.c_str());
    rc = ::bind(fd, addr, sizeof(sun));
  }
  if (rc != 0) {
    int err = errno;
    ::close(fd);
    return PosixError("bind nbd socket " + path, err);
  }
  if (::listen(fd, kBacklog) != 0) {
    int err = errno;
    ::close(fd);
    return PosixError("listen on nbd socket " + path, err);
  }
  return fd;
}

Result<int> ListenTcp(const std::string& host, const std::string& port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* list = nullptr;
  int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &list);
  if (rc != 0) {
    return InvalidArgument(fmt::format("resolve nbd listen address {}:{}: {}", host, port, gai_strerror(rc)));
  }
  int last_errno = EADDRNOTAVAIL;
  for (addrinfo* ai = list; ai != nullptr; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      last_errno = errno;
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, kBacklog) == 0) {
      ::freeaddrinfo(list);
      return fd;
    }
    last_errno = errno;
    ::close(fd);
  }
  ::freeaddrinfo(list);
  return PosixError(fmt::format("listen on nbd address {}:{}", host, port), last_errno);
}

}  // namespace

NbdListener::NbdListener(int fd, int wake_fd, std::string address, std::string unix_path, bool tcp)
    : fd_(fd), wake_fd_(wake_fd), address_(std::move(address)), unix_path_(std::move(unix_path)), tcp_(tcp) {}

NbdListener::~NbdListener() {
  ::close(fd_);
  ::close(wake_fd_);
  if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
}

Result<std::unique_ptr<NbdListener>> NbdListener::Listen(const std::string& address) {
  constexpr std::string_view kUnixPrefix = "unix:";
  std::string unix_path;
  int fd = -1;
  if (address.starts_with(kUnixPrefix)) {
    unix_path = address.substr(kUnixPrefix.size());
    CONTINUUM_ASSIGN_OR_RETURN(fd, ListenUnix(unix_path));
  } else {
    size_t colon = address.rfind(':');
    std::string host = colon == std::string::npos ? "" : address.substr(0, colon);
    std::string port = colon == std::string::npos ? "" : address.substr(colon + 1);
    if (port.empty() || port.find_first_not_of("0123456789") != std::string::npos) {
      return InvalidArgument("nbd listen address '" + address + "' is neither unix:/path nor host:port");
    }
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    CONTINUUM_ASSIGN_OR_RETURN(fd, ListenTcp(host, port));
  }
  int wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd < 0) {
    int err = errno;
    ::close(fd);
    return PosixError("create eventfd for nbd listener " + address, err);
  }
  std::string bound = "unix:" + unix_path;
  if (unix_path.empty()) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    bound = FormatInet(ss);
  }
  return std::unique_ptr<NbdListener>(new NbdListener(fd, wake_fd, bound, unix_path, unix_path.empty()));
}

Result<NbdListener::Accepted> NbdListener::Accept() {
  while (true) {
    pollfd fds[2] = {{.fd = fd_, .events = POLLIN, .revents = 0}, {.fd = wake_fd_, .events = POLLIN, .revents = 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return PosixError("poll nbd listener " + address_, errno);
    }
    if (fds[1].revents != 0) return Unavailable("nbd listener " + address_ + " stopped");
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    int fd = ::accept4(fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      switch (errno) {
        case EINTR:
        case EAGAIN:
        case ECONNABORTED:
        case EPROTO:
          continue;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
          // Out of descriptors or memory: back off instead of spinning; the
          // client waits in the backlog.
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
          continue;
        default:
          return PosixError("accept on nbd listener " + address_, errno);
      }
    }
    if (!tcp_) return Accepted{.fd = fd, .peer = fmt::format("{}#{}", address_, fd)};
    int one = 1;
    // Replies are small and latency-bound; Nagle would hold them back.
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return Accepted{.fd = fd, .peer = FormatInet(ss)};
  }
}

void NbdListener::Wake() {
  uint64_t one = 1;
  // Deliberately ignored: the counter cannot overflow with one increment.
  (void)!::write(wake_fd_, &one, sizeof(one));
}

}  // namespace continuum::capture
