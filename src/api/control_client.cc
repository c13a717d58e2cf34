#include "continuum/api/control_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include "api/http_message.h"

namespace continuum::api {
namespace {

using Clock = std::chrono::steady_clock;

// The daemon's answers are small JSON documents; this only bounds a broken one.
constexpr HttpLimits kResponseLimits{.max_header_bytes = 64 << 10, .max_body = 256 << 20};

// Closes the fd on every return path.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() { ::close(fd_); }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

int MillisLeft(Clock::time_point deadline) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left, 1 << 30));
}

// Waits for `events` on fd; false when the deadline passed first.
bool WaitFor(int fd, short events, Clock::time_point deadline) {
  while (true) {
    int left = MillisLeft(deadline);
    if (left == 0) return false;
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, left);
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) return false;
  }
}

bool SafeInRequestLine(std::string_view s) {
  for (unsigned char c : s) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return !s.empty();
}

}  // namespace

StatusCode StatusCodeFromName(std::string_view name) {
  std::string snake;
  if (name.size() > 1 && name[0] == 'k' && name[1] >= 'A' && name[1] <= 'Z') name.remove_prefix(1);
  for (char c : name) {
    if (c >= 'A' && c <= 'Z') {
      if (!snake.empty()) snake.push_back('_');
      snake.push_back(static_cast<char>(c - 'A' + 'a'));
    } else {
      snake.push_back(c);
    }
  }
  for (int i = static_cast<int>(StatusCode::kOk); i <= static_cast<int>(StatusCode::kInternal); ++i) {
    auto code = static_cast<StatusCode>(i);
    if (StatusCodeName(code) == snake) return code;
  }
  return StatusCode::kInternal;
}

ControlClient ControlClient::ForSocket(std::string path) { return ControlClient(std::move(path)); }

Result<nlohmann::json> ControlClient::Call(std::string_view method, std::string_view path,
                                           const nlohmann::json* body, int timeout_s) const {
  const std::string& sock = socket_path_;
  if (!SafeInRequestLine(method) || !SafeInRequestLine(path) || path.front() != '/') {
    return InvalidArgument(fmt::format("invalid control request '{} {}'", method, path));
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (sock.empty() || sock.size() >= sizeof(addr.sun_path)) {
    return InvalidArgument(fmt::format("control socket path must be 1 to {} bytes: '{}'",
                                       sizeof(addr.sun_path) - 1, sock));
  }
  sock.copy(addr.sun_path, sock.size());
  auto deadline = Clock::now() + std::chrono::seconds(std::max(timeout_s, 1));

  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return PosixError("socket", errno);
  FdCloser closer(fd);
  // EAGAIN on a Unix socket means the daemon's accept backlog is full: a busy
  // daemon, not a missing one, so retry for a while.
  auto connect_deadline = std::min(deadline, Clock::now() + std::chrono::seconds(10));
  while (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    if (err == EINTR) continue;
    if (err == ENOENT || err == ECONNREFUSED || err == ENOTDIR) {
      return Unavailable(fmt::format("no continuum daemon at {}", sock));
    }
    if (err != EAGAIN) return PosixError("connect to continuum daemon at " + sock, err);
    if (Clock::now() >= connect_deadline) {
      return Unavailable(fmt::format("continuum daemon at {} is not accepting connections", sock));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  std::string wire = SerializeRequest(method, path, body ? DumpJson(*body) : std::string());
  std::string_view out = wire;
  auto timed_out = [&] {
    return Unavailable(
        fmt::format("no response from continuum daemon at {} within {} s", sock, timeout_s));
  };
  while (!out.empty()) {
    ssize_t n = ::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
    if (n > 0) {
      out.remove_prefix(static_cast<size_t>(n));
    } else if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      break;  // the daemon answered early (e.g. 413) and closed; read its answer
    } else if (n < 0 && errno == EAGAIN) {
      if (!WaitFor(fd, POLLOUT, deadline)) return timed_out();
    } else if (n < 0 && errno != EINTR) {
      return PosixError("send to continuum daemon at " + sock, errno);
    }
  }

  ResponseParser parser(kResponseLimits);
  char buf[64 << 10];
  while (parser.state() == ResponseParser::State::kNeedMore) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n > 0) {
      parser.Feed(std::string_view(buf, static_cast<size_t>(n)));
    } else if (n == 0 || errno == ECONNRESET) {
      parser.FinishAtEof();
    } else if (errno == EAGAIN) {
      if (!WaitFor(fd, POLLIN, deadline)) return timed_out();
    } else if (errno != EINTR) {
      return PosixError("receive from continuum daemon at " + sock, errno);
    }
  }
  if (parser.state() == ResponseParser::State::kError) {
    return Internal(
        fmt::format("malformed response from continuum daemon at {}: {}", sock, parser.error_message()));
  }

  const std::string& text = parser.body();
  int status = parser.status();
  if (status >= 200 && status < 300) {
    if (text.find_first_not_of(" \t\r\n") == std::string::npos) return nlohmann::json();
    auto json = ParseJson(text, "response body");
    if (!json.ok()) {
      return Internal(fmt::format("malformed response from continuum daemon at {}: {}", sock,
                                  json.status().message()));
    }
    return json;
  }
  auto json = ParseJson(text, "error body");
  if (json.ok() && json->is_object()) {
    auto error = json->find("error");
    if (error != json->end() && error->is_object()) {
      auto code = error->find("code");
      auto message = error->find("message");
      if (code != error->end() && code->is_string() && message != error->end() &&
          message->is_string()) {
        StatusCode sc = StatusCodeFromName(code->get<std::string>());
        if (sc != StatusCode::kOk) return Status(sc, message->get<std::string>());
      }
    }
  }
  return Internal(fmt::format("malformed error response (http {}) from continuum daemon at {}",
                              status, sock));
}

}  // namespace continuum::api
