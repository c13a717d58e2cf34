#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "continuum/common/result.h"

namespace continuum::agent {

// When a scheduled backup job runs (the `schedule` key of a [[backup]] job in
// the agent's config; docs/user-guide/backup.md "Scheduled backups"):
//   "every DURATION"          e.g. "every 6h", "every 30m", "every 2s"
//   "daily HH:MM"             every day at HH:MM local time
//   "weekly DAY HH:MM"        DAY is sun|mon|tue|wed|thu|fri|sat (or the full name)
//   "monthly D HH:MM"         day D (1..31) of each month; in months shorter than
//                             D, the last day of the month
//   "once RFC3339"            one run at that instant
enum class ScheduleKind { kEvery, kDaily, kWeekly, kMonthly, kOnce };

struct BackupSchedule {
  ScheduleKind kind = ScheduleKind::kEvery;
  std::string text;      // as written, for listings
  int64_t every_ns = 0;  // kEvery
  int hour = 0;          // kDaily, kWeekly, kMonthly
  int minute = 0;
  int weekday = 0;       // kWeekly: 0 = Sunday, as struct tm
  int day_of_month = 1;  // kMonthly: 1..31
  int64_t once_ns = 0;   // kOnce: epoch nanoseconds
};

// Parses a schedule; errors say what was expected.
Result<BackupSchedule> ParseBackupSchedule(std::string_view text);

// The next run in epoch nanoseconds, strictly after `now_ns`, or -1 when the
// schedule never runs again (a `once` in the past). Daily, weekly and monthly
// times are local time (localtime_r/mktime, so TZ and DST follow the system);
// `every` is counted from `anchor_ns` (the agent's start or the job's last
// run) and may be <= now_ns when a run is overdue. Pure apart from the TZ
// database.
int64_t NextRunNs(const BackupSchedule& s, int64_t now_ns, int64_t anchor_ns);

// The newest time the schedule wanted a run in (since_ns, now_ns], or -1.
// `since_ns` is the job's last run, or when the agent first knew the job (a
// time before that is not "missed": the job did not exist yet). Used at start
// to catch up a run missed while the agent was down (as systemd timers with
// Persistent=true do).
int64_t MissedRunNs(const BackupSchedule& s, int64_t since_ns, int64_t now_ns);

}  // namespace continuum::agent
