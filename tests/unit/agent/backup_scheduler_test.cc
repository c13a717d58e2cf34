// Covers src/agent/backup_scheduler.cc with a stand-in for the agent's binary:
// a shell script that prints what `continuum --json backup/forget` would.
#include "continuum/agent/backup_scheduler.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <thread>

#include "continuum/common/time_util.h"

namespace continuum::agent {
namespace {

class BackupSchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/backup-scheduler-XXXXXX";
    dir_ = mkdtemp(tmpl);
    events_ = std::make_unique<EventLog>(dir_ + "/events.jsonl");
  }
  void TearDown() override { (void)!std::system(("rm -rf " + dir_).c_str()); }

  // A fake binary: its arguments go to args.log, then it runs `body`.
  std::string Script(const std::string& name, const std::string& body) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << "#!/bin/sh\necho \"$@\" >> " << dir_ << "/args.log\n" << body << "\n";
    ::chmod(path.c_str(), 0755);
    return path;
  }
  BackupJob Job(const std::string& name, const std::string& schedule) {
    BackupJob j;
    j.name = name;
    j.source = "path:/etc";
    j.source_type = "path";
    j.paths = {"/etc"};
    j.repo = dir_;
    j.password_file = dir_ + "/pw";
    j.schedule = *ParseBackupSchedule(schedule);
    return j;
  }
  std::vector<std::string> Kinds() const {
    std::vector<std::string> out;
    for (const auto& e : events_->Since(0)) out.push_back(e.kind);
    return out;
  }
  template <typename Pred>
  bool WaitFor(Pred pred, int seconds = 10) {
    for (int i = 0; i < seconds * 20; ++i) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  std::string dir_;
  std::unique_ptr<EventLog> events_;
};

TEST_F(BackupSchedulerTest, RunNowReportsPointAndRunsForget) {
  std::string exe = Script("ok.sh",
                           "case \"$2\" in forget) echo '{\"removed\": []}';; "
                           "*) echo '{\"id\": \"abc123\", \"kind\": \"full\", \"bytes_read\": 42}';; esac");
  BackupJob job = Job("j", "daily 03:00");
  job.forget = ForgetPolicy{.keep_last = 2, .prune = true};
  BackupScheduler s({job}, {.exe = exe}, events_.get());
  s.Start();
  ASSERT_TRUE(s.RunNow("j").ok());
  ASSERT_TRUE(WaitFor([&] { return !s.List()[0]["last_result"].is_null(); }));
  auto j = s.List()[0];
  EXPECT_EQ(j["last_result"]["status"], "ok");
  EXPECT_EQ(j["last_result"]["point"], "abc123");
  EXPECT_TRUE(j["last_result"].contains("forget"));
  EXPECT_FALSE(j["running"].get<bool>());
  EXPECT_FALSE(j["next_run"].is_null());
  EXPECT_FALSE(s.RunNow("nope").ok());
  s.Stop();
  EXPECT_EQ(Kinds(), (std::vector<std::string>{"backup_job_started", "backup_job_done"}));
  std::ifstream log(dir_ + "/args.log");
  std::string backup_line, forget_line;
  std::getline(log, backup_line);
  std::getline(log, forget_line);
  EXPECT_EQ(backup_line, "--json backup path /etc --repo " + dir_ + " --password-file " + dir_ + "/pw");
  EXPECT_EQ(forget_line, "--json forget --repo " + dir_ + " --password-file " + dir_ + "/pw --keep-last 2 --prune");
}

