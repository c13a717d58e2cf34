#include "continuum/common/status.h"

#include <cstring>

namespace continuum {

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: return "invalid_argument";
    case StatusCode::kNotFound: return "not_found";
    case StatusCode::kAlreadyExists: return "already_exists";
    case StatusCode::kFailedPrecondition: return "failed_precondition";
    case StatusCode::kOutOfRange: return "out_of_range";
    case StatusCode::kResourceExhausted: return "resource_exhausted";
    case StatusCode::kDataLoss: return "data_loss";
    case StatusCode::kUnavailable: return "unavailable";
    case StatusCode::kIoError: return "io_error";
    case StatusCode::kInternal: return "internal";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  return message_;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  return Status(code_, std::string(context) + ": " + message_, errno_);
}

Status PosixError(std::string_view context, int sys_errno) {
  StatusCode code = StatusCode::kIoError;
  switch (sys_errno) {
    case ENOENT: code = StatusCode::kNotFound; break;
    case EEXIST: code = StatusCode::kAlreadyExists; break;
    case ENOSPC:
    case EDQUOT: code = StatusCode::kResourceExhausted; break;
    case EBUSY: code = StatusCode::kFailedPrecondition; break;
    case EINVAL: code = StatusCode::kInvalidArgument; break;
    case ECONNREFUSED:
    case EAGAIN: code = StatusCode::kUnavailable; break;
    default: break;
  }
  return Status(code, std::string(context) + ": " + std::strerror(sys_errno), sys_errno);
}

}  // namespace continuum
