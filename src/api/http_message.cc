#include "api/http_message.h"

#include <fmt/format.h>

#include <charconv>
#include <set>
#include <vector>

namespace continuum::api {
namespace {

bool IsTokenChar(unsigned char c) {
  if (c >= '0' && c <= '9') return true;
  if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (!IsTokenChar(c)) return false;
  }
  return true;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string_view TrimSpace(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Finds the blank line ending a head. Returns the offset of the first body
// byte, or npos. Accepts bare LF line ends as well as CRLF.
size_t FindHeadEnd(std::string_view buf, size_t from) {
  size_t lf_lf = buf.find("\n\n", from);
  size_t lf_crlf = buf.find("\n\r\n", from);
  if (lf_lf == std::string_view::npos && lf_crlf == std::string_view::npos) {
    return std::string_view::npos;
  }
  if (lf_crlf == std::string_view::npos || (lf_lf != std::string_view::npos && lf_lf < lf_crlf)) {
    return lf_lf + 2;
  }
  return lf_crlf + 3;
}

// Splits a head into lines without their CRLF/LF. A CR anywhere else is an
// error: it is how request smuggling hides a second line.
std::optional<std::vector<std::string_view>> SplitLines(std::string_view head) {
  std::vector<std::string_view> lines;
  while (!head.empty()) {
    size_t nl = head.find('\n');
    std::string_view line = head.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find('\r') != std::string_view::npos) return std::nullopt;
    if (!line.empty()) lines.push_back(line);
    if (nl == std::string_view::npos) break;
    head.remove_prefix(nl + 1);
  }
  return lines;
}

// Parses "name: value" lines into headers (lower-case names); returns an
// error message or nullopt.
std::optional<std::string> ParseHeaderLines(const std::vector<std::string_view>& lines,
                                            std::map<std::string, std::string>& headers) {
  for (size_t i = 1; i < lines.size(); ++i) {
    std::string_view line = lines[i];
    if (line.front() == ' ' || line.front() == '\t') return "obsolete header line folding";
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) return "header line without a colon";
    std::string_view name = line.substr(0, colon);
    if (!IsToken(name)) return "invalid header name";
    std::string_view value = TrimSpace(line.substr(colon + 1));
    for (unsigned char c : value) {
      if ((c < 0x20 && c != '\t') || c == 0x7f) return "control character in header value";
    }
    std::string key = Lower(name);
    auto [it, inserted] = headers.emplace(key, std::string(value));
    if (inserted) continue;
    if (key == "content-length") {
      if (it->second != value) return "conflicting content-length headers";
      continue;
    }
    it->second.append(", ").append(value);
  }
  return std::nullopt;
}

std::optional<size_t> ParseLength(std::string_view text) {
  if (text.empty() || text.size() > 19) return std::nullopt;
  size_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::vector<std::string_view> SplitPath(std::string_view path) {
  std::vector<std::string_view> segments;
  path.remove_prefix(1);  // callers checked the leading '/'
  while (true) {
    size_t slash = path.find('/');
    segments.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return segments;
}

Status CheckJsonDepth(std::string_view text, std::string_view what) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) {
        return InvalidArgument(fmt::format("{} nests deeper than {} levels", what, kMaxJsonDepth));
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return Status::Ok();
}

}  // namespace

RequestParser::State RequestParser::Fail(int status, std::string message) {
  state_ = State::kError;
  error_status_ = status;
  error_message_ = std::move(message);
  return state_;
}

RequestParser::State RequestParser::Feed(std::string_view bytes) {
  if (state_ != State::kNeedMore) return state_;
  buffer_.append(bytes);
  if (body_start_ == 0) {
    size_t end = FindHeadEnd(buffer_, scan_pos_);
    if (end == std::string_view::npos) {
      if (buffer_.size() > limits_.max_header_bytes) {
        return Fail(431, fmt::format("request head exceeds {} bytes", limits_.max_header_bytes));
      }
      // The terminator is at most 3 bytes; resume just before a partial one.
      scan_pos_ = buffer_.size() < 2 ? 0 : buffer_.size() - 2;
      return state_;
    }
    if (end > limits_.max_header_bytes) {
      return Fail(431, fmt::format("request head exceeds {} bytes", limits_.max_header_bytes));
    }
    if (ParseHead(std::string_view(buffer_).substr(0, end)) == State::kError) return state_;
    body_start_ = end;
  }
  if (buffer_.size() - body_start_ < content_length_) return state_;
  // One request per connection: bytes after the body are dropped.
  request_.body = buffer_.substr(body_start_, content_length_);
  buffer_.clear();
  buffer_.shrink_to_fit();
  state_ = State::kComplete;
  return state_;
}

RequestParser::State RequestParser::ParseHead(std::string_view head) {
  auto lines = SplitLines(head);
  if (!lines) return Fail(400, "bare carriage return in request head");
  if (lines->empty()) return Fail(400, "empty request");
  std::string_view line = lines->front();
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return Fail(400, "malformed request line");
  }
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!IsToken(method) || method.size() > 32) return Fail(400, "malformed request method");
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    if (version.size() == 8 && version.substr(0, 5) == "HTTP/") {
      return Fail(505, "only http/1.0 and http/1.1 are supported");
    }
    return Fail(400, "malformed http version");
  }
  if (target.empty() || target.front() != '/') return Fail(400, "request target must be a path");
  for (unsigned char c : target) {
    if (c <= 0x20 || c >= 0x7f || c == '#') return Fail(400, "invalid character in request target");
  }
  size_t q = target.find('?');
  std::string_view path = target.substr(0, q);
  if (!PercentDecode(path, false).ok()) return Fail(400, "invalid percent escape in request path");
  if (q != std::string_view::npos) {
    auto query = ParseQuery(target.substr(q + 1));
    if (!query.ok()) return Fail(400, query.status().message());
    request_.query = std::move(query).value();
  }
  if (auto err = ParseHeaderLines(*lines, request_.headers)) return Fail(400, *err);
  if (request_.headers.count("transfer-encoding")) {
    return Fail(411, "transfer-encoding is not supported; send content-length");
  }
  auto cl = request_.headers.find("content-length");
  if (cl != request_.headers.end()) {
    auto length = ParseLength(cl->second);
    if (!length) return Fail(400, "invalid content-length");
    if (*length > limits_.max_body) {
      return Fail(413, fmt::format("request body of {} bytes exceeds the limit of {} bytes", *length,
                                   limits_.max_body));
    }
    content_length_ = *length;
  }
  request_.method = std::string(method);
  request_.target = std::string(target);
  request_.path = std::string(path);
  return state_;
}

