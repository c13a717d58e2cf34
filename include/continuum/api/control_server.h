#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "continuum/common/result.h"
#include "continuum/common/status.h"

namespace continuum::api {

// The control API of `continuum agent`: HTTP/1.1 + JSON over a Unix domain
// socket. Request, Response and Router are the vocabulary of handlers and live
// here with the server so an area registering routes needs one include.

// Credentials of the connecting process, from SO_PEERCRED at accept time.
struct PeerCredentials {
  pid_t pid = -1;
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
};

// One parsed request. Every string here came from a client: handlers validate
// it like any other untrusted input.
struct Request {
  std::string method;  // as sent, e.g. "GET"
  std::string target;  // raw request target, e.g. "/v1/volumes/a%20b/up?force=1"
  std::string path;    // target without the query, still percent-encoded
  std::map<std::string, std::string> path_params;  // "{name}" captures, decoded
  std::map<std::string, std::string> query;        // decoded; a repeated key keeps the last value
  std::map<std::string, std::string> headers;      // names lower case
  std::string body;
  PeerCredentials peer;

  // The body as JSON. An empty body, malformed JSON or nesting deeper than 128
  // levels is kInvalidArgument; never throws.
  Result<nlohmann::json> Json() const;
};

struct Response {
  int status = 200;
  nlohmann::json body;  // serialized as the response body; null is sent as "null"
};

using Handler = std::function<Response(const Request&)>;

// HTTP status for a StatusCode: InvalidArgument 400, NotFound 404,
// AlreadyExists/FailedPrecondition 409, OutOfRange 416, ResourceExhausted 507,
// Unavailable 503, DataLoss/IoError/Internal 500.
int HttpStatusFor(StatusCode code);
// {"error": {"code": StatusCodeName(code), "message": ...}} with HttpStatusFor.
Response ErrorResponse(const Status& status);
Response JsonResponse(nlohmann::json body, int status = 200);

// Maps (method, path pattern) to handlers. Patterns are literal segments and
// "{name}" segments that capture one non-empty path segment, e.g.
// "/v1/volumes/{name}/up". A path matching some pattern but no route with the
// request's method gets 405; no pattern at all gets 404.
// Thread-safety: Add is not thread-safe; Dispatch is const and may run
// concurrently once no more routes are added (the server never adds).
class Router {
 public:
  // Registering the same method and pattern again replaces the handler.
  void Add(std::string method, std::string pattern, Handler handler);
  void Get(std::string pattern, Handler h) { Add("GET", std::move(pattern), std::move(h)); }
  void Post(std::string pattern, Handler h) { Add("POST", std::move(pattern), std::move(h)); }
  void Put(std::string pattern, Handler h) { Add("PUT", std::move(pattern), std::move(h)); }
  void Delete(std::string pattern, Handler h) { Add("DELETE", std::move(pattern), std::move(h)); }

  // Fills request.path_params and runs the handler. Exceptions from the
  // handler propagate: the server turns them into 500.
  Response Dispatch(Request& request) const;

 private:
  struct Route {
    std::string method;
    std::string pattern;
    Handler handler;
  };
  std::vector<Route> routes_;
};

struct ControlServerOptions {
  std::string socket_path;
  // Optional: members of this group (primary or supplementary) may connect,
  // besides root and the daemon's own uid. The socket is chowned to it.
  std::string group;
  size_t max_body = 16 << 20;
  // Handler threads: this many requests run at once; more wait in a queue.
  int threads = 4;
  // A connection must deliver a whole request within this time, and take the
  // response within it, so a stuck client cannot hold resources.
  std::chrono::milliseconds read_timeout{30'000};
  // How long Stop waits for running handlers before abandoning them.
  std::chrono::milliseconds stop_timeout{10'000};
  // Connections open at once (reading, queued or running); more get 503.
  int max_connections = 64;
};

// Serves a Router on a Unix socket. One request per connection ("Connection:
// close"), Content-Length bodies only. Connections are read by one event-loop
// thread, so idle or slow clients hold no handler thread; complete requests
// go to `threads` handler threads.
// Thread-safety: handlers run concurrently on the handler threads. Stop may be
// called from any one thread, including a handler (it then does not wait for
// that handler); the destructor must not race with a Stop in progress.
class ControlServer {
 public:
  // Binds options.socket_path (parent created 0755 if missing, socket 0660),
  // replacing a stale socket that nobody answers on. kAlreadyExists if another
  // server answers there.
  static Result<std::unique_ptr<ControlServer>> Start(const ControlServerOptions& options,
                                                      Router router);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Closes the listener and idle connections, waits up to stop_timeout for
  // running handlers, removes the socket file (if it is still ours).
  // Idempotent.
  void Stop();

  const std::string& socket_path() const { return options_.socket_path; }

 private:
  struct Shared;
  ControlServer(ControlServerOptions options, std::shared_ptr<Shared> shared);
  void EventLoop();

  ControlServerOptions options_;
  std::shared_ptr<Shared> shared_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: wakes the event loop for Stop
  dev_t socket_dev_ = 0;
  ino_t socket_ino_ = 0;
  std::thread loop_thread_;
  std::vector<std::thread> workers_;
  std::atomic<bool> stopped_{false};
};

}  // namespace continuum::api
