#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "continuum/api/control_server.h"
#include "continuum/common/result.h"

namespace continuum::api {

// HTTP/1.1 framing for the control API, free of sockets so it can be fuzzed.
// Everything parsed here is untrusted: malformed input is an error value,
// never an assert, and every buffer is bounded by HttpLimits.

struct HttpLimits {
  size_t max_header_bytes = 64 << 10;  // request/status line + headers
  size_t max_body = 16 << 20;
};

// Nesting deeper than this is refused before nlohmann::json sees it, because
// copying and dumping a json value recurses.
inline constexpr int kMaxJsonDepth = 128;

// Incremental parser of one request. Feed bytes as they arrive; once the state
// is kComplete or kError further bytes are ignored (one request per
// connection). Thread-safety: none; one parser per connection.
class RequestParser {
 public:
  enum class State { kNeedMore, kComplete, kError };

  explicit RequestParser(HttpLimits limits) : limits_(limits) {}

  State Feed(std::string_view bytes);
  State state() const { return state_; }
  // Bytes buffered so far; lets the caller tell "nothing sent" from "partial".
  size_t buffered() const { return buffer_.size(); }

  // REQUIRES: state() == kComplete. path_params and peer are left empty.
  Request& request() { return request_; }
  // REQUIRES: state() == kError. The HTTP status to answer with (400, 411,
  // 413, 431 or 505) and why, lower case.
  int error_status() const { return error_status_; }
  const std::string& error_message() const { return error_message_; }

 private:
  State Fail(int status, std::string message);
  State ParseHead(std::string_view head);

  HttpLimits limits_;
  State state_ = State::kNeedMore;
  std::string buffer_;
  size_t scan_pos_ = 0;   // where the search for the end of the head resumes
  size_t body_start_ = 0; // 0 until the head is parsed
  size_t content_length_ = 0;
  Request request_;
  int error_status_ = 0;
  std::string error_message_;
};

// Incremental parser of one response, for the client. A response without
// Content-Length ends at EOF. Thread-safety: none.
class ResponseParser {
 public:
  enum class State { kNeedMore, kComplete, kError };

  explicit ResponseParser(HttpLimits limits) : limits_(limits) {}

  State Feed(std::string_view bytes);
  // The peer closed the connection: completes a response delimited by EOF,
  // otherwise an error (truncated).
  State FinishAtEof();
  State state() const { return state_; }

  // REQUIRES: state() == kComplete
  int status() const { return status_; }
  const std::string& body() const { return body_; }
  const std::map<std::string, std::string>& headers() const { return headers_; }
  // REQUIRES: state() == kError
  const std::string& error_message() const { return error_message_; }

 private:
  State Fail(std::string message);
  State ParseHead(std::string_view head);
  State MaybeComplete();

  HttpLimits limits_;
  State state_ = State::kNeedMore;
  std::string buffer_;
  size_t scan_pos_ = 0;
  size_t body_start_ = 0;
  std::optional<size_t> content_length_;
  int status_ = 0;
  std::map<std::string, std::string> headers_;
  std::string body_;
  std::string error_message_;
};

// {"error": {"code": StatusCodeName(code), "message": message}} with an HTTP
// status of the caller's choosing (403, 405, 408, 413 ...).
Response ErrorWithHttpStatus(int http_status, StatusCode code, std::string message);

// "HTTP/1.1 <status> <reason>" response with a JSON body and Connection: close.
std::string SerializeResponse(const Response& response);
// A request with Content-Type: application/json when body is non-empty.
std::string SerializeRequest(std::string_view method, std::string_view target,
                             std::string_view body);
std::string_view ReasonPhrase(int status);

// Decodes %XX escapes (and '+' as space when plus_as_space). A truncated or
// non-hex escape is kInvalidArgument.
Result<std::string> PercentDecode(std::string_view text, bool plus_as_space);
// "a=1&b=x%20y" -> {a: 1, b: "x y"}; a key without '=' maps to "".
Result<std::map<std::string, std::string>> ParseQuery(std::string_view query);
// Matches a raw (percent-encoded) path against a Router pattern; the captured
// segments are decoded. nullopt when it does not match.
std::optional<std::map<std::string, std::string>> MatchPath(std::string_view pattern,
                                                           std::string_view path);

// Parses JSON from a peer without throwing; `what` names it in the error.
Result<nlohmann::json> ParseJson(std::string_view text, std::string_view what);
// Serializes without throwing: invalid UTF-8 in strings is replaced.
std::string DumpJson(const nlohmann::json& value);

}  // namespace continuum::api
