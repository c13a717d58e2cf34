#include "continuum/common/time_util.h"

#include <time.h>

#include <cctype>
#include <cstdio>

namespace continuum {
namespace {

bool ReadDigits(std::string_view s, size_t* pos, int count, int* out) {
  int v = 0;
  for (int i = 0; i < count; ++i) {
    if (*pos >= s.size() || !std::isdigit(static_cast<unsigned char>(s[*pos]))) return false;
    v = v * 10 + (s[*pos] - '0');
    ++*pos;
  }
  *out = v;
  return true;
}

bool Expect(std::string_view s, size_t* pos, char c) {
  if (*pos >= s.size() || s[*pos] != c) return false;
  ++*pos;
  return true;
}

// Days from 1970-01-01 to y-m-d (proleptic Gregorian), from H. Hinnant's algorithm.
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

}  // namespace

Result<int64_t> ParseRfc3339(std::string_view s) {
  auto bad = [&](const char* why) {
    return InvalidArgument("invalid timestamp '" + std::string(s) + "': " + why +
                           " (expected RFC 3339, e.g. 2026-11-21T10:00:00.123Z)");
  };
  size_t p = 0;
  int year, mon, day, hour, min, sec;
  if (!ReadDigits(s, &p, 4, &year) || !Expect(s, &p, '-') || !ReadDigits(s, &p, 2, &mon) ||
      !Expect(s, &p, '-') || !ReadDigits(s, &p, 2, &day)) {
    return bad("bad date");
  }
  if (p >= s.size() || (s[p] != 'T' && s[p] != 't' && s[p] != ' ')) return bad("missing time");
  ++p;
  if (!ReadDigits(s, &p, 2, &hour) || !Expect(s, &p, ':') || !ReadDigits(s, &p, 2, &min) ||
      !Expect(s, &p, ':') || !ReadDigits(s, &p, 2, &sec)) {
    return bad("bad time of day");
  }
  if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60) {
    return bad("field out of range");
  }
  int64_t frac_ns = 0;
  if (p < s.size() && s[p] == '.') {
    ++p;
    int digits = 0;
    while (p < s.size() && std::isdigit(static_cast<unsigned char>(s[p]))) {
      if (digits < 9) frac_ns = frac_ns * 10 + (s[p] - '0');
      ++digits;
      ++p;
    }
    if (digits == 0) return bad("empty fraction");
    for (int i = digits; i < 9; ++i) frac_ns *= 10;
  }
  int64_t offset_s = 0;
  if (p >= s.size()) return bad("missing zone (Z or +HH:MM)");
  if (s[p] == 'Z' || s[p] == 'z') {
    ++p;
  } else if (s[p] == '+' || s[p] == '-') {
    int sign = s[p] == '-' ? -1 : 1;
    ++p;
    int oh, om;
    if (!ReadDigits(s, &p, 2, &oh) || !Expect(s, &p, ':') || !ReadDigits(s, &p, 2, &om)) {
      return bad("bad zone offset");
    }
    offset_s = sign * (oh * 3600 + om * 60);
  } else {
    return bad("bad zone");
  }
  if (p != s.size()) return bad("trailing characters");
  int64_t days = DaysFromCivil(year, static_cast<unsigned>(mon), static_cast<unsigned>(day));
  int64_t secs = days * 86400 + hour * 3600 + min * 60 + sec - offset_s;
  return secs * 1000000000LL + frac_ns;
}

std::string FormatRfc3339(int64_t epoch_ns, bool nanos) {
  int64_t secs = epoch_ns / 1000000000LL;
  int64_t frac = epoch_ns % 1000000000LL;
  if (frac < 0) {
    frac += 1000000000LL;
    secs -= 1;
  }
  time_t t = static_cast<time_t>(secs);
  struct tm tm_utc;
  gmtime_r(&t, &tm_utc);
  char buf[64];
  if (nanos) {
    std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", tm_utc.tm_year + 1900,
                  tm_utc.tm_mon + 1, tm_utc.tm_mday, tm_utc.tm_hour, tm_utc.tm_min, tm_utc.tm_sec,
                  static_cast<long long>(frac));
  } else {
    std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03lldZ", tm_utc.tm_year + 1900,
                  tm_utc.tm_mon + 1, tm_utc.tm_mday, tm_utc.tm_hour, tm_utc.tm_min, tm_utc.tm_sec,
                  static_cast<long long>(frac / 1000000));
  }
  return buf;
}

int64_t WallNowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t MonoNowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

}  // namespace continuum
