// Covers the write protocol of src/repo/repository_blobs.cc and local_backend.cc:
// crashes at any step, kill -9, leftovers and a full disk leave a consistent repository.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include "continuum/repo/repository.h"
#include "repo/process_info.h"
#include "repo_test_util.h"

namespace continuum::repo {
namespace {

namespace fs = std::filesystem;
using testing::FaultBackend;
using testing::Pw;
using testing::RandomBytes;
using testing::SmallPacks;

class CrashSafetyTest : public testing::TempDirTest {
 protected:
  // Every listed point restores completely and check finds nothing wrong.
  void ExpectConsistent() {
    auto r = Repository::Open(repo_, Pw(), SmallPacks());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    auto list = (*r)->ListManifests();
    ASSERT_TRUE(list.ok());
    for (const auto& m : *list) {
      auto blobs = (*r)->ManifestBlobs(m);
      ASSERT_TRUE(blobs.ok()) << blobs.status().ToString();
      for (const auto& id : *blobs) ASSERT_TRUE((*r)->Get(id).ok()) << id.Hex();
    }
    auto rep = (*r)->Check(true);
    ASSERT_TRUE(rep.ok());
    EXPECT_TRUE(rep->ok()) << (rep->pack_problems.empty() ? "" : rep->pack_problems[0].problem);
    EXPECT_TRUE(Files("tmp").empty());
    points_seen_ = list->size();
  }

  // A backup-shaped workload: blobs, points, a forget.
  static Status Workload(Repository& r, int rounds) {
    std::vector<ManifestId> points;
    for (int round = 0; round < rounds; ++round) {
      std::vector<BlobId> ids;
      for (int i = 0; i < 12; ++i) {
        auto id = r.Put(BlobType::kData, RandomBytes(40000, round * 1000 + i % 9));
        if (!id.ok()) return id.status();
        ids.push_back(*id);
      }
      auto tree = r.PutTree({.refs = ids});
      if (!tree.ok()) return tree.status();
      auto m = r.SaveManifest({.time_ns = round, .roots = {*tree}});
      if (!m.ok()) return m.status();
      points.push_back(*m);
      if (round == 2) CONTINUUM_RETURN_IF_ERROR(r.DeleteManifest(points[0]));
    }
    return Status::Ok();
  }

  size_t points_seen_ = 0;
};

TEST_F(CrashSafetyTest, CrashAtEveryStepLeavesAConsistentRepository) {
  ASSERT_TRUE(Repository::Init(repo_, Pw(), testing::FastInit()).ok());
  for (int steps = 0;; ++steps) {
    auto fault = std::make_unique<FaultBackend>(std::make_unique<LocalBackend>(repo_));
    FaultBackend* f = fault.get();
    f->ops_until_crash = steps;
    auto r = Repository::Open(std::move(fault), Pw(), SmallPacks());
    if (!r.ok()) {  // crashed while taking the lock
      ASSERT_EQ(r.status().code(), StatusCode::kUnavailable);
      continue;
    }
    Status st = Workload(**r, 4);
    bool finished = !f->crashed;
    r->reset();  // the "dead" process's buffers are dropped, as in a crash
    ExpectConsistent();
    if (finished) {
      ASSERT_TRUE(st.ok()) << st.ToString();
      EXPECT_GE(points_seen_, 3u);  // earlier crashed runs may have saved points too
      break;
    }
    ASSERT_LT(steps, 400);
  }
}

TEST_F(CrashSafetyTest, KillDashNineDuringBackups) {
  ASSERT_TRUE(Repository::Init(repo_, Pw(), testing::FastInit()).ok());
  for (int iter = 0; iter < 6; ++iter) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto r = Repository::Open(repo_, Pw(), SmallPacks());
      if (!r.ok()) ::_exit(2);
      for (int i = 0;; ++i) {
        if (!Workload(**r, 3 + i % 3).ok()) ::_exit(3);
      }
    }
    ::usleep(20000 + iter * 37000);
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with " << WEXITSTATUS(status);
    // The dead writer's lock is stale (its pid is gone), its temp files are cleaned.
    ExpectConsistent();
  }
  EXPECT_GT(points_seen_, 0u);
}

TEST_F(CrashSafetyTest, LeftoversAreIgnoredAndCleaned) {
  auto r = InitAndOpen();
  auto id = r->Put(BlobType::kData, RandomBytes(5000, 1));
  ASSERT_TRUE(r->SaveManifest({.roots = {*id}}).ok());
  r.reset();
  // Temp files of a dead writer on this host, of a long-gone other host, and of a
  // live writer elsewhere (kept).
  fs::path tmp = fs::path(repo_) / "tmp";
  std::ofstream(tmp / ("999999-0123456789abcdef-" + HostName())) << "half a pack";
  std::ofstream(tmp / "1234-0123456789abcdef-far-away") << "old";
  fs::last_write_time(tmp / "1234-0123456789abcdef-far-away", fs::file_time_type::clock::now() - std::chrono::hours(5));
  std::ofstream(tmp / "1234-fedcba9876543210-far-away") << "in flight";
  // Foreign names in repository directories are not repository files.
  std::ofstream(fs::path(repo_) / "data" / "ab" / "notes.txt") << "x";
  std::ofstream(fs::path(repo_) / "index" / "abc.tmp") << "x";
  std::ofstream(fs::path(repo_) / "manifests" / (std::string(63, 'a') + "g")) << "x";
  r = Reopen();
  ASSERT_TRUE(r);
  EXPECT_EQ(Files("tmp").size(), 1u);
  EXPECT_EQ(r->ListManifests()->size(), 1u);
  auto rep = r->Check(true);
  ASSERT_TRUE(rep.ok());
  EXPECT_TRUE(rep->ok());
  EXPECT_TRUE(rep->unindexed_packs.empty());
}