ResponseParser::State ResponseParser::Fail(std::string message) {
  state_ = State::kError;
  error_message_ = std::move(message);
  return state_;
}

ResponseParser::State ResponseParser::Feed(std::string_view bytes) {
  if (state_ != State::kNeedMore) return state_;
  buffer_.append(bytes);
  if (body_start_ == 0) {
    size_t end = FindHeadEnd(buffer_, scan_pos_);
    if (end == std::string_view::npos) {
      if (buffer_.size() > limits_.max_header_bytes) return Fail("response head too large");
      scan_pos_ = buffer_.size() < 2 ? 0 : buffer_.size() - 2;
      return state_;
    }
    if (end > limits_.max_header_bytes) return Fail("response head too large");
    if (ParseHead(std::string_view(buffer_).substr(0, end)) == State::kError) return state_;
    body_start_ = end;
  }
  if (buffer_.size() - body_start_ > limits_.max_body && !content_length_) {
    return Fail("response body too large");
  }
  return MaybeComplete();
}

ResponseParser::State ResponseParser::MaybeComplete() {
  if (!content_length_ || buffer_.size() - body_start_ < *content_length_) return state_;
  body_ = buffer_.substr(body_start_, *content_length_);
  buffer_.clear();
  state_ = State::kComplete;
  return state_;
}

