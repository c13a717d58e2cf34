#pragma once

#include <cerrno>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace continuum {

// Error categories an operator or a caller acts on. Keep the list short: the
// message carries the detail (path, device, peer), the code carries the action.
enum class StatusCode {
  kOk = 0,
  kInvalidArgument,   // bad input from a user or a caller; fix the input
  kNotFound,          // unknown volume, bookmark, file
  kAlreadyExists,
  kFailedPrecondition,  // e.g. volume is up, device busy
  kOutOfRange,        // point before oldest restorable point
  kResourceExhausted, // journal full, disk full
  kDataLoss,          // checksum mismatch, torn record beyond recovery
  kUnavailable,       // daemon not running, peer away; retryable
  kIoError,           // errno from the kernel
  kInternal,
};

std::string_view StatusCodeName(StatusCode code);

// Status is the error value of every I/O and control path. Messages are lower
// case, without final punctuation, and name the object they concern.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message, int sys_errno = 0)
      : code_(code), errno_(sys_errno), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  int sys_errno() const { return errno_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;

  // Prefixes the message with context: "open journal: <old message>".
  Status WithContext(std::string_view context) const;

  // Spelled so a deliberate ignore can be found with grep.
  void IgnoreError() const {}

 private:
  StatusCode code_ = StatusCode::kOk;
  int errno_ = 0;
  std::string message_;
};

// The one place errno becomes a Status.
Status PosixError(std::string_view context, int sys_errno);

// The first of several results that failed, or Ok: for reading a group of
// fields that each may fail.
inline Status FirstError(std::initializer_list<Status> all) {
  for (const Status& st : all) {
    if (!st.ok()) return st;
  }
  return Status();
}

inline Status InvalidArgument(std::string msg) { return {StatusCode::kInvalidArgument, std::move(msg)}; }
inline Status NotFound(std::string msg) { return {StatusCode::kNotFound, std::move(msg)}; }
inline Status AlreadyExists(std::string msg) { return {StatusCode::kAlreadyExists, std::move(msg)}; }
inline Status FailedPrecondition(std::string msg) { return {StatusCode::kFailedPrecondition, std::move(msg)}; }
inline Status OutOfRange(std::string msg) { return {StatusCode::kOutOfRange, std::move(msg)}; }
inline Status ResourceExhausted(std::string msg) { return {StatusCode::kResourceExhausted, std::move(msg)}; }
inline Status DataLoss(std::string msg) { return {StatusCode::kDataLoss, std::move(msg)}; }
inline Status Unavailable(std::string msg) { return {StatusCode::kUnavailable, std::move(msg)}; }
inline Status Internal(std::string msg) { return {StatusCode::kInternal, std::move(msg)}; }

}  // namespace continuum

#define CONTINUUM_RETURN_IF_ERROR(expr)        \
  do {                                         \
    ::continuum::Status _st = (expr);          \
    if (!_st.ok()) return _st;                 \
  } while (0)
