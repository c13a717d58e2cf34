#pragma once

#include <cassert>
#include <optional>
#include <utility>

#include "continuum/common/status.h"

namespace continuum {

// Result<T> holds either a value or a non-ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    assert(!status_.ok());
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }

  // REQUIRES: ok()
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() { return *value_; }
  const T& operator*() const { return *value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace continuum

#define CONTINUUM_CONCAT_INNER(a, b) a##b
#define CONTINUUM_CONCAT(a, b) CONTINUUM_CONCAT_INNER(a, b)
#define CONTINUUM_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                    \
  if (!tmp.ok()) return tmp.status();                   \
  lhs = std::move(tmp).value()
#define CONTINUUM_ASSIGN_OR_RETURN(lhs, expr) \
  CONTINUUM_ASSIGN_OR_RETURN_IMPL(CONTINUUM_CONCAT(_res_, __LINE__), lhs, expr)