ResponseParser::State ResponseParser::FinishAtEof() {
  if (state_ != State::kNeedMore) return state_;
  if (body_start_ == 0) return Fail("connection closed before the response head was complete");
  if (content_length_) return Fail("connection closed before the response body was complete");
  body_ = buffer_.substr(body_start_);
  buffer_.clear();
  state_ = State::kComplete;
  return state_;
}

ResponseParser::State ResponseParser::ParseHead(std::string_view head) {
  auto lines = SplitLines(head);
  if (!lines || lines->empty()) return Fail("malformed response head");
  std::string_view line = lines->front();
  if (line.size() < 12 || (line.substr(0, 9) != "HTTP/1.1 " && line.substr(0, 9) != "HTTP/1.0 ") ||
      (line.size() > 12 && line[12] != ' ')) {
    return Fail("malformed status line");
  }
  int status = 0;
  auto [end, ec] = std::from_chars(line.data() + 9, line.data() + 12, status);
  if (ec != std::errc() || end != line.data() + 12 || status < 100 || status > 599) {
    return Fail("malformed status code");
  }
  status_ = status;
  if (auto err = ParseHeaderLines(*lines, headers_)) return Fail(*err);
  if (headers_.count("transfer-encoding")) return Fail("transfer-encoding is not supported");
  auto cl = headers_.find("content-length");
  if (cl != headers_.end()) {
    auto length = ParseLength(cl->second);
    if (!length) return Fail("invalid content-length");
    if (*length > limits_.max_body) return Fail("response body too large");
    content_length_ = *length;
  }
  return state_;
}

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 416: return "Range Not Satisfiable";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    default: return "Unknown";
  }
}

std::string SerializeResponse(const Response& response) {
  // A trailing newline keeps `curl --unix-socket` output readable.
  std::string body = DumpJson(response.body) + "\n";
  return fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n"
      "Connection: close\r\n\r\n{}",
      response.status, ReasonPhrase(response.status), body.size(), body);
}

std::string SerializeRequest(std::string_view method, std::string_view target,
                             std::string_view body) {
  return fmt::format(
      "{} {} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n{}"
      "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
      method, target, body.empty() ? "" : "Content-Type: application/json\r\n", body.size(),
      body);
}

Result<std::string> PercentDecode(std::string_view text, bool plus_as_space) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '+' && plus_as_space) {
      out.push_back(' ');
    } else if (c != '%') {
      out.push_back(c);
    } else {
      int hi = i + 2 < text.size() ? HexValue(text[i + 1]) : -1;
      int lo = hi >= 0 ? HexValue(text[i + 2]) : -1;
      if (lo < 0) return InvalidArgument("invalid percent escape");
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    }
  }
  return out;
}

Result<std::map<std::string, std::string>> ParseQuery(std::string_view query) {
  std::map<std::string, std::string> params;
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view part = query.substr(0, amp);
    query.remove_prefix(amp == std::string_view::npos ? query.size() : amp + 1);
    if (part.empty()) continue;
    size_t eq = part.find('=');
    auto key = PercentDecode(part.substr(0, eq), true);
    auto value = PercentDecode(eq == std::string_view::npos ? "" : part.substr(eq + 1), true);
    if (!key.ok() || !value.ok()) return InvalidArgument("invalid percent escape in query string");
    params[std::move(key).value()] = std::move(value).value();
  }
  return params;
}

