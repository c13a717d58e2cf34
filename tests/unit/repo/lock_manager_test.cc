// Covers src/repo/lock_manager.cc: conflicts, staleness, refresh.
#include "repo/lock_manager.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include "continuum/common/time_util.h"
#include "repo/process_info.h"
#include "repo_test_util.h"

namespace continuum::repo {
namespace {

namespace fs = std::filesystem;
using testing::Pw;

class LockManagerTest : public testing::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    backend_ = std::make_unique<LocalBackend>(repo_);
    ASSERT_TRUE(backend_->Create().ok());
  }
  // Plants a lock file as another process would have written it.
  void Plant(const std::string& host, uint32_t pid, uint64_t ticks, int64_t time_ns, LockMode mode) {
    LockRecord rec{mode, host, pid, ticks, time_ns};
    BlobId name;
    name.bytes[0] = static_cast<uint8_t>(++planted_);
    ASSERT_TRUE(backend_->Write(FileKind::kLock, name.Hex(), LockManager::Encode(rec), true).ok());
  }
  size_t LockCount() { return backend_->List(FileKind::kLock)->size(); }
  // A pid that is certainly not running: a child that has exited and been reaped.
  static pid_t DeadPid() {
    pid_t pid = ::fork();
    if (pid == 0) ::_exit(0);
    ::waitpid(pid, nullptr, 0);
    return pid;
  }

  std::unique_ptr<LocalBackend> backend_;
  int planted_ = 0;
};

TEST_F(LockManagerTest, SharedLocksCoexistExclusiveDoesNot) {
  LockManager a(backend_.get(), {});
  LockManager b(backend_.get(), {});
  LockManager c(backend_.get(), {});
  ASSERT_TRUE(a.Acquire(LockMode::kShared).ok());
  ASSERT_TRUE(b.Acquire(LockMode::kShared).ok());
  Status st = c.Acquire(LockMode::kExclusive);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("is locked (shared) by " + HostName()), std::string::npos) << st.message();
  EXPECT_EQ(LockCount(), 2u);  // the loser left nothing behind
  ASSERT_TRUE(a.Release().ok());
  ASSERT_TRUE(b.Release().ok());
  ASSERT_TRUE(c.Acquire(LockMode::kExclusive).ok());
  EXPECT_EQ(a.Acquire(LockMode::kShared).code(), StatusCode::kUnavailable);
}

TEST_F(LockManagerTest, LockOfDeadProcessOnThisHostIsStale) {
  Plant(HostName(), static_cast<uint32_t>(DeadPid()), 0, WallNowNs(), LockMode::kExclusive);
  LockManager m(backend_.get(), {});
  ASSERT_TRUE(m.Acquire(LockMode::kExclusive).ok());
  EXPECT_EQ(LockCount(), 1u);  // the stale lock was removed
}

TEST_F(LockManagerTest, ReusedPidIsSeenThroughStartTime) {
  // Our own pid but another start time: the holder died and the pid was reused.
  uint32_t me = static_cast<uint32_t>(::getpid());
  Plant(HostName(), me, ProcessStartTicks(::getpid()) + 12345, WallNowNs(), LockMode::kExclusive);
  LockManager m(backend_.get(), {.host = HostName(), .pid = 1, .start_ticks = 1});
  EXPECT_TRUE(m.Acquire(LockMode::kExclusive).ok());
}

TEST_F(LockManagerTest, LiveProcessOnThisHostBlocks) {
  Plant(HostName(), 1, ProcessStartTicks(1), WallNowNs(), LockMode::kExclusive);  // init is alive
  LockManager m(backend_.get(), {});
  Status st = m.Acquire(LockMode::kShared);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("locked exclusively by"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("pid 1 "), std::string::npos) << st.message();
}

TEST_F(LockManagerTest, OtherHostLockGoesStaleAfterTimeout) {
  int64_t now = WallNowNs();
  Plant("other-host", 4242, 7, now - 10ll * 60 * 1000000000, LockMode::kExclusive);  // 10 minutes old
  LockManager fresh(backend_.get(), {.stale_ns = 30ll * 60 * 1000000000});
  EXPECT_EQ(fresh.Acquire(LockMode::kShared).code(), StatusCode::kUnavailable);
  // An injected clock 40 minutes later: the holder stopped refreshing long ago.
  LockManager later(backend_.get(), {.clock = [now] { return now + 40ll * 60 * 1000000000; }});
  EXPECT_TRUE(later.Acquire(LockMode::kExclusive).ok());
  EXPECT_EQ(LockCount(), 1u);
}

TEST_F(LockManagerTest, UndecodableLockIsIgnored) {
  BlobId name;
  name.bytes[5] = 9;
  std::vector<uint8_t> junk = {'n', 'o', 'p', 'e'};
  ASSERT_TRUE(backend_->Write(FileKind::kLock, name.Hex(), junk, true).ok());
  LockManager m(backend_.get(), {});
  EXPECT_TRUE(m.Acquire(LockMode::kExclusive).ok());
}

TEST_F(LockManagerTest, RefreshRewritesAndDetectsRemoval) {
  int64_t t = 1000;
  LockManager m(backend_.get(), {.refresh_ns = 100, .clock = [&t] { return t; }});
  ASSERT_TRUE(m.Acquire(LockMode::kShared).ok());
  auto names = backend_->List(FileKind::kLock);
  ASSERT_EQ(names->size(), 1u);
  t = 1200;
  ASSERT_TRUE(m.RefreshIfDue().ok());
  auto rec = LockManager::Decode(*backend_->Read(FileKind::kLock, (*names)[0], 4096), "lock");
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->time_ns, 1200);
  ASSERT_TRUE(backend_->Remove(FileKind::kLock, (*names)[0]).ok());  // judged stale by someone
  t = 1400;
  EXPECT_EQ(m.RefreshIfDue().code(), StatusCode::kFailedPrecondition);
}

TEST_F(LockManagerTest, RepositoryOpenHonoursLocks) {
  ASSERT_TRUE(Repository::Init(repo_ + "2", Pw(), testing::FastInit()).ok());
  std::string path = repo_ + "2";
  auto a = Repository::Open(path, Pw(), testing::SmallPacks(LockMode::kExclusive));
  ASSERT_TRUE(a.ok());
  auto b = Repository::Open(path, Pw(), testing::SmallPacks(LockMode::kShared));
  EXPECT_EQ(b.status().code(), StatusCode::kUnavailable);
  auto c = Repository::Open(path, Pw(), testing::SmallPacks(LockMode::kNone));
  EXPECT_TRUE(c.ok());
  a->reset();
  EXPECT_TRUE(Repository::Open(path, Pw(), testing::SmallPacks(LockMode::kShared)).ok());
  fs::remove_all(path);
}

}  // namespace
}  // namespace continuum::repo
