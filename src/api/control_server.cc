#include "continuum/api/control_server.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <list>
#include <mutex>
#include <optional>
#include <sstream>
#include <system_error>

#include "api/http_message.h"
#include "continuum/common/log.h"

namespace continuum::api {
namespace {

using Clock = std::chrono::steady_clock;

// A connection the event loop is still reading a request from.
struct Conn {
  int fd;
  RequestParser parser;
  Clock::time_point deadline;
  PeerCredentials peer;
  bool allowed;
};

// Writes everything before the deadline; false if the peer stalls or leaves.
bool WriteAll(int fd, std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) return false;
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(left)) < 0 && errno != EINTR) return false;
  }
  return true;
}

// Best effort, never blocks: used by the event loop for short error answers
// into a fresh socket buffer, which always has room for them.
void SendNow(int fd, const Response& response) {
  std::string wire = SerializeResponse(response);
  if (::send(fd, wire.data(), wire.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
    Status::Ok().IgnoreError();  // the peer is gone or stuck; we close either way
  }
}

Response Forbidden(const PeerCredentials& peer, const std::string& group) {
  std::string who = fmt::format("uid {} (pid {})", peer.uid, peer.pid);
  std::string msg = group.empty()
                        ? fmt::format("permission denied: {} is neither root nor the daemon's user", who)
                        : fmt::format("permission denied: {} is not root, the daemon's user or in group {}",
                                      who, group);
  return ErrorWithHttpStatus(403, StatusCode::kFailedPrecondition, std::move(msg));
}

PeerCredentials PeerOf(int fd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  PeerCredentials peer;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    peer.pid = cred.pid;
    peer.uid = cred.uid;
    peer.gid = cred.gid;
  }
  return peer;  // on failure uid stays -1, which is never allowed
}

// Supplementary groups are not in SO_PEERCRED; /proc has them. The pid may
// have exited (or been reused) by now: then we simply deny.
bool ProcessInGroup(pid_t pid, gid_t gid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Groups:", 0) != 0) continue;
    std::istringstream groups(line.substr(7));
    unsigned long g;
    while (groups >> g) {
      if (g == gid) return true;
    }
    return false;
  }
  return false;
}

bool PeerAllowed(const PeerCredentials& peer, uid_t own_uid, std::optional<gid_t> group) {
  if (peer.pid <= 0 || peer.uid == static_cast<uid_t>(-1)) return false;
  if (peer.uid == 0 || peer.uid == own_uid) return true;
  if (!group) return false;
  return peer.gid == *group || ProcessInGroup(peer.pid, *group);
}

Result<gid_t> LookupGroup(const std::string& name) {
  group grp{};
  group* found = nullptr;
  std::vector<char> buf(16 << 10);
  int rc = ::getgrnam_r(name.c_str(), &grp, buf.data(), buf.size(), &found);
  if (rc != 0) return PosixError("look up group " + name, rc);
  if (found == nullptr) return InvalidArgument("unknown group " + name);
  return grp.gr_gid;
}

Status MakeParentDirs(const std::string& path) {
  for (size_t slash = path.find('/', 1); slash != std::string::npos;
       slash = path.find('/', slash + 1)) {
    std::string dir = path.substr(0, slash);
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return PosixError("create directory " + dir, errno);
    }
  }
  return Status::Ok();
}

// A socket file nobody answers on is left over from a crash: remove it. One
// that answers (or whose backlog is full) belongs to a live daemon.
Status RemoveStaleSocket(const std::string& path, const sockaddr_un& addr,
                         spdlog::logger& log) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return PosixError("stat " + path, errno);
  }
  if (!S_ISSOCK(st.st_mode)) {
    return FailedPrecondition(fmt::format("{} exists and is not a socket", path));
  }
  int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (probe < 0) return PosixError("socket", errno);
  int rc = ::connect(probe, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  int err = errno;
  ::close(probe);
  if (rc == 0 || err == EAGAIN || err == EINPROGRESS) {
    return AlreadyExists(fmt::format("another daemon is serving {}", path));
  }
  if (err != ECONNREFUSED) return PosixError("probe socket " + path, err);
  log.info("removing stale control socket {}", path);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return PosixError("remove stale socket " + path, errno);
  }
  return Status::Ok();
}

