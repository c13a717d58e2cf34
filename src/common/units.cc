#include "continuum/common/units.h"

#include <cmath>
#include <cstdio>
#include <limits>

namespace continuum {
namespace {

// Splits "1.5G" into 1.5 and "G". Returns false when the number is malformed.
bool SplitNumber(std::string_view text, double* number, std::string_view* suffix) {
  size_t i = 0;
  bool seen_digit = false, seen_dot = false;
  while (i < text.size()) {
    char c = text[i];
    if (c >= '0' && c <= '9') {
      seen_digit = true;
    } else if (c == '.' && !seen_dot) {
      seen_dot = true;
    } else {
      break;
    }
    ++i;
  }
  if (!seen_digit) return false;
  *number = std::stod(std::string(text.substr(0, i)));
  *suffix = text.substr(i);
  return true;
}

}  // namespace

Result<uint64_t> ParseSize(std::string_view text) {
  double number = 0;
  std::string_view suffix;
  if (!SplitNumber(text, &number, &suffix)) {
    return InvalidArgument("invalid size '" + std::string(text) +
                           "': expected a number with an optional K, M, G or T suffix");
  }
  if (!suffix.empty() && (suffix.back() == 'B' || suffix.back() == 'b')) suffix.remove_suffix(1);
  if (suffix.size() == 2 && (suffix[1] == 'i')) suffix.remove_suffix(1);
  double mult = 1;
  if (suffix.empty()) {
    mult = 1;
  } else if (suffix.size() == 1) {
    switch (suffix[0]) {
      case 'k': case 'K': mult = 1024.0; break;
      case 'm': case 'M': mult = 1024.0 * 1024; break;
      case 'g': case 'G': mult = 1024.0 * 1024 * 1024; break;
      case 't': case 'T': mult = 1024.0 * 1024 * 1024 * 1024; break;
      default:
        return InvalidArgument("invalid size '" + std::string(text) + "': unknown suffix '" +
                               std::string(suffix) + "' (use K, M, G or T)");
    }
  } else {
    return InvalidArgument("invalid size '" + std::string(text) + "': unknown suffix '" +
                           std::string(suffix) + "' (use K, M, G or T)");
  }
  double bytes = number * mult;
  if (bytes > static_cast<double>(std::numeric_limits<uint64_t>::max() / 2)) {
    return InvalidArgument("invalid size '" + std::string(text) + "': too large");
  }
  return static_cast<uint64_t>(std::llround(bytes));
}

Result<int64_t> ParseDuration(std::string_view text) {
  double number = 0;
  std::string_view suffix;
  if (!SplitNumber(text, &number, &suffix)) {
    return InvalidArgument("invalid duration '" + std::string(text) +
                           "': expected a number with an s, m, h or d suffix");
  }
  double secs = 0;
  if (suffix.empty() || suffix == "s") {
    secs = number;
  } else if (suffix == "ms") {
    secs = number / 1000;
  } else if (suffix == "m") {
    secs = number * 60;
  } else if (suffix == "h") {
    secs = number * 3600;
  } else if (suffix == "d") {
    secs = number * 86400;
  } else if (suffix == "w") {
    secs = number * 7 * 86400;
  } else {
    return InvalidArgument("invalid duration '" + std::string(text) + "': unknown suffix '" +
                           std::string(suffix) + "' (use s, m, h or d)");
  }
  if (secs > 1e10) return InvalidArgument("invalid duration '" + std::string(text) + "': too large");
  return static_cast<int64_t>(std::llround(secs * 1e9));
}

std::string FormatSize(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof(buf), "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f %s", v, kUnits[u]);
  }
  return buf;
}

std::string FormatDuration(int64_t nanos) {
  int64_t s = nanos / 1000000000;
  char buf[64];
  if (s % 86400 == 0 && s >= 86400) {
    std::snprintf(buf, sizeof(buf), "%lldd", static_cast<long long>(s / 86400));
  } else if (s % 3600 == 0 && s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lldh", static_cast<long long>(s / 3600));
  } else if (s % 60 == 0 && s >= 60) {
    std::snprintf(buf, sizeof(buf), "%lldm", static_cast<long long>(s / 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%llds", static_cast<long long>(s));
  }
  return buf;
}

}  // namespace continuum