TEST_F(BackupSchedulerTest, StateSurvivesARestartAndMissedRunsCatchUp) {
  std::string exe = Script("ok.sh", "echo '{\"id\": \"p1\", \"kind\": \"full\"}'");
  const std::string state = dir_ + "/backup-jobs.json";
  {
    BackupScheduler s({Job("j", "daily 03:00")}, {.exe = exe, .state_file = state}, events_.get());
    s.Start();
    ASSERT_TRUE(s.RunNow("j").ok());
    ASSERT_TRUE(WaitFor([&] { return !s.List()[0]["last_result"].is_null(); }));
    s.Stop();
  }
  {
    // A restart keeps the last run and its result, and does not run again.
    BackupScheduler s({Job("j", "daily 03:00")}, {.exe = exe, .state_file = state}, events_.get());
    s.Start();
    auto j = s.List()[0];
    EXPECT_EQ(j["last_result"]["point"], "p1");
    EXPECT_FALSE(j["last_run"].is_null());
    EXPECT_FALSE(j["due"].get<bool>());
    s.Stop();
  }
  // The state says the job was known and last ran two days ago: a daily time
  // passed while the agent was down, so it runs once at start.
  const int64_t two_days_ago = WallNowNs() - 2 * 86400 * 1'000'000'000LL;
  std::ofstream(state) << "{\"version\": 1, \"jobs\": {\"j\": {\"known_since_ns\": " << two_days_ago
                       << ", \"last_run_ns\": " << two_days_ago << "}}}";
  BackupScheduler s({Job("j", "daily 03:00")}, {.exe = exe, .state_file = state}, events_.get());
  s.Start();
  ASSERT_TRUE(WaitFor([&] {
    auto r = s.List()[0]["last_run"];
    return r.is_string() && *ParseRfc3339(r.get<std::string>()) > two_days_ago;
  }));
  s.Stop();
  auto kinds = Kinds();
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "backup_job_catch_up"), kinds.end());
  // A damaged state file is a warning, not a failure to start.
  std::ofstream(state) << "{not json";
  BackupScheduler s2({Job("j", "daily 03:00")}, {.exe = exe, .state_file = state}, events_.get());
  s2.Start();
  EXPECT_TRUE(s2.List()[0]["last_result"].is_null());
  s2.Stop();
}

TEST_F(BackupSchedulerTest, FailureCarriesTheChildsMessage) {
  std::string exe = Script("fail.sh", "echo '{\"error\": {\"code\": \"x\", \"message\": \"wrong password\"}}'; exit 1");
  BackupScheduler s({Job("j", "every 1s")}, {.exe = exe}, events_.get());
  s.Start();
  ASSERT_TRUE(WaitFor([&] { return !s.List()[0]["last_result"].is_null(); }));
  auto r = s.List()[0]["last_result"];
  EXPECT_EQ(r["status"], "failed");
  EXPECT_EQ(r["message"], "wrong password");
  EXPECT_EQ(r["exit_code"], 1);
  s.Stop();
  auto ev = events_->Since(0);
  ASSERT_GE(ev.size(), 2u);
  EXPECT_EQ(ev[1].kind, "backup_job_failed");
  EXPECT_NE(ev[1].message.find("(exit 1): wrong password"), std::string::npos) << ev[1].message;
}

TEST_F(BackupSchedulerTest, StillRunningSkipsAndStopEndsTheChild) {
  std::string exe = Script("slow.sh", "exec sleep 30");
  BackupScheduler s({Job("j", "every 1s")}, {.exe = exe}, events_.get());
  s.Start();
  ASSERT_TRUE(WaitFor([&] {
    for (const auto& k : Kinds()) {
      if (k == "backup_job_skipped") return true;
    }
    return false;
  }));
  EXPECT_FALSE(s.RunNow("j").ok());  // already running
  auto t0 = std::chrono::steady_clock::now();
  s.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  auto ev = events_->Since(0);
  EXPECT_EQ(ev.back().kind, "backup_job_failed");
  EXPECT_NE(ev.back().message.find("agent is shutting down"), std::string::npos) << ev.back().message;
}

TEST_F(BackupSchedulerTest, OneJobPerRepository) {
  std::string exe = Script("slowish.sh", "sleep 1; echo '{\"id\": \"p\", \"kind\": \"full\"}'");
  BackupScheduler s({Job("a", "daily 03:00"), Job("b", "daily 03:00")}, {.exe = exe}, events_.get());
  s.Start();
  ASSERT_TRUE(s.RunNow("a").ok());
  ASSERT_TRUE(s.RunNow("b").ok());
  ASSERT_TRUE(WaitFor([&] {
    auto l = s.List();
    return !l[0]["last_result"].is_null() && !l[1]["last_result"].is_null();
  }));
  s.Stop();
  // Sequential: a starts, a done, b starts, b done.
  EXPECT_EQ(Kinds(), (std::vector<std::string>{"backup_job_started", "backup_job_done", "backup_job_started",
                                               "backup_job_done"}));
}

}  // namespace
}  // namespace continuum::agent
