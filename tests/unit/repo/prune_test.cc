// Covers src/repo/repository_prune.cc and repository_pins.cc: prune frees what
// no point needs, keeps every remaining point byte-identical, and a crash at any
// step of it leaves a consistent repository; pins survive reopening.
#include <gtest/gtest.h>

#include <map>

#include "continuum/repo/repository.h"
#include "repo_test_util.h"

namespace continuum::repo {
namespace {

namespace fs = std::filesystem;
using testing::FaultBackend;
using testing::Pw;
using testing::RandomBytes;
using testing::SmallPacks;

constexpr size_t kBlobBytes = 40000;

class PruneTest : public testing::TempDirTest {
 protected:
  // A point whose data blobs are RandomBytes(kBlobBytes, seed) for each seed.
  ManifestId MakePoint(Repository& r, const std::vector<uint64_t>& seeds, int64_t time_ns) {
    std::vector<BlobId> ids;
    for (uint64_t seed : seeds) {
      auto id = r.Put(BlobType::kData, RandomBytes(kBlobBytes, seed));
      EXPECT_TRUE(id.ok());
      ids.push_back(*id);
    }
    auto tree = r.PutTree({.refs = ids});
    EXPECT_TRUE(tree.ok());
    auto m = r.SaveManifest({.time_ns = time_ns, .roots = {*tree}});
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    seeds_[*m] = seeds;
    return *m;
  }

  // Three points sharing some data, the middle one forgotten: its own blobs
  // (seeds 200-219) are garbage, spread over packs that also hold used blobs.
  void BuildWithGarbage(Repository& r) {
    std::vector<uint64_t> a, b, c;
    for (uint64_t i = 0; i < 20; ++i) a.push_back(100 + i);
    for (uint64_t i = 0; i < 20; ++i) b.push_back(i % 2 ? 200 + i : 100 + i);
    for (uint64_t i = 0; i < 20; ++i) c.push_back(300 + i);
    MakePoint(r, a, 1);
    ManifestId mb = MakePoint(r, b, 2);
    MakePoint(r, c, 3);
    // Blobs of b interleaved with those of c in the same packs: partly used packs.
    std::vector<uint64_t> mixed;
    for (uint64_t i = 0; i < 20; ++i) mixed.push_back(i % 2 ? 400 + i : 500 + i);
    ManifestId md = MakePoint(r, mixed, 4);
    std::vector<uint64_t> keep_half;
    for (uint64_t i = 0; i < 20; i += 2) keep_half.push_back(500 + i);
    MakePoint(r, keep_half, 5);
    ASSERT_TRUE(r.DeleteManifest(mb).ok());
    ASSERT_TRUE(r.DeleteManifest(md).ok());
    seeds_.erase(mb);
    seeds_.erase(md);
  }

  // Every remaining point reads back exactly; check with read_data is clean.
  void ExpectPointsIntact(bool allow_unindexed = false) {
    auto r = Repository::Open(repo_, Pw(), SmallPacks());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    auto list = (*r)->ListManifests();
    ASSERT_TRUE(list.ok());
    ASSERT_EQ(list->size(), seeds_.size());
    for (const auto& m : *list) {
      ASSERT_TRUE(seeds_.count(m));
      auto blobs = (*r)->ManifestBlobs(m);
      ASSERT_TRUE(blobs.ok()) << blobs.status().ToString();
      auto manifest = (*r)->LoadManifest(m);
      ASSERT_TRUE(manifest.ok());
      auto tree = (*r)->GetTree(manifest->roots[0]);
      ASSERT_TRUE(tree.ok());
      ASSERT_EQ(tree->refs.size(), seeds_[m].size());
      for (size_t i = 0; i < tree->refs.size(); ++i) {
        auto data = (*r)->Get(tree->refs[i]);
        ASSERT_TRUE(data.ok()) << data.status().ToString();
        ASSERT_EQ(*data, RandomBytes(kBlobBytes, seeds_[m][i]));
      }
    }
    auto rep = (*r)->Check(true);
    ASSERT_TRUE(rep.ok());
    EXPECT_TRUE(rep->ok()) << (rep->pack_problems.empty() ? "" : rep->pack_problems[0].problem);
    if (!allow_unindexed) {
      EXPECT_TRUE(rep->unindexed_packs.empty());
    }
  }

  uint64_t DataBytes() {
    uint64_t n = 0;
    for (const auto& f : Files("data")) n += fs::file_size(f);
    return n;
  }

