#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "continuum/common/result.h"

namespace continuum {

// Parses RFC 3339: "2026-11-21T10:00:00Z", "2026-11-21T10:00:00.123456789+02:00",
// also accepts a space instead of 'T'. Returns nanoseconds since the Unix epoch.
Result<int64_t> ParseRfc3339(std::string_view text);
// Formats nanoseconds since the epoch as UTC RFC 3339 with milliseconds,
// or with nanoseconds when `nanos` is true.
std::string FormatRfc3339(int64_t epoch_ns, bool nanos = false);

// Wall clock in nanoseconds since the epoch.
int64_t WallNowNs();
// Monotonic clock in nanoseconds.
int64_t MonoNowNs();

}  // namespace continuum
