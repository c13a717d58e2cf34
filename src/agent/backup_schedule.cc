#include "continuum/agent/backup_schedule.h"

#include <time.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <sstream>
#include <vector>

#include "continuum/common/time_util.h"
#include "continuum/common/units.h"

namespace continuum::agent {
namespace {

constexpr int64_t kNsPerSec = 1'000'000'000;

std::vector<std::string> Words(std::string_view text) {
  std::istringstream in{std::string(text)};
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

Result<int> ParseInt(const std::string& s, int lo, int hi, const std::string& what) {
  if (s.empty() || s.size() > 4 || s.find_first_not_of("0123456789") != std::string::npos) {
    return InvalidArgument(what + " '" + s + "' is not a number");
  }
  int v = std::stoi(s);
  if (v < lo || v > hi) {
    return InvalidArgument(what + " " + s + " is out of range " + std::to_string(lo) + ".." + std::to_string(hi));
  }
  return v;
}

Status ParseClock(const std::string& s, BackupSchedule* out) {
  auto colon = s.find(':');
  if (colon == std::string::npos) return InvalidArgument("time '" + s + "' is not HH:MM");
  auto h = ParseInt(s.substr(0, colon), 0, 23, "hour");
  if (!h.ok()) return h.status();
  auto m = ParseInt(s.substr(colon + 1), 0, 59, "minute");
  if (!m.ok()) return m.status();
  out->hour = *h;
  out->minute = *m;
  return Status::Ok();
}

Result<int> ParseWeekday(std::string s) {
  static const std::array<const char*, 7> kNames = {"sunday",   "monday", "tuesday", "wednesday",
                                                    "thursday", "friday", "saturday"};
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (int i = 0; i < 7; ++i) {
    std::string full = kNames[i];
    if (s == full || s == full.substr(0, 3)) return i;
  }
  return InvalidArgument("day '" + s + "' is not one of sun, mon, tue, wed, thu, fri, sat");
}

int64_t ToNs(time_t t) { return static_cast<int64_t>(t) * kNsPerSec; }

// mktime of a local date and clock; tm_isdst = -1 lets the C library decide
// whether DST applies on that date.
time_t LocalTime(int year, int mon, int mday, int hour, int minute) {
  struct tm t {};
  t.tm_year = year;
  t.tm_mon = mon;
  t.tm_mday = mday;
  t.tm_hour = hour;
  t.tm_min = minute;
  t.tm_isdst = -1;
  return mktime(&t);
}

int DaysInMonth(int year, int mon) {
  static const std::array<int, 12> kDays = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int y = year + 1900;
  bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return mon == 1 && leap ? 29 : kDays[mon];
}

}  // namespace

Result<BackupSchedule> ParseBackupSchedule(std::string_view text) {
  static const char* kForms =
      "expected 'every DURATION', 'daily HH:MM', 'weekly DAY HH:MM', 'monthly DAY-OF-MONTH HH:MM' or "
      "'once RFC3339'";
  auto w = Words(text);
  BackupSchedule s;
  s.text = std::string(text);
  auto bad = [&](const std::string& why) { return InvalidArgument("schedule '" + std::string(text) + "': " + why); };
  if (w.empty()) return bad(kForms);
  const std::string& form = w[0];
  if (form == "every" && w.size() == 2) {
    auto d = ParseDuration(w[1]);
    if (!d.ok()) return bad(d.status().message());
    if (*d < kNsPerSec) return bad("the interval must be at least 1s");
    s.kind = ScheduleKind::kEvery;
    s.every_ns = *d;
    return s;
  }
  if (form == "daily" && w.size() == 2) {
    s.kind = ScheduleKind::kDaily;
    if (Status st = ParseClock(w[1], &s); !st.ok()) return bad(st.message());
    return s;
  }
  if (form == "weekly" && w.size() == 3) {
    s.kind = ScheduleKind::kWeekly;
    auto d = ParseWeekday(w[1]);
    if (!d.ok()) return bad(d.status().message());
    s.weekday = *d;
    if (Status st = ParseClock(w[2], &s); !st.ok()) return bad(st.message());
    return s;
  }
  if (form == "monthly" && w.size() == 3) {
    s.kind = ScheduleKind::kMonthly;
    auto d = ParseInt(w[1], 1, 31, "day of month");
    if (!d.ok()) return bad(d.status().message());
    s.day_of_month = *d;
    if (Status st = ParseClock(w[2], &s); !st.ok()) return bad(st.message());
    return s;
  }
  if (form == "once" && w.size() == 2) {
    auto t = ParseRfc3339(w[1]);
    if (!t.ok()) return bad(t.status().message());
    s.kind = ScheduleKind::kOnce;
    s.once_ns = *t;
    return s;
  }
  return bad(kForms);
}

int64_t NextRunNs(const BackupSchedule& s, int64_t now_ns, int64_t anchor_ns) {
  if (s.kind == ScheduleKind::kEvery) return anchor_ns + s.every_ns;
  if (s.kind == ScheduleKind::kOnce) return s.once_ns > now_ns ? s.once_ns : -1;
  time_t now = static_cast<time_t>(now_ns / kNsPerSec);
  struct tm lt {};
  localtime_r(&now, &lt);
  if (s.kind == ScheduleKind::kDaily) {
    for (int d = 0; d <= 2; ++d) {
      time_t t = LocalTime(lt.tm_year, lt.tm_mon, lt.tm_mday + d, s.hour, s.minute);
      if (ToNs(t) > now_ns) return ToNs(t);
    }
  }
  if (s.kind == ScheduleKind::kWeekly) {
    int ahead = (s.weekday - lt.tm_wday + 7) % 7;
    for (int d : {ahead, ahead + 7}) {
      time_t t = LocalTime(lt.tm_year, lt.tm_mon, lt.tm_mday + d, s.hour, s.minute);
      if (ToNs(t) > now_ns) return ToNs(t);
    }
  }
  if (s.kind == ScheduleKind::kMonthly) {
    for (int m = 0; m <= 2; ++m) {
      int year = lt.tm_year + (lt.tm_mon + m) / 12;
      int mon = (lt.tm_mon + m) % 12;
      int day = std::min(s.day_of_month, DaysInMonth(year, mon));
      time_t t = LocalTime(year, mon, day, s.hour, s.minute);
      if (ToNs(t) > now_ns) return ToNs(t);
    }
  }
  return -1;
}

int64_t MissedRunNs(const BackupSchedule& s, int64_t since_ns, int64_t now_ns) {
  if (since_ns <= 0 || since_ns >= now_ns) return -1;
  if (s.kind == ScheduleKind::kEvery) {
    if (s.every_ns <= 0 || since_ns + s.every_ns > now_ns) return -1;
    return since_ns + (now_ns - since_ns) / s.every_ns * s.every_ns;
  }
  if (s.kind == ScheduleKind::kOnce) return s.once_ns > since_ns && s.once_ns <= now_ns ? s.once_ns : -1;
  // Calendar kinds: step through the times after since_ns (a few hundred at
  // most for a monthly job down for years; the loop is bounded anyway).
  int64_t missed = -1;
  int64_t t = since_ns;
  for (int i = 0; i < 100000; ++i) {
    int64_t next = NextRunNs(s, t, t);
    if (next < 0 || next > now_ns) break;
    missed = next;
    t = next;
  }
  return missed;
}

}  // namespace continuum::agent