std::optional<std::map<std::string, std::string>> MatchPath(std::string_view pattern,
                                                           std::string_view path) {
  if (pattern.empty() || pattern.front() != '/' || path.empty() || path.front() != '/') {
    return std::nullopt;
  }
  std::vector<std::string_view> want = SplitPath(pattern);
  std::vector<std::string_view> got = SplitPath(path);
  if (want.size() != got.size()) return std::nullopt;
  std::map<std::string, std::string> params;
  for (size_t i = 0; i < want.size(); ++i) {
    std::string_view w = want[i];
    if (w.size() >= 2 && w.front() == '{' && w.back() == '}') {
      if (got[i].empty()) return std::nullopt;
      auto decoded = PercentDecode(got[i], false);
      // A NUL would truncate the name in any C API a handler passes it to.
      if (!decoded.ok() || decoded->find('\0') != std::string::npos) return std::nullopt;
      params[std::string(w.substr(1, w.size() - 2))] = std::move(decoded).value();
    } else if (w != got[i]) {
      return std::nullopt;
    }
  }
  return params;
}

Result<nlohmann::json> ParseJson(std::string_view text, std::string_view what) {
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    return InvalidArgument(fmt::format("{} is empty; expected json", what));
  }
  CONTINUUM_RETURN_IF_ERROR(CheckJsonDepth(text, what));
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(fmt::format("{} is not valid json: {}", what, e.what()));
  }
}

std::string DumpJson(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Result<nlohmann::json> Request::Json() const { return ParseJson(body, "request body"); }

int HttpStatusFor(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return 200;
    case StatusCode::kInvalidArgument: return 400;
    case StatusCode::kNotFound: return 404;
    case StatusCode::kAlreadyExists:
    case StatusCode::kFailedPrecondition: return 409;
    case StatusCode::kOutOfRange: return 416;
    case StatusCode::kResourceExhausted: return 507;
    case StatusCode::kUnavailable: return 503;
    case StatusCode::kDataLoss:
    case StatusCode::kIoError:
    case StatusCode::kInternal: return 500;
  }
  return 500;
}

Response ErrorWithHttpStatus(int http_status, StatusCode code, std::string message) {
  nlohmann::json error = {{"code", StatusCodeName(code)}, {"message", std::move(message)}};
  return Response{http_status, {{"error", std::move(error)}}};
}

Response ErrorResponse(const Status& status) {
  if (status.ok()) {
    return ErrorWithHttpStatus(500, StatusCode::kInternal, "error response built from an ok status");
  }
  return ErrorWithHttpStatus(HttpStatusFor(status.code()), status.code(), status.message());
}

Response JsonResponse(nlohmann::json body, int status) { return Response{status, std::move(body)}; }

void Router::Add(std::string method, std::string pattern, Handler handler) {
  for (Route& r : routes_) {
    if (r.method == method && r.pattern == pattern) {
      r.handler = std::move(handler);
      return;
    }
  }
  routes_.push_back(Route{std::move(method), std::move(pattern), std::move(handler)});
}

Response Router::Dispatch(Request& request) const {
  const Route* best = nullptr;
  std::map<std::string, std::string> best_params;
  std::set<std::string> allowed;
  for (const Route& r : routes_) {
    auto params = MatchPath(r.pattern, request.path);
    if (!params) continue;
    if (r.method != request.method) {
      allowed.insert(r.method);
      continue;
    }
    // A literal segment beats a capture: "/v1/volumes/import" wins over
    // "/v1/volumes/{name}", whatever the registration order.
    if (best == nullptr || params->size() < best_params.size()) {
      best = &r;
      best_params = std::move(*params);
    }
  }
  if (best != nullptr) {
    request.path_params = std::move(best_params);
    return best->handler(request);
  }
  if (!allowed.empty()) {
    std::string list;
    for (const std::string& m : allowed) list += (list.empty() ? "" : ", ") + m;
    return ErrorWithHttpStatus(405, StatusCode::kInvalidArgument,
                               fmt::format("method {} is not allowed on {}; allowed: {}",
                                           request.method, request.path, list));
  }
  return ErrorWithHttpStatus(404, StatusCode::kNotFound,
                             fmt::format("no endpoint {} {}", request.method, request.path));
}

}  // namespace continuum::api
