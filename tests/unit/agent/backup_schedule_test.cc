// Covers src/agent/backup_schedule.cc: schedule parsing and next-run times.
#include "continuum/agent/backup_schedule.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <time.h>

#include "continuum/common/time_util.h"

namespace continuum::agent {
namespace {

constexpr int64_t kSec = 1'000'000'000;

class BackupScheduleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("TZ", "UTC", 1);
    tzset();
  }
  static int64_t At(const char* rfc3339) { return *ParseRfc3339(rfc3339); }
  static std::string Next(const char* sched, const char* now) {
    auto s = ParseBackupSchedule(sched);
    EXPECT_TRUE(s.ok()) << s.status().message();
    int64_t n = NextRunNs(*s, At(now), At(now));
    return n < 0 ? "never" : FormatRfc3339(n);
  }
};

TEST_F(BackupScheduleTest, Every) {
  auto s = ParseBackupSchedule("every 6h");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->kind, ScheduleKind::kEvery);
  EXPECT_EQ(s->every_ns, 6 * 3600 * kSec);
  EXPECT_EQ(NextRunNs(*s, 100 * kSec, 40 * kSec), 40 * kSec + 6 * 3600 * kSec);
  EXPECT_EQ(ParseBackupSchedule("every 2s")->every_ns, 2 * kSec);
}

TEST_F(BackupScheduleTest, Daily) {
  EXPECT_EQ(Next("daily 02:30", "2026-11-22T01:00:00Z"), "2026-11-22T02:30:00.000Z");
  EXPECT_EQ(Next("daily 02:30", "2026-11-22T02:30:00Z"), "2026-11-23T02:30:00.000Z");
  EXPECT_EQ(Next("daily 00:00", "2026-12-31T23:59:00Z"), "2027-01-01T00:00:00.000Z");
}

TEST_F(BackupScheduleTest, Weekly) {
  // 2026-11-22 is a Sunday.
  EXPECT_EQ(Next("weekly sun 02:30", "2026-11-22T01:00:00Z"), "2026-11-22T02:30:00.000Z");
  EXPECT_EQ(Next("weekly sun 02:30", "2026-11-22T03:00:00Z"), "2026-11-29T02:30:00.000Z");
  EXPECT_EQ(Next("weekly Wednesday 23:00", "2026-11-22T03:00:00Z"), "2026-11-25T23:00:00.000Z");
  EXPECT_EQ(Next("weekly sat 10:00", "2026-11-28T10:00:00Z"), "2026-12-05T10:00:00.000Z");
}

TEST_F(BackupScheduleTest, MonthlyClampsToMonthEnd) {
  EXPECT_EQ(Next("monthly 1 02:30", "2026-11-22T01:00:00Z"), "2026-12-01T02:30:00.000Z");
  EXPECT_EQ(Next("monthly 31 12:00", "2026-11-22T01:00:00Z"), "2026-11-30T12:00:00.000Z");
  EXPECT_EQ(Next("monthly 31 12:00", "2026-11-30T13:00:00Z"), "2026-12-31T12:00:00.000Z");
  EXPECT_EQ(Next("monthly 30 08:00", "2027-02-01T00:00:00Z"), "2027-02-28T08:00:00.000Z");
  EXPECT_EQ(Next("monthly 29 08:00", "2028-02-01T00:00:00Z"), "2028-02-29T08:00:00.000Z");
  EXPECT_EQ(Next("monthly 15 08:00", "2026-12-20T00:00:00Z"), "2027-01-15T08:00:00.000Z");
}

TEST_F(BackupScheduleTest, Once) {
  EXPECT_EQ(Next("once 2026-11-22T10:00:00Z", "2026-11-22T09:00:00Z"), "2026-11-22T10:00:00.000Z");
  EXPECT_EQ(Next("once 2026-11-22T10:00:00Z", "2026-11-22T10:00:00Z"), "never");
}

