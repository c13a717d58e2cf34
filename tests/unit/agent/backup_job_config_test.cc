// Covers src/agent/backup_job_config.cc and the child command lines of
// src/agent/backup_scheduler.cc.
#include "agent/backup_job_config.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>

namespace continuum::agent {
namespace {

class BackupJobConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/backup-job-config-XXXXXX";
    dir_ = mkdtemp(tmpl);
    std::ofstream(dir_ + "/pw") << "secret\n";
  }
  void TearDown() override {
    ::unlink((dir_ + "/pw").c_str());
    ::rmdir(dir_.c_str());
  }
  Result<std::vector<BackupJob>> Parse(const std::string& job_body) {
    std::string text = "[[backup]]\nrepo = \"" + dir_ + "\"\npassword_file = \"" + dir_ + "/pw\"\n" + job_body;
    return ParseBackupJobs(toml::parse(text));
  }
  std::string Error(const std::string& job_body) {
    auto r = Parse(job_body);
    return r.ok() ? "ok" : r.status().message();
  }
  std::string dir_;
};

TEST_F(BackupJobConfigTest, FullJob) {
  auto jobs = Parse(
      "name = \"db\"\nsource = \"volume:db\"\nkind = \"full\"\ntags = [\"a\", \"b\"]\n"
      "schedule = \"weekly sun 02:30\"\nforget = { keep_daily = 7, keep_within = \"30d\", prune = true }\n");
  ASSERT_TRUE(jobs.ok()) << jobs.status().message();
  ASSERT_EQ(jobs->size(), 1u);
  const BackupJob& j = (*jobs)[0];
  EXPECT_EQ(j.source_type, "volume");
  EXPECT_EQ(j.paths, std::vector<std::string>{"db"});
  EXPECT_EQ(j.schedule.kind, ScheduleKind::kWeekly);
  ASSERT_TRUE(j.forget.has_value());
  EXPECT_EQ(j.forget->keep_daily, 7u);
  EXPECT_TRUE(j.forget->prune);
  auto args = BackupJobArgs(j, "/run/a.sock");
  std::vector<std::string> want = {"--control",       "/run/a.sock", "--json", "backup", "volume", "db", "--repo", dir_,
                                   "--password-file", dir_ + "/pw",  "--kind", "full",   "--tag",  "a",  "--tag",  "b"};
  EXPECT_EQ(args, want);
  std::vector<std::string> forget = {"--json",       "forget", "--repo",        dir_,  "--password-file", dir_ + "/pw",
                                     "--keep-daily", "7",      "--keep-within", "30d", "--prune"};
  EXPECT_EQ(ForgetJobArgs(j), forget);
}

TEST_F(BackupJobConfigTest, SeveralPaths) {
  auto jobs = Parse("name = \"etc\"\npaths = [\"/etc\", \"/home\"]\nexclude = [\"*.tmp\"]\nschedule = \"every 6h\"\n");
  ASSERT_TRUE(jobs.ok()) << jobs.status().message();
  const BackupJob& j = (*jobs)[0];
  EXPECT_EQ(j.source, "path:/etc,/home");
  auto args = BackupJobArgs(j, "ignored");
  EXPECT_EQ(args[0], "--json");
  EXPECT_EQ(args[2], "path");
  EXPECT_EQ(args[3], "/etc");
  EXPECT_EQ(args[4], "/home");
  EXPECT_EQ(args.back(), "*.tmp");
}

TEST_F(BackupJobConfigTest, ErrorsNameJobAndKey) {
  EXPECT_EQ(Error("source = \"path:/etc\"\nschedule = \"daily 02:00\"\n"),
            "backup job [[backup]] #1: name: is required");
  EXPECT_NE(Error("name = \"n\"\nsource = \"path:/etc\"\nschedule = \"daily 24:00\"\n")
                .find("backup job 'n': schedule: schedule 'daily 24:00': hour 24"),
            std::string::npos);
  EXPECT_EQ(Error("name = \"n\"\nsource = \"path:/etc\"\nschedule = \"daily 02:00\"\ncolour = 1\n"),
            "backup job 'n': colour: unknown key");
  EXPECT_NE(Error("name = \"n\"\nsource = \"disk:/x\"\nschedule = \"daily 02:00\"\n").find("'n': source:"),
            std::string::npos);
  EXPECT_NE(Error("name = \"n\"\nsource = \"path:etc\"\nschedule = \"daily 02:00\"\n").find("absolute path"),
            std::string::npos);
  EXPECT_NE(
      Error("name = \"n\"\nsource = \"path:/etc\"\nkind = \"weekly\"\nschedule = \"daily 02:00\"\n").find("'n': kind:"),
      std::string::npos);
  EXPECT_EQ(Error("name = \"n\"\nsource = \"path:/etc\"\n"), "backup job 'n': schedule: is required");
  EXPECT_EQ(Error("name = \"n\"\nsource = \"path:/etc\"\nschedule = \"daily 02:00\"\nforget = { prune = true }\n"),
            "backup job 'n': forget: needs at least one keep_* rule");
  EXPECT_EQ(Error("name = \"n\"\nsource = \"path:/etc\"\nschedule = \"daily 02:00\"\nforget = { keep_hourly = 3 }\n"),
            "backup job 'n': forget.keep_hourly: unknown key");
  EXPECT_EQ(Error("name = \"a b\"\nsource = \"path:/etc\"\nschedule = \"daily 02:00\"\n"),
            "backup job [[backup]] #1: name: 'a b' may hold only letters, digits, '.', '_' and '-'");
}

TEST_F(BackupJobConfigTest, MissingRepoAndPasswordFile) {
  auto text = [&](const std::string& repo, const std::string& pw) {
    return "[[backup]]\nname = \"n\"\nsource = \"path:/etc\"\nschedule = \"daily 02:00\"\nrepo = \"" + repo +
           "\"\npassword_file = \"" + pw + "\"\n";
  };
  auto r = ParseBackupJobs(toml::parse(text(dir_ + "/nope", dir_ + "/pw")));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("backup job 'n': repo: repository directory " + dir_ + "/nope"),
            std::string::npos);
  r = ParseBackupJobs(toml::parse(text(dir_, dir_ + "/nope")));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("backup job 'n': password_file: cannot read"), std::string::npos);
}

TEST_F(BackupJobConfigTest, DuplicateNames) {
  std::string one = "[[backup]]\nname = \"n\"\nsource = \"path:/etc\"\nschedule = \"daily 02:00\"\nrepo = \"" + dir_ +
                    "\"\npassword_file = \"" + dir_ + "/pw\"\n";
  auto r = ParseBackupJobs(toml::parse(one + one));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "backup job 'n': name: another job has the same name");
}

TEST_F(BackupJobConfigTest, NoJobs) {
  auto r = ParseBackupJobs(toml::parse("log_level = \"info\"\n"));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
}

}  // namespace
}  // namespace continuum::agent