  std::map<ManifestId, std::vector<uint64_t>> seeds_;
};

TEST_F(PruneTest, FreesUnusedPacksAndKeepsEveryPointIntact) {
  auto r = InitAndOpen(SmallPacks(LockMode::kExclusive));
  BuildWithGarbage(*r);
  uint64_t before = DataBytes();
  auto dry = r->Prune({.repack_unused_fraction = 0.0, .dry_run = true});
  ASSERT_TRUE(dry.ok()) << dry.status().ToString();
  EXPECT_GT(dry->packs_deleted, 0u);
  EXPECT_EQ(DataBytes(), before);  // dry run changes nothing

  auto rep = r->Prune({.repack_unused_fraction = 0.0});
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_EQ(rep->points, 3u);
  EXPECT_GT(rep->packs_repacked, 0u);
  EXPECT_EQ(rep->blobs_removed, 22u);  // 10 data blobs each of b and the mixed point, and their trees
  EXPECT_EQ(rep->unused_bytes_kept, 0u);
  uint64_t after = DataBytes();
  EXPECT_LT(after, before);
  EXPECT_EQ(before - after, rep->bytes_freed());
  r.reset();
  ExpectPointsIntact();

  // Nothing left to do: a second prune changes nothing.
  auto again = Reopen(SmallPacks(LockMode::kExclusive));
  auto rep2 = again->Prune({.repack_unused_fraction = 0.0});
  ASSERT_TRUE(rep2.ok());
  EXPECT_EQ(rep2->packs_deleted, 0u);
  EXPECT_EQ(rep2->blobs_removed, 0u);
  EXPECT_EQ(DataBytes(), after);
}

TEST_F(PruneTest, ThresholdLeavesSlightlyUsedPacksAlone) {
  auto r = InitAndOpen(SmallPacks(LockMode::kExclusive));
  BuildWithGarbage(*r);
  auto rep = r->Prune({.repack_unused_fraction = 1.0});  // delete wholly unused packs only
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_EQ(rep->packs_repacked, 0u);
  EXPECT_EQ(rep->packs_written, 0u);
  EXPECT_GT(rep->unused_bytes_kept, 0u);
  r.reset();
  ExpectPointsIntact();
}

TEST_F(PruneTest, RefusesWithoutExclusiveLockInAppendOnlyAndOnDamagedPoints) {
  {
    auto r = InitAndOpen(SmallPacks(LockMode::kShared));
    MakePoint(*r, {1, 2, 3}, 1);
    auto rep = r->Prune();
    ASSERT_FALSE(rep.ok());
    EXPECT_EQ(rep.status().code(), StatusCode::kFailedPrecondition);
  }
  {
    auto r = Reopen(SmallPacks(LockMode::kExclusive));
    // Remove a pack a point needs: prune must not guess what that point needs.
    for (const auto& f : Files("data")) fs::remove(f);
    auto rep = r->Prune();
    ASSERT_FALSE(rep.ok());
    EXPECT_EQ(rep.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(rep.status().message().find("repo check"), std::string::npos) << rep.status().message();
    EXPECT_EQ(Files("index").size(), 1u);  // nothing was rewritten
  }
  fs::remove_all(repo_);
  auto r = InitAndOpen(SmallPacks(LockMode::kExclusive), /*append_only=*/true);
  auto rep = r->Prune();
  ASSERT_FALSE(rep.ok());
  EXPECT_EQ(rep.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(rep.status().message().find("append-only"), std::string::npos);
}

TEST_F(PruneTest, RemovesPacksLeftByCrashedWriters) {
  auto r = InitAndOpen(SmallPacks(LockMode::kExclusive));
  MakePoint(*r, {1, 2}, 1);
  // A writer that died after storing a pack but before its index: unindexed.
  auto fault = std::make_unique<FaultBackend>(std::make_unique<LocalBackend>(repo_));
  fault->ops_until_crash = 1;  // the pack, then nothing
  {
    OpenOptions o = SmallPacks(LockMode::kNone);
    auto w = Repository::Open(std::move(fault), Pw(), std::move(o));
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Put(BlobType::kData, RandomBytes(kBlobBytes, 77)).ok());
    EXPECT_FALSE((*w)->Flush().ok());
  }
  size_t packs = Files("data").size();
  auto rep = r->Prune();
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_EQ(rep->unindexed_packs_deleted, 1u);
  EXPECT_EQ(Files("data").size(), packs - 1);
  r.reset();
  ExpectPointsIntact();
}

TEST_F(PruneTest, CrashAtEveryStepOfPruneLeavesAConsistentRepository) {
  std::string base = (dir_ / "base").string();
  {
    auto r = InitAndOpen(SmallPacks(LockMode::kExclusive));
    BuildWithGarbage(*r);
  }
  fs::rename(repo_, base);
  for (int steps = 0;; ++steps) {
    fs::remove_all(repo_);
    fs::copy(base, repo_, fs::copy_options::recursive);
    auto fault = std::make_unique<FaultBackend>(std::make_unique<LocalBackend>(repo_));
    FaultBackend* f = fault.get();
    f->ops_until_crash = steps;
    auto r = Repository::Open(std::move(fault), Pw(), SmallPacks(LockMode::kExclusive));
    bool finished = false;
    if (r.ok()) {
      auto rep = (*r)->Prune({.repack_unused_fraction = 0.0});
      finished = !f->crashed;
      if (finished) {
        ASSERT_TRUE(rep.ok()) << rep.status().ToString();
      }
      r->reset();  // the "dead" process: its lock stays behind
    }
    // Its pid is ours (alive), so its lock would not look stale: remove it as
    // the stale-lock rule would for a dead process.
    for (const auto& l : Files("locks")) fs::remove(l);
    ExpectPointsIntact(/*allow_unindexed=*/true);
    // A later prune finishes the job.
    auto again = Reopen(SmallPacks(LockMode::kExclusive));
    ASSERT_TRUE(again);
    auto rep = again->Prune({.repack_unused_fraction = 0.0});
    ASSERT_TRUE(rep.ok()) << "after crash at step " << steps << ": " << rep.status().ToString();
    again.reset();
    ExpectPointsIntact();
    if (finished) {
      // Lock, repacked packs, index, old index, old packs: many crash points were tried.
      EXPECT_GT(steps, 6);
      break;
    }
    ASSERT_LT(steps, 200);
  }
}

TEST_F(PruneTest, PinsSurviveReopenAndAreAuthenticated) {
  auto r = InitAndOpen();
  ManifestId a = MakePoint(*r, {1}, 1);
  ManifestId b = MakePoint(*r, {2}, 2);
  ASSERT_TRUE(r->SetPinned(a, true).ok());
  ASSERT_TRUE(r->SetPinned(a, true).ok());  // idempotent
  BlobId unknown;
  unknown.bytes[0] = 1;
  EXPECT_EQ(r->SetPinned(unknown, true).code(), StatusCode::kNotFound);
  r.reset();
  r = Reopen();
  auto pins = r->ListPins();
  ASSERT_TRUE(pins.ok());
  EXPECT_EQ(*pins, std::vector<ManifestId>{a});
  // A pin copied to another point's name does not pin that point.
  fs::copy_file(fs::path(repo_) / "pins" / a.Hex(), fs::path(repo_) / "pins" / b.Hex());
  std::vector<std::string> problems;
  pins = r->ListPins(&problems);
  ASSERT_TRUE(pins.ok());
  EXPECT_EQ(*pins, std::vector<ManifestId>{a});
  EXPECT_EQ(problems.size(), 1u);
  fs::remove(fs::path(repo_) / "pins" / b.Hex());
  ASSERT_TRUE(r->SetPinned(a, false).ok());
  ASSERT_TRUE(r->SetPinned(a, false).ok());
  pins = r->ListPins();
  ASSERT_TRUE(pins.ok());
  EXPECT_TRUE(pins->empty());
}

TEST_F(PruneTest, AppendOnlyKeepsPinsAndPruneDropsPinsOfGonePoints) {
  {
    auto r = InitAndOpen(SmallPacks(), /*append_only=*/true);
    ManifestId a = MakePoint(*r, {1}, 1);
    ASSERT_TRUE(r->SetPinned(a, true).ok());
    EXPECT_EQ(r->SetPinned(a, false).code(), StatusCode::kFailedPrecondition);
  }
  testing::RemoveAllClearingImmutable(repo_);
  auto r = InitAndOpen(SmallPacks(LockMode::kExclusive));
  ManifestId a = MakePoint(*r, {1}, 1);
  MakePoint(*r, {2}, 2);
  ASSERT_TRUE(r->SetPinned(a, true).ok());
  // A point removed behind the pin's back (by hand, or an older version).
  ASSERT_TRUE(r->DeleteManifest(a).ok());
  seeds_.erase(a);
  auto rep = r->Prune();
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(rep->pins_removed, 1u);
  EXPECT_TRUE(Files("pins").empty());
}

}  // namespace
}  // namespace continuum::repo