TEST_F(CrashSafetyTest, PartialFilesUnderFinalNames) {
  // What a non-atomic copy (or a filesystem without ordered rename) could leave:
  // a truncated pack nobody references, and a truncated index file.
  auto r = InitAndOpen();
  auto a = r->Put(BlobType::kData, RandomBytes(50000, 1));
  ASSERT_TRUE(r->SaveManifest({.roots = {*a}}).ok());
  auto b = r->Put(BlobType::kData, RandomBytes(50000, 2));
  ASSERT_TRUE(r->Flush().ok());
  r.reset();
  auto packs = Files("data");
  auto indexes = Files("index");
  ASSERT_EQ(packs.size(), 2u);
  ASSERT_EQ(indexes.size(), 2u);
  // Drop b's index file (the newer one) and truncate its pack: an unreferenced
  // partial pack.
  fs::path second_pack;
  std::sort(indexes.begin(), indexes.end(),
            [](const fs::path& x, const fs::path& y) { return fs::last_write_time(x) < fs::last_write_time(y); });
  fs::remove(indexes[1]);
  r = Reopen();
  EXPECT_FALSE(r->Has(*b));
  EXPECT_TRUE(r->Has(*a));
  auto rep = r->Check(false);
  ASSERT_TRUE(rep.ok());
  ASSERT_EQ(rep->unindexed_packs.size(), 1u);
  second_pack = rep->unindexed_packs[0];
  r.reset();
  fs::resize_file(second_pack, fs::file_size(second_pack) - 7);
  r = Reopen(SmallPacks(LockMode::kExclusive));
  rep = r->Check(true);
  ASSERT_TRUE(rep.ok());
  EXPECT_TRUE(rep->ok());  // nothing references it
  auto rebuilt = r->RebuildIndex();
  ASSERT_TRUE(rebuilt.ok());
  ASSERT_EQ(rebuilt->bad_packs.size(), 1u);
  EXPECT_EQ(rebuilt->bad_packs[0].pack, second_pack.string());
  EXPECT_TRUE(r->Get(*a).ok());
  // Storing b again works: the damaged copy is not in the index.
  ASSERT_TRUE(r->Put(BlobType::kData, RandomBytes(50000, 2)).ok());
  ASSERT_TRUE(r->Flush().ok());
  EXPECT_TRUE(r->Get(*b).ok());
}

TEST_F(CrashSafetyTest, DiskFullIsAClearErrorAndCorruptsNothing) {
  ASSERT_TRUE(Repository::Init(repo_, Pw(), testing::FastInit()).ok());
  auto fault = std::make_unique<FaultBackend>(std::make_unique<LocalBackend>(repo_));
  FaultBackend* f = fault.get();
  auto r = Repository::Open(std::move(fault), Pw(), SmallPacks());
  ASSERT_TRUE(r.ok());
  auto first = (*r)->Put(BlobType::kData, RandomBytes(1000, 1));
  auto point = (*r)->SaveManifest({.roots = {*first}});
  ASSERT_TRUE(point.ok());
  f->write_budget = 600 << 10;
  Status st;
  for (int i = 0; i < 100 && st.ok(); ++i) st = (*r)->Put(BlobType::kData, RandomBytes(100000, 10 + i)).status();
  if (st.ok()) st = (*r)->Flush();
  ASSERT_EQ(st.code(), StatusCode::kResourceExhausted) << st.ToString();
  EXPECT_NE(st.message().find(repo_ + "/data/"), std::string::npos) << st.message();
  // Freeing space lets the same session finish: the unsealed pack was kept.
  f->write_budget = -1;
  ASSERT_TRUE((*r)->Flush().ok());
  r->reset();
  ExpectConsistent();
}

TEST_F(CrashSafetyTest, DiskFullOnARealFilesystem) {
  fs::path mnt = dir_ / "mnt";
  fs::create_directories(mnt);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=3m") != 0) GTEST_SKIP() << "cannot mount tmpfs (needs root)";
  struct Unmount {
    fs::path p;
    ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); }
  } unmount{mnt};
  repo_ = (mnt / "repo").string();
  auto r = InitAndOpen();
  ASSERT_TRUE(r);
  auto first = r->Put(BlobType::kData, RandomBytes(1000, 1));
  auto point = r->SaveManifest({.roots = {*first}});
  ASSERT_TRUE(point.ok());
  Status st;
  for (int i = 0; i < 200 && st.ok(); ++i) st = r->Put(BlobType::kData, RandomBytes(100000, 10 + i)).status();
  ASSERT_EQ(st.code(), StatusCode::kResourceExhausted) << st.ToString();
  EXPECT_NE(st.message().find(repo_ + "/data/"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("No space left on device"), std::string::npos) << st.message();
  r.reset();
  ExpectConsistent();  // includes: no temp file left behind
  auto again = Reopen();
  ASSERT_TRUE(again);
  auto blobs = again->ManifestBlobs(*point);
  ASSERT_TRUE(blobs.ok());
}

}  // namespace
}  // namespace continuum::repo
