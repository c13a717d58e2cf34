#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "continuum/common/result.h"
#include "continuum/common/status.h"

namespace continuum::api {

// Inverse of StatusCodeName: "not_found" -> kNotFound. Also accepts
// "NotFound" and "kNotFound". Unknown names map to kInternal.
StatusCode StatusCodeFromName(std::string_view name);

// Calls the control API of a `continuum agent` over its Unix socket, one
// connection per call. Thread-safety: immutable; Call may run concurrently.
class ControlClient {
 public:
  static ControlClient ForSocket(std::string path);

  // Sends `method path` (path may carry a query string, already encoded) with
  // an optional JSON body and returns the response body (null when empty).
  // Errors: kUnavailable "no continuum daemon at <path>" when nothing
  // listens, or when timeout_s passes; an error response becomes the
  // server's Status (code and message verbatim); a malformed response is
  // kInternal naming the socket.
  Result<nlohmann::json> Call(std::string_view method, std::string_view path,
                              const nlohmann::json* body = nullptr, int timeout_s = 3600) const;

  const std::string& socket_path() const { return socket_path_; }

 private:
  explicit ControlClient(std::string path) : socket_path_(std::move(path)) {}

  std::string socket_path_;
};

}  // namespace continuum::api