Result<int> BindListener(const std::string& path, std::optional<gid_t> group,
                         spdlog::logger& log) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return InvalidArgument(fmt::format("control socket path must be 1 to {} bytes: '{}'",
                                       sizeof(addr.sun_path) - 1, path));
  }
  path.copy(addr.sun_path, path.size());
  CONTINUUM_RETURN_IF_ERROR(MakeParentDirs(path));
  CONTINUUM_RETURN_IF_ERROR(RemoveStaleSocket(path, addr, log));
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return PosixError("socket", errno);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    ::close(fd);
    // Lost a race with another daemon starting at the same moment.
    if (err == EADDRINUSE) return AlreadyExists(fmt::format("another daemon is serving {}", path));
    return PosixError("bind " + path, err);
  }
  // Until chmod the socket has umask permissions, which deny group/other
  // write (connect) under any sane umask, and SO_PEERCRED checks anyway.
  Status st = Status::Ok();
  if (::chmod(path.c_str(), 0660) != 0) st = PosixError("chmod " + path, errno);
  if (st.ok() && group && ::chown(path.c_str(), static_cast<uid_t>(-1), *group) != 0) {
    st = PosixError("chown " + path, errno);
  }
  if (st.ok() && ::listen(fd, 128) != 0) st = PosixError("listen " + path, errno);
  if (!st.ok()) {
    ::close(fd);
    ::unlink(path.c_str());
    return st;
  }
  return fd;
}

// The Shared a handler thread serves, so Stop can tell it runs in a handler.
thread_local const void* tls_serving = nullptr;

}  // namespace

// State the handler threads share with the server. Held by shared_ptr so a
// handler that outlives Stop's bound can be abandoned (detached) safely.
struct ControlServer::Shared {
  struct Job {
    int fd;
    Request request;
  };

  Router router;
  std::shared_ptr<spdlog::logger> log;
  std::chrono::milliseconds io_timeout{0};
  uid_t own_uid = 0;
  std::optional<gid_t> group_gid;
  HttpLimits limits;
  // Connections open anywhere (event loop, queue, handler); bounds fds.
  std::atomic<int> open_connections{0};

  std::mutex mu;
  std::condition_variable work_cv;  // a job was queued or stopping was set
  std::condition_variable idle_cv;  // running dropped
  std::deque<Job> queue;            // GUARDED_BY(mu)
  int running = 0;                  // GUARDED_BY(mu)
  bool stopping = false;            // GUARDED_BY(mu)

  void CloseConn(int fd) {
    ::close(fd);
    open_connections.fetch_sub(1);
  }

  // Handler threads: run one request, write the response, close.
  static void Worker(std::shared_ptr<Shared> self) {
    tls_serving = self.get();
    while (true) {
      Job job;
      {
        std::unique_lock lock(self->mu);
        self->work_cv.wait(lock, [&] { return self->stopping || !self->queue.empty(); });
        if (self->queue.empty()) return;
        job = std::move(self->queue.front());
        self->queue.pop_front();
        ++self->running;
      }
      self->Serve(job);
      std::lock_guard lock(self->mu);
      --self->running;
      self->idle_cv.notify_all();
    }
  }

  void Serve(Job& job) {
    auto start = Clock::now();
    const Request& req = job.request;
    std::string wire;
    int status = 500;
    // The server boundary: nothing a handler throws escapes into the thread.
    try {
      Response response = router.Dispatch(job.request);
      status = response.status;
      wire = SerializeResponse(response);
    } catch (const std::exception& e) {
      log->error("handler for {} {} threw: {}", req.method, req.path, e.what());
      wire = SerializeResponse(ErrorResponse(
          Internal(fmt::format("handler for {} {} failed: {}", req.method, req.path, e.what()))));
    } catch (...) {
      log->error("handler for {} {} threw a non-standard exception", req.method, req.path);
      wire = SerializeResponse(ErrorResponse(
          Internal(fmt::format("handler for {} {} failed", req.method, req.path))));
    }
    if (!WriteAll(job.fd, wire, Clock::now() + io_timeout)) {
      log->warn("could not deliver response to {} {} (pid {})", req.method, req.path, req.peer.pid);
    }
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
    log->debug("{} {} -> {} in {} ms (uid {} pid {})", req.method, req.path, status, ms,
               req.peer.uid, req.peer.pid);
    CloseConn(job.fd);
  }
};

