// Covers src/api/control_server.cc and src/api/control_client.cc over real
// Unix sockets in a temporary directory.
#include "continuum/api/control_server.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <future>
#include <thread>

#include "continuum/api/control_client.h"

namespace continuum::api {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

int Connect(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  path.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Reads until EOF or timeout.
std::string ReadAll(int fd, std::chrono::milliseconds timeout) {
  std::string out;
  char buf[4096];
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// Sends raw bytes and returns the raw answer, for what the client never sends.
std::string RawExchange(const std::string& path, std::string_view request) {
  int fd = Connect(path);
  if (fd < 0) return "connect failed";
  (void)!::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string out = ReadAll(fd, 5s);
  ::close(fd);
  return out;
}

std::string StatusLine(const std::string& raw) { return raw.substr(0, raw.find("\r\n")); }

class ControlServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cnt-api-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/ctl.sock";
    router_.Get("/v1/volumes/{name}/up", [](const Request& r) {
      return JsonResponse({{"name", r.path_params.at("name")}, {"query", r.query}});
    });
    router_.Get("/v1/volumes/import", [](const Request&) { return JsonResponse("literal"); });
    router_.Post("/echo", [](const Request& r) {
      auto json = r.Json();
      return json.ok() ? JsonResponse(*json) : ErrorResponse(json.status());
    });
    router_.Get("/fail/{code}", [](const Request& r) {
      auto code = StatusCodeFromName(r.path_params.at("code"));
      return ErrorResponse(Status(code, "boom: " + r.path_params.at("code")));
    });
    router_.Get("/throw", [](const Request&) -> Response { throw std::runtime_error("kaboom"); });
  }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  void StartServer(ControlServerOptions o = {}) {
    if (o.socket_path.empty()) o.socket_path = path_;
    auto s = ControlServer::Start(o, router_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(s).value();
  }
  ControlClient Client() const { return ControlClient::ForSocket(path_); }

  std::string dir_, path_;
  Router router_;
  std::unique_ptr<ControlServer> server_;
};

TEST_F(ControlServerTest, RoutesWithParamsAndQueryStrings) {
  StartServer();
  auto r = Client().Call("GET", "/v1/volumes/db%20one/up?force=1&mode=a+b&x=%2F", nullptr, 10);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)["name"], "db one");
  EXPECT_EQ((*r)["query"], (nlohmann::json{{"force", "1"}, {"mode", "a b"}, {"x", "/"}}));
  auto lit = Client().Call("GET", "/v1/volumes/import/up", nullptr, 10);
  EXPECT_EQ((*lit)["name"], "import");
  EXPECT_EQ(*Client().Call("GET", "/v1/volumes/import", nullptr, 10), "literal");
}

TEST_F(ControlServerTest, JsonRoundTripAndInvalidJson) {
  StartServer();
  nlohmann::json body = {{"a", {1, 2.5, "x\"y"}}, {"u", "h\u00e9llo"}, {"n", nullptr}};
  auto r = Client().Call("POST", "/echo", &body, 10);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, body);
  std::string raw = RawExchange(path_, "POST /echo HTTP/1.1\r\nContent-Length: 4\r\n\r\n{bad");
  EXPECT_EQ(StatusLine(raw), "HTTP/1.1 400 Bad Request");
  EXPECT_NE(raw.find("\"code\":\"invalid_argument\""), std::string::npos);
  std::string deep(1000, '[');
  raw = RawExchange(path_, "POST /echo HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + deep);
  EXPECT_NE(raw.find("nests deeper"), std::string::npos);
}

TEST_F(ControlServerTest, ErrorCodesMapBothWays) {
  StartServer();
  for (StatusCode code : {StatusCode::kInvalidArgument, StatusCode::kNotFound,
                          StatusCode::kAlreadyExists, StatusCode::kFailedPrecondition,
                          StatusCode::kOutOfRange, StatusCode::kResourceExhausted,
                          StatusCode::kDataLoss, StatusCode::kUnavailable, StatusCode::kIoError,
                          StatusCode::kInternal}) {
    std::string name(StatusCodeName(code));
    auto r = Client().Call("GET", "/fail/" + name, nullptr, 10);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), code) << name;
    EXPECT_EQ(r.status().message(), "boom: " + name);
    std::string raw = RawExchange(path_, "GET /fail/" + name + " HTTP/1.1\r\n\r\n");
    EXPECT_EQ(StatusLine(raw).substr(9, 3), std::to_string(HttpStatusFor(code))) << name;
  }
  EXPECT_EQ(HttpStatusFor(StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusFor(StatusCode::kResourceExhausted), 507);
  EXPECT_EQ(StatusCodeFromName("kNotFound"), StatusCode::kNotFound);
  EXPECT_EQ(StatusCodeFromName("FailedPrecondition"), StatusCode::kFailedPrecondition);
  EXPECT_EQ(StatusCodeFromName("bogus"), StatusCode::kInternal);
}

