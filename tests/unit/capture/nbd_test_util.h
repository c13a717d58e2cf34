#pragma once

// Test helpers for the NBD server: a scratch directory, a subprocess runner
// that never leaves children behind, and a minimal hand-written NBD client
// (independent of src/capture/nbd_protocol so that the two cannot share a bug).

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

extern char** environ;

namespace continuum::capture::nbd_test {

// A fresh directory under /tmp (short, for sun_path), removed on destruction.
class ScratchDir {
 public:
  ScratchDir() {
    char templ[] = "/tmp/nbdtest.XXXXXX";
    path_ = ::mkdtemp(templ) ? templ : "";
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;   // -1 when killed or not started
  bool timed_out = false;
  std::string output;   // stdout and stderr, interleaved
};

// Runs argv[0] from PATH with stdin from /dev/null. The child gets its own
// process group, which is killed if it outlives `timeout_ms`; the child is
// always reaped before returning, so no test leaves processes behind.
inline CommandResult RunCommand(const std::vector<std::string>& argv, int timeout_ms = 120000) {
  CommandResult result;
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return result;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, args[0], &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(pipe_fds[1]);
  if (rc != 0) {
    ::close(pipe_fds[0]);
    result.output = "spawn " + argv[0] + ": " + std::strerror(rc);
    return result;
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  char buf[4096];
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      result.timed_out = true;
      break;
    }
    pollfd pfd{.fd = pipe_fds[0], .events = POLLIN, .revents = 0};
    int n = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    ssize_t got = ::read(pipe_fds[0], buf, sizeof(buf));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    result.output.append(buf, static_cast<size_t>(got));
  }
  ::close(pipe_fds[0]);
  if (result.timed_out) ::kill(-pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}

inline void Put16(std::vector<uint8_t>& b, uint16_t v) {
  b.push_back(v >> 8);
  b.push_back(v & 0xff);
}
inline void Put32(std::vector<uint8_t>& b, uint32_t v) {
  Put16(b, v >> 16);
  Put16(b, v & 0xffff);
}
inline void Put64(std::vector<uint8_t>& b, uint64_t v) {
  Put32(b, v >> 32);
  Put32(b, v & 0xffffffff);
}
inline uint64_t Get(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | p[i];
  return v;
}

// Minimal NBD client over a unix socket: just enough protocol to send what
// real clients never send (bad requests, pipelines, half a write).
class RawNbdClient {
 public:
  static constexpr uint64_t kOptMagic = 0x49484156454f5054ULL;
  static constexpr uint32_t kRequestMagic = 0x25609513;

  explicit RawNbdClient(const std::string& socket_path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    socket_path.copy(sun.sun_path, sizeof(sun.sun_path) - 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&sun), sizeof(sun)) != 0) Close();
    timeval tv{.tv_sec = 10, .tv_usec = 0};  // a test never hangs on a silent server
    if (fd_ >= 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~RawNbdClient() { Close(); }

  bool connected() const { return fd_ >= 0; }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  bool Send(const std::vector<uint8_t>& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  bool Recv(uint8_t* out, size_t length) {
    size_t done = 0;
    while (done < length) {
      ssize_t n = ::recv(fd_, out + done, length - done, 0);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  // True when the server closed the connection (EOF, not a timeout).
  bool SeesEof() {
    uint8_t byte;
    return ::recv(fd_, &byte, 1, 0) == 0;
  }

  // Handshake with NBD_OPT_GO. Returns the option reply type that ended it
  // (1 = ACK on success, an error type otherwise).
  uint32_t Go(const std::string& name) {
    uint8_t greeting[18];
    if (!Recv(greeting, sizeof(greeting))) return 0;
    std::vector<uint8_t> out;
    Put32(out, 3);  // FIXED_NEWSTYLE | NO_ZEROES
    Put64(out, kOptMagic);
    Put32(out, 7);  // NBD_OPT_GO
    Put32(out, static_cast<uint32_t>(4 + name.size() + 2));
    Put32(out, static_cast<uint32_t>(name.size()));
    out.insert(out.end(), name.begin(), name.end());
    Put16(out, 0);
    if (!Send(out)) return 0;
    while (true) {
      uint8_t header[20];
      if (!Recv(header, sizeof(header))) return 0;
      uint32_t type = static_cast<uint32_t>(Get(header + 12, 4));
      std::vector<uint8_t> data(Get(header + 16, 4));
      if (!Recv(data.data(), data.size())) return 0;
      if (type == 3 && data.size() >= 12 && Get(data.data(), 2) == 0) {
        size = Get(data.data() + 2, 8);
        flags = static_cast<uint16_t>(Get(data.data() + 10, 2));
      }
      if (type != 3) return type;
    }
  }

  bool SendRequest(uint16_t type, uint64_t cookie, uint64_t offset, uint32_t length, uint16_t cmd_flags = 0,
                   const std::vector<uint8_t>& payload = {}) {
    std::vector<uint8_t> out;
    Put32(out, kRequestMagic);
    Put16(out, cmd_flags);
    Put16(out, type);
    Put64(out, cookie);
    Put64(out, offset);
    Put32(out, length);
    out.insert(out.end(), payload.begin(), payload.end());
    return Send(out);
  }

  struct Reply {
    bool ok = false;  // a well-formed simple reply arrived
    uint32_t error = 0;
    uint64_t cookie = 0;
  };
  // Reads one simple reply; `data_length` bytes follow it when error == 0.
  Reply ReadReply(std::vector<uint8_t>* data = nullptr, size_t data_length = 0) {
    Reply reply;
    uint8_t header[16];
    if (!Recv(header, sizeof(header)) || Get(header, 4) != 0x67446698) return reply;
    reply.error = static_cast<uint32_t>(Get(header + 4, 4));
    reply.cookie = Get(header + 8, 8);
    reply.ok = true;
    if (reply.error == 0 && data_length > 0) {
      std::vector<uint8_t> sink;
      auto* out = data ? data : &sink;
      out->resize(data_length);
      reply.ok = Recv(out->data(), data_length);
    }
    return reply;
  }

  uint64_t size = 0;
  uint16_t flags = 0;

 private:
  int fd_ = -1;
};

}  // namespace continuum::capture::nbd_test