ControlServer::ControlServer(ControlServerOptions options, std::shared_ptr<Shared> shared)
    : options_(std::move(options)), shared_(std::move(shared)) {}

ControlServer::~ControlServer() { Stop(); }

Result<std::unique_ptr<ControlServer>> ControlServer::Start(const ControlServerOptions& options,
                                                            Router router) {
  const std::string& path = options.socket_path;
  if (options.threads < 1 || options.max_connections < 1) {
    return InvalidArgument(fmt::format("control server for {} needs threads and connections >= 1",
                                       path));
  }
  auto shared = std::make_shared<Shared>();
  shared->router = std::move(router);
  shared->log = Logger("api");
  shared->io_timeout = options.read_timeout;
  shared->own_uid = ::geteuid();
  shared->limits.max_body = options.max_body;
  if (!options.group.empty()) {
    CONTINUUM_ASSIGN_OR_RETURN(shared->group_gid, LookupGroup(options.group));
  }
  CONTINUUM_ASSIGN_OR_RETURN(int fd, BindListener(path, shared->group_gid, *shared->log));

  std::unique_ptr<ControlServer> server(new ControlServer(options, shared));
  server->listen_fd_ = fd;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    server->socket_dev_ = st.st_dev;
    server->socket_ino_ = st.st_ino;
  }
  server->wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (server->wake_fd_ < 0) {
    Status st_err = PosixError("eventfd for control server " + path, errno);
    server->Stop();
    return st_err;
  }
  try {
    for (int i = 0; i < options.threads; ++i) server->workers_.emplace_back(Shared::Worker, shared);
    server->loop_thread_ = std::thread([s = server.get()] { s->EventLoop(); });
  } catch (const std::system_error& e) {
    server->Stop();
    return ResourceExhausted(fmt::format("start control server threads for {}: {}", path, e.what()));
  }
  shared->log->info("serving control api on {}", path);
  return server;
}

void ControlServer::Stop() {
  if (stopped_.exchange(true)) return;
  if (loop_thread_.joinable()) {
    uint64_t one = 1;
    // The loop polls wake_fd_; a full counter (impossible here) would still wake it.
    if (::write(wake_fd_, &one, sizeof(one)) < 0) shared_->log->warn("wake control loop failed");
    loop_thread_.join();
  }
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
  // Remove the socket only if it is still ours: a successor daemon may have
  // replaced it after declaring ours stale.
  struct stat st {};
  if (socket_ino_ != 0 && ::stat(options_.socket_path.c_str(), &st) == 0 &&
      st.st_dev == socket_dev_ && st.st_ino == socket_ino_) {
    ::unlink(options_.socket_path.c_str());
  }

  std::deque<Shared::Job> abandoned;
  {
    std::lock_guard lock(shared_->mu);
    shared_->stopping = true;
    abandoned.swap(shared_->queue);
  }
  shared_->work_cv.notify_all();
  for (auto& job : abandoned) {
    SendNow(job.fd, ErrorWithHttpStatus(503, StatusCode::kUnavailable, "daemon is shutting down"));
    shared_->CloseConn(job.fd);
  }

  // Stop may run inside a handler (a shutdown endpoint): do not wait for or
  // join the calling thread; it exits once its handler returns.
  const int self = tls_serving == shared_.get() ? 1 : 0;
  bool idle;
  {
    std::unique_lock lock(shared_->mu);
    idle = shared_->idle_cv.wait_for(lock, options_.stop_timeout,
                                     [&] { return shared_->running <= self; });
  }
  for (auto& t : workers_) {
    if (idle && t.get_id() != std::this_thread::get_id()) {
      t.join();
    } else {
      t.detach();  // Shared outlives us; the handler finishes on its own
    }
  }
  workers_.clear();
  if (!idle) {
    shared_->log->error("stopped control server on {} with handlers still running after {} ms",
                        options_.socket_path, options_.stop_timeout.count());
  }
  if (wake_fd_ >= 0) ::close(wake_fd_);
  wake_fd_ = -1;
}

