#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "continuum/common/result.h"

namespace continuum {

// "512", "64K", "1.5G", "2T" -> bytes (binary multiples). Rejects negatives,
// unknown suffixes and overflow with a message naming the input.
Result<uint64_t> ParseSize(std::string_view text);
// "30s", "15m", "2h", "7d" -> nanoseconds. A bare number means seconds.
Result<int64_t> ParseDuration(std::string_view text);

std::string FormatSize(uint64_t bytes);       // "1.5 GiB"
std::string FormatDuration(int64_t nanos);    // "2h", "90s", "1d 3h"

}  // namespace continuum