TEST_F(BackupScheduleTest, LocalTime) {
  setenv("TZ", "UTC-2", 1);  // POSIX: two hours east of UTC, no DST
  tzset();
  EXPECT_EQ(Next("daily 02:30", "2026-11-22T01:00:00Z"), "2026-11-23T00:30:00.000Z");
}

TEST_F(BackupScheduleTest, MissedRunWhileDown) {
  auto missed = [&](const char* sched, const char* since, const char* now) {
    auto s = ParseBackupSchedule(sched);
    EXPECT_TRUE(s.ok());
    int64_t m = MissedRunNs(*s, At(since), At(now));
    return m < 0 ? std::string("none") : FormatRfc3339(m);
  };
  // Down from 01:00 to 03:00 across 02:30: that run is missed.
  EXPECT_EQ(missed("daily 02:30", "2026-11-22T01:00:00Z", "2026-11-22T03:00:00Z"), "2026-11-22T02:30:00.000Z");
  EXPECT_EQ(missed("daily 02:30", "2026-11-22T02:40:00Z", "2026-11-22T23:00:00Z"), "none");
  // Down three days: one catch-up run (the newest missed time), not three.
  EXPECT_EQ(missed("daily 02:30", "2026-11-19T05:00:00Z", "2026-11-22T03:00:00Z"), "2026-11-22T02:30:00.000Z");
  EXPECT_EQ(missed("weekly mon 01:00", "2026-11-22T00:00:00Z", "2026-11-23T00:59:00Z"), "none");
  EXPECT_EQ(missed("monthly 31 12:00", "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"), "2026-11-30T12:00:00.000Z");
  EXPECT_EQ(missed("every 6h", "2026-11-22T00:00:00Z", "2026-11-22T05:59:00Z"), "none");
  EXPECT_EQ(missed("every 6h", "2026-11-22T00:00:00Z", "2026-11-22T13:00:00Z"), "2026-11-22T12:00:00.000Z");
  EXPECT_EQ(missed("once 2026-11-22T10:00:00Z", "2026-11-22T09:00:00Z", "2026-11-22T11:00:00Z"),
            "2026-11-22T10:00:00.000Z");
  // Known (or last run) only after the time: not missed.
  EXPECT_EQ(missed("once 2026-11-22T10:00:00Z", "2026-11-22T10:30:00Z", "2026-11-22T11:00:00Z"), "none");
  EXPECT_EQ(MissedRunNs(*ParseBackupSchedule("daily 02:30"), 0, At("2026-11-22T03:00:00Z")), -1);
}

TEST_F(BackupScheduleTest, BadInputNamesTheProblem) {
  auto msg = [](const char* text) { return ParseBackupSchedule(text).status().message(); };
  EXPECT_NE(msg("").find("expected 'every DURATION'"), std::string::npos);
  EXPECT_NE(msg("hourly").find("expected"), std::string::npos);
  EXPECT_NE(msg("daily 25:00").find("hour 25 is out of range"), std::string::npos);
  EXPECT_NE(msg("daily 2:61").find("minute 61"), std::string::npos);
  EXPECT_NE(msg("daily noon").find("not HH:MM"), std::string::npos);
  EXPECT_NE(msg("weekly funday 02:00").find("day 'funday'"), std::string::npos);
  EXPECT_NE(msg("monthly 32 02:00").find("day of month 32"), std::string::npos);
  EXPECT_NE(msg("monthly 0 02:00").find("out of range"), std::string::npos);
  EXPECT_NE(msg("every").find("expected"), std::string::npos);
  EXPECT_FALSE(ParseBackupSchedule("every 6x").ok());
  EXPECT_NE(msg("every 0s").find("at least 1s"), std::string::npos);
  EXPECT_FALSE(ParseBackupSchedule("once yesterday").ok());
  EXPECT_NE(msg("daily 02:30 extra").find("schedule 'daily 02:30 extra'"), std::string::npos);
}

}  // namespace
}  // namespace continuum::agent