// Reads requests from every open connection; hands complete ones to the
// handler threads. Owns each Conn until then, so a silent client costs one fd
// and a deadline, never a thread.
void ControlServer::EventLoop() {
  Shared& sh = *shared_;
  std::list<Conn> conns;
  std::vector<pollfd> fds;
  std::vector<std::list<Conn>::iterator> index;
  char buf[64 << 10];
  while (true) {
    fds.assign({{wake_fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}});
    index.clear();
    auto now = Clock::now();
    int timeout_ms = -1;
    for (auto it = conns.begin(); it != conns.end(); ++it) {
      fds.push_back({it->fd, POLLIN, 0});
      index.push_back(it);
      auto left = std::chrono::ceil<std::chrono::milliseconds>(it->deadline - now).count();
      left = std::max<int64_t>(left, 0);
      if (timeout_ms < 0 || left < timeout_ms) timeout_ms = static_cast<int>(left);
    }
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0) {
      if (errno == EINTR) continue;
      sh.log->error("control server poll failed: {}", PosixError("poll", errno).message());
      break;
    }
    if (fds[0].revents) break;  // Stop
    now = Clock::now();

    for (size_t i = 0; i < index.size(); ++i) {
      Conn& c = *index[i];
      bool done = false;
      if (fds[i + 2].revents) {
        ssize_t n = ::recv(c.fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
          done = true;  // peer went away; nobody to answer
        } else if (n > 0) {
          auto state = c.parser.Feed(std::string_view(buf, static_cast<size_t>(n)));
          if (state != RequestParser::State::kNeedMore && !c.allowed) {
            SendNow(c.fd, Forbidden(c.peer, options_.group));
            done = true;
          } else if (state == RequestParser::State::kError) {
            SendNow(c.fd, ErrorWithHttpStatus(c.parser.error_status(),
                                              StatusCode::kInvalidArgument,
                                              c.parser.error_message()));
            done = true;
          } else if (state == RequestParser::State::kComplete) {
            Shared::Job job{c.fd, std::move(c.parser.request())};
            job.request.peer = c.peer;
            {
              std::lock_guard lock(sh.mu);
              sh.queue.push_back(std::move(job));
            }
            sh.work_cv.notify_one();
            conns.erase(index[i]);  // the handler thread owns the fd now
            continue;
          }
        }
      }
      if (!done && now >= c.deadline) {
        SendNow(c.fd, ErrorWithHttpStatus(408, StatusCode::kUnavailable,
                                          "no complete request within the read timeout"));
        done = true;
      }
      if (done) {
        sh.CloseConn(c.fd);
        conns.erase(index[i]);
      }
    }

    if (fds[1].revents) {
      while (true) {
        int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
          if (errno == EINTR || errno == ECONNABORTED) continue;
          if (errno != EAGAIN) {
            sh.log->warn("accept on {}: {}", options_.socket_path,
                         PosixError("accept", errno).message());
            // Out of fds: back off so the readable listener does not spin.
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
          }
          break;
        }
        if (sh.open_connections.fetch_add(1) >= options_.max_connections) {
          SendNow(fd, ErrorWithHttpStatus(503, StatusCode::kUnavailable,
                                          "too many control connections; retry"));
          sh.CloseConn(fd);
          continue;
        }
        PeerCredentials peer = PeerOf(fd);
        bool allowed = PeerAllowed(peer, sh.own_uid, sh.group_gid);
        if (!allowed) {
          sh.log->warn("refusing control connection from uid {} pid {}", peer.uid, peer.pid);
        }
        HttpLimits limits = sh.limits;
        if (!allowed) limits.max_body = 0;  // read only the head before refusing
        conns.push_back(Conn{fd, RequestParser(limits), now + options_.read_timeout, peer, allowed});
      }
    }
  }
  for (Conn& c : conns) sh.CloseConn(c.fd);
}

}  // namespace continuum::api
