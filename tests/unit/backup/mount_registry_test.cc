// Covers src/backup/mount_registry.cc: records round-trip, entries of dead
// processes are removed as stale, live ones are kept, and a close of an
// unknown device or directory is kNotFound (so the CLI asks the agent).
#include "backup/mount_registry.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

namespace continuum::backup {
namespace {

namespace fs = std::filesystem;

class MountRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("continuum-mount-reg-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  MountRecord Record(const std::string& id, int pid) {
    return {.id = id,
            .kind = "path",
            .point = std::string(64, 'a'),
            .repo = "/srv/repo",
            .device = "",
            .mountpoint = "/nonexistent/" + id,
            .writable = false,
            .pid = pid,
            .start_ticks = StartTicksOf(pid),
            .created_ns = 42};
  }

  fs::path dir_;
};

TEST_F(MountRegistryTest, RecordsRoundTrip) {
  MountRegistry reg(dir_.string());
  MountRecord r = Record("abc-1", ::getpid());
  ASSERT_TRUE(reg.Save(r).ok());
  auto all = reg.LoadAll();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].ToJson(), r.ToJson());
  ASSERT_TRUE(reg.Remove("abc-1").ok());
  EXPECT_TRUE(reg.LoadAll()->empty());
  EXPECT_TRUE(reg.Remove("abc-1").ok());  // idempotent
}

TEST_F(MountRegistryTest, DeadProcessesAreStaleAndRemoved) {
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  MountRegistry reg(dir_.string());
  MountRecord dead = Record("dead-1", child);
  dead.start_ticks = 1;  // whatever it was, the pid no longer runs it
  int status;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(reg.Save(dead).ok());
  ASSERT_TRUE(reg.Save(Record("live-1", ::getpid())).ok());
  auto live = reg.LoadLive();
  ASSERT_TRUE(live.ok());
  ASSERT_EQ(live->size(), 1u);
  EXPECT_EQ((*live)[0].id, "live-1");
  EXPECT_EQ(reg.LoadAll()->size(), 1u);  // the dead entry is gone from disk
}

TEST_F(MountRegistryTest, ProcessIdentitySeesThroughPidReuse) {
  EXPECT_TRUE(ProcessAlive(::getpid(), 0));
  EXPECT_TRUE(ProcessAlive(::getpid(), StartTicksOf(::getpid())));
  EXPECT_FALSE(ProcessAlive(::getpid(), StartTicksOf(::getpid()) + 1));
  EXPECT_FALSE(ProcessAlive(0, 0));
}

TEST_F(MountRegistryTest, FindOfAnUnknownTargetIsNotFound) {
  MountRegistry reg(dir_.string());
  ASSERT_TRUE(reg.Save(Record("live-2", ::getpid())).ok());
  auto found = FindMount("/dev/loop12345", dir_.string());
  EXPECT_EQ(found.status().code(), StatusCode::kNotFound);
  found = FindMount("/nonexistent/live-2", dir_.string());
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(found->id, "live-2");
}

}  // namespace
}  // namespace continuum::backup