TEST_F(ControlServerTest, UnknownRouteWrongMethodAndFramingErrors) {
  ControlServerOptions o;
  o.max_body = 1024;
  StartServer(o);
  auto r = Client().Call("GET", "/nope", nullptr, 10);
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(StatusLine(RawExchange(path_, "GET /nope HTTP/1.1\r\n\r\n")), "HTTP/1.1 404 Not Found");
  r = Client().Call("DELETE", "/echo", nullptr, 10);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  std::string raw = RawExchange(path_, "GET /echo HTTP/1.1\r\n\r\n");
  EXPECT_EQ(StatusLine(raw), "HTTP/1.1 405 Method Not Allowed");
  nlohmann::json big = std::string(100000, 'x');
  r = Client().Call("POST", "/echo", &big, 10);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("exceeds the limit of 1024"), std::string::npos);
  raw = RawExchange(path_, "POST /echo HTTP/1.1\r\nContent-Length: 5000\r\n\r\n");
  EXPECT_EQ(StatusLine(raw), "HTTP/1.1 413 Content Too Large");
  raw = RawExchange(path_, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
  EXPECT_EQ(StatusLine(raw), "HTTP/1.1 411 Length Required");
  raw = RawExchange(path_, "GET / HTTP/1.1\r\nX: " + std::string(70000, 'a') + "\r\n\r\n");
  EXPECT_EQ(StatusLine(raw), "HTTP/1.1 431 Request Header Fields Too Large");
  EXPECT_EQ(StatusLine(RawExchange(path_, "hello\r\n\r\n")), "HTTP/1.1 400 Bad Request");
}

TEST_F(ControlServerTest, HandlerExceptionBecomes500) {
  StartServer();
  auto r = Client().Call("GET", "/throw", nullptr, 10);
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
  EXPECT_NE(r.status().message().find("kaboom"), std::string::npos);
  EXPECT_TRUE(Client().Call("GET", "/v1/volumes/a/up", nullptr, 10).ok());
}

TEST_F(ControlServerTest, SocketModeParentDirAndRemovalOnStop) {
  path_ = dir_ + "/run/continuum/ctl.sock";
  StartServer();
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  ASSERT_EQ(::stat((dir_ + "/run/continuum").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
  server_->Stop();
  EXPECT_FALSE(std::filesystem::exists(path_));
  auto r = Client().Call("GET", "/v1/volumes/a/up", nullptr, 10);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(r.status().message(), "no continuum daemon at " + path_);
}

TEST_F(ControlServerTest, StaleSocketIsReplacedLiveOneRefused) {
  int stale = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  path_.copy(addr.sun_path, path_.size());
  ASSERT_EQ(::bind(stale, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ::close(stale);  // the file stays, as after a crash
  StartServer();
  EXPECT_TRUE(Client().Call("GET", "/v1/volumes/a/up", nullptr, 10).ok());

  auto second = ControlServer::Start({.socket_path = path_}, router_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(second.status().message(), "another daemon is serving " + path_);
  EXPECT_TRUE(Client().Call("GET", "/v1/volumes/a/up", nullptr, 10).ok());

  std::string file = dir_ + "/plain";
  ::close(::creat(file.c_str(), 0600));
  auto third = ControlServer::Start({.socket_path = file}, router_);
  EXPECT_EQ(third.status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(ControlServerTest, SlowHandlerDoesNotBlockOtherClients) {
  auto release = std::make_shared<std::promise<void>>();
  auto entered = std::make_shared<std::promise<void>>();
  router_.Get("/slow", [release, entered, f = release->get_future().share()](const Request&) {
    entered->set_value();
    f.wait_for(10s);
    return JsonResponse("slow done");
  });
  StartServer();
  auto slow = std::async(std::launch::async,
                         [&] { return Client().Call("GET", "/slow", nullptr, 20); });
  entered->get_future().wait();
  auto fast = Client().Call("GET", "/v1/volumes/a/up", nullptr, 5);
  EXPECT_TRUE(fast.ok());
  EXPECT_EQ(slow.wait_for(0s), std::future_status::timeout);  // still running
  release->set_value();
  EXPECT_EQ(*slow.get(), "slow done");
}

TEST_F(ControlServerTest, SilentClientTimesOutAndDoesNotBlockStop) {
  ControlServerOptions o;
  o.read_timeout = 200ms;
  StartServer(o);
  int fd = Connect(path_);
  ASSERT_GE(fd, 0);
  auto start = Clock::now();
  EXPECT_EQ(StatusLine(ReadAll(fd, 5s)), "HTTP/1.1 408 Request Timeout");
  EXPECT_LT(Clock::now() - start, 3s);
  ::close(fd);
  server_.reset();

  StartServer();  // default 30 s read timeout
  fd = Connect(path_);
  ASSERT_GE(fd, 0);
  (void)!::send(fd, "GET /v1/vol", 11, MSG_NOSIGNAL);
  std::this_thread::sleep_for(50ms);
  start = Clock::now();
  server_->Stop();
  EXPECT_LT(Clock::now() - start, 1s);
  EXPECT_EQ(ReadAll(fd, 2s), "");  // closed without an answer
  ::close(fd);
}

TEST_F(ControlServerTest, ConnectionCapAnswers503) {
  StartServer({.max_connections = 1});
  int idle = Connect(path_);
  ASSERT_GE(idle, 0);
  std::this_thread::sleep_for(50ms);  // let the loop accept it
  auto r = Client().Call("GET", "/v1/volumes/a/up", nullptr, 5);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("too many"), std::string::npos);
  ::close(idle);
}

TEST_F(ControlServerTest, StopWaitsForRunningHandlerWithinBound) {
  auto entered = std::make_shared<std::promise<void>>();
  router_.Get("/sleep", [entered](const Request&) {
    entered->set_value();
    std::this_thread::sleep_for(300ms);
    return JsonResponse("slept");
  });
  StartServer();
  auto call = std::async(std::launch::async,
                         [&] { return Client().Call("GET", "/sleep", nullptr, 10); });
  entered->get_future().wait();
  server_->Stop();
  auto r = call.get();
  ASSERT_TRUE(r.ok()) << r.status().ToString();  // delivered before Stop returned
  EXPECT_EQ(*r, "slept");
}

TEST_F(ControlServerTest, StopAbandonsAStuckHandlerAfterTheBound) {
  auto release = std::make_shared<std::promise<void>>();
  auto entered = std::make_shared<std::promise<void>>();
  router_.Get("/stuck", [entered, f = release->get_future().share()](const Request&) {
    entered->set_value();
    f.wait_for(10s);
    return JsonResponse("late");
  });
  StartServer({.stop_timeout = 100ms});
  auto call = std::async(std::launch::async,
                         [&] { return Client().Call("GET", "/stuck", nullptr, 10); });
  entered->get_future().wait();
  auto start = Clock::now();
  server_.reset();  // the stuck handler's thread is detached, not joined
  EXPECT_LT(Clock::now() - start, 2s);
  release->set_value();
  auto r = call.get();  // the abandoned handler still answers
  EXPECT_TRUE(r.ok()) << r.status().ToString();
}

TEST_F(ControlServerTest, HandlerMayStopTheServer) {
  router_.Post("/shutdown", [this](const Request&) {
    server_->Stop();
    return JsonResponse("bye");
  });
  StartServer();
  auto r = Client().Call("POST", "/shutdown", nullptr, 10);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "bye");
  EXPECT_FALSE(std::filesystem::exists(path_));
}

TEST_F(ControlServerTest, ConcurrentClients) {
  StartServer({.threads = 4});
  std::vector<std::future<int>> results;
  for (int t = 0; t < 8; ++t) {
    results.push_back(std::async(std::launch::async, [this, t] {
      int ok = 0;
      for (int i = 0; i < 25; ++i) {
        nlohmann::json body = {{"t", t}, {"i", i}};
        auto r = Client().Call("POST", "/echo", &body, 10);
        ok += r.ok() && *r == body;
      }
      return ok;
    }));
  }
  for (auto& f : results) EXPECT_EQ(f.get(), 25);
}

constexpr char kChildSocketEnv[] = "CONTINUUM_API_TEST_CHILD_SOCKET";
constexpr char kChildGroupsEnv[] = "CONTINUUM_API_TEST_CHILD_GROUPS";

// Runs a client call as uid/gid 65534 (plus `groups`) in a fresh process:
// fork then exec this binary at once, because a forked copy of a
// multithreaded process may hang on a lock some other thread held (seen with
// the ASan allocator). Returns the child's exit code (see CallAsChild).
int CallAsNobody(const std::string& socket, const std::vector<gid_t>& groups) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  env.push_back(std::string(kChildSocketEnv) + "=" + socket);
  std::string list;
  for (gid_t g : groups) list += std::to_string(g) + ",";
  env.push_back(std::string(kChildGroupsEnv) + "=" + list);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string filter = "--gtest_filter=ControlClientChild.DISABLED_CallAsChild";
  std::string also = "--gtest_also_run_disabled_tests";
  char exe[] = "/proc/self/exe";
  char* argv[] = {exe, filter.data(), also.data(), nullptr};
  pid_t pid = ::fork();
  if (pid == 0) {  // only async-signal-safe calls until exec
    int null = ::open("/dev/null", O_WRONLY);
    if (null >= 0) ::dup2(null, 1);
    ::execve(exe, argv, envp.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

// The child half of CallAsNobody; disabled so it runs only there. Exit code:
// 0 call succeeded, 10 refused with 403 (permission denied), 11 other error,
// 2 could not drop privileges.
TEST(ControlClientChild, DISABLED_CallAsChild) {
  const char* socket = std::getenv(kChildSocketEnv);
  const char* groups_env = std::getenv(kChildGroupsEnv);
  if (socket == nullptr || groups_env == nullptr) GTEST_SKIP() << "only as CallAsNobody's child";
  std::vector<gid_t> groups;
  for (std::string_view g = groups_env; !g.empty(); g.remove_prefix(g.find(',') + 1)) {
    groups.push_back(static_cast<gid_t>(std::stoul(std::string(g.substr(0, g.find(','))))));
  }
  if (::setgroups(groups.size(), groups.data()) != 0 || ::setgid(65534) != 0 ||
      ::setuid(65534) != 0) {
    ::_exit(2);
  }
  auto r = ControlClient::ForSocket(socket).Call("GET", "/v1/volumes/a/up", nullptr, 5);
  if (r.ok()) ::_exit(0);
  bool refused = r.status().code() == StatusCode::kFailedPrecondition &&
                 r.status().message().rfind("permission denied: uid 65534", 0) == 0;
  ::_exit(refused ? 10 : 11);
}

TEST_F(ControlServerTest, PeerCredentialsDecideAccess) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch uid";
  StartServer();
  // Open the file modes so that only the SO_PEERCRED check stands in the way.
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(path_.c_str(), 0666), 0);
  EXPECT_EQ(CallAsNobody(path_, {}), 10);
}

TEST_F(ControlServerTest, GroupMembersMayConnect) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch uid";
  group* users = ::getgrnam("users");
  if (users == nullptr) GTEST_SKIP() << "no group 'users'";
  gid_t gid = users->gr_gid;
  StartServer({.group = "users"});
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, gid);
  EXPECT_EQ(CallAsNobody(path_, {gid}), 0);
  EXPECT_EQ(CallAsNobody(path_, {}), 11);  // file mode 0660 keeps it out (EACCES)
  ASSERT_EQ(::chmod(path_.c_str(), 0666), 0);
  EXPECT_EQ(CallAsNobody(path_, {}), 10);  // and so does SO_PEERCRED
}

// A fake daemon that answers every connection with fixed bytes.
void ServeOnce(const std::string& path, std::string answer, std::promise<void>& ready) {
  int l = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  path.copy(addr.sun_path, path.size());
  ::bind(l, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::listen(l, 1);
  ready.set_value();
  int c = ::accept(l, nullptr, nullptr);
  char buf[4096];
  (void)!::recv(c, buf, sizeof(buf), 0);
  (void)!::send(c, answer.data(), answer.size(), MSG_NOSIGNAL);
  ::close(c);
  ::close(l);
  ::unlink(path.c_str());
}

TEST_F(ControlServerTest, ClientRejectsMalformedResponses) {
  for (std::string answer :
       {"garbage\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{x}",
        "HTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\nno", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}"}) {
    std::promise<void> ready;
    std::thread fake(ServeOnce, path_, answer, std::ref(ready));
    ready.get_future().wait();
    auto r = Client().Call("GET", "/x", nullptr, 5);
    fake.join();
    ASSERT_FALSE(r.ok()) << answer;
    EXPECT_EQ(r.status().code(), StatusCode::kInternal) << answer;
    EXPECT_NE(r.status().message().find(path_), std::string::npos) << r.status().message();
  }
}

}  // namespace
}  // namespace continuum::api
