// Covers src/repo/repository_check.cc: check names damaged packs and the points
// that need them; repair rebuilds the index from packs.
#include <gtest/gtest.h>

#include <fstream>

#include "continuum/repo/repository.h"
#include "repo_test_util.h"

namespace continuum::repo {
namespace {

namespace fs = std::filesystem;
using testing::RandomBytes;
using testing::SmallPacks;

class RepositoryCheckTest : public testing::TempDirTest {
 protected:
  // Two points with disjoint data, each in its own pack(s), plus one shared blob.
  void MakeTwoPoints() {
    auto r = InitAndOpen();
    ASSERT_TRUE(r);
    auto shared = r->Put(BlobType::kData, RandomBytes(1000, 99));
    for (int p = 0; p < 2; ++p) {
      std::vector<BlobId> ids = {*shared};
      for (int i = 0; i < 5; ++i) {
        auto id = r->Put(BlobType::kData, RandomBytes(20000, p * 100 + i));
        ASSERT_TRUE(id.ok());
        ids.push_back(*id);
        data_[*id] = RandomBytes(20000, p * 100 + i);
      }
      auto tree = r->PutTree({.refs = ids});
      ASSERT_TRUE(tree.ok());
      auto before = Files("data");
      auto m = r->SaveManifest({.time_ns = p, .roots = {*tree}});
      ASSERT_TRUE(m.ok());
      auto after = Files("data");
      ASSERT_EQ(after.size(), before.size() + 1);
      for (const auto& f : after) {
        if (std::find(before.begin(), before.end(), f) == before.end()) packs_of_point_.push_back(f);
      }
      manifests_.push_back(*m);
      blobs_.push_back(ids);
      blobs_.back().push_back(*tree);
    }
  }
  // The pack written for point p (each SaveManifest seals one pack here).
  fs::path PackOfPoint(int p) { return packs_of_point_[p]; }

  std::map<BlobId, std::vector<uint8_t>> data_;
  std::vector<ManifestId> manifests_;
  std::vector<std::vector<BlobId>> blobs_;
  std::vector<fs::path> packs_of_point_;
};

TEST_F(RepositoryCheckTest, CleanRepositoryChecksOk) {
  MakeTwoPoints();
  auto r = Reopen();
  auto rep = r->Check(true);
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_TRUE(rep->ok());
  EXPECT_EQ(rep->packs_checked, 2u);
  EXPECT_EQ(rep->manifests_checked, 2u);
  EXPECT_EQ(rep->blobs_checked, 13u);  // shared + 2x5 data + 2 trees
  EXPECT_TRUE(rep->unindexed_packs.empty());
}

TEST_F(RepositoryCheckTest, FlippedBitIsFoundAndNamesPackAndPoint) {
  MakeTwoPoints();
  ASSERT_EQ(Files("data").size(), 2u);
  fs::path victim = PackOfPoint(1);
  {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);  // inside the first blob of the pack
    char c;
    f.seekg(100);
    f.get(c);
    f.seekp(100);
    f.put(static_cast<char>(c ^ 0x10));
  }
  auto r = Reopen();
  // Without reading data, sizes still match: nothing to see.
  auto quick = r->Check(false);
  ASSERT_TRUE(quick.ok());
  EXPECT_TRUE(quick->ok());

  auto rep = r->Check(true);
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  ASSERT_EQ(rep->pack_problems.size(), 1u);
  EXPECT_EQ(rep->pack_problems[0].pack, victim.string());
  EXPECT_NE(rep->pack_problems[0].problem.find("content hash mismatch"), std::string::npos);
  ASSERT_EQ(rep->pack_problems[0].lost_blobs.size(), 1u);
  ASSERT_EQ(rep->manifest_problems.size(), 1u);
  EXPECT_EQ(rep->manifest_problems[0].manifest, manifests_[1]);
  EXPECT_EQ(rep->manifest_problems[0].damaged_blobs, 1u);

  // The other point restores in full; the damaged blob reports kDataLoss naming the pack.
  auto needed0 = r->ManifestBlobs(manifests_[0]);
  ASSERT_TRUE(needed0.ok()) << needed0.status().ToString();
  for (const auto& id : *needed0) EXPECT_TRUE(r->Get(id).ok());
  BlobId lost = rep->pack_problems[0].lost_blobs[0];
  auto bad = r->Get(lost);
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find(victim.string()), std::string::npos) << bad.status().message();
  // The undamaged blobs of the damaged pack still read.
  for (const auto& id : blobs_[1]) {
    if (id != lost) {
      EXPECT_TRUE(r->Get(id).ok());
    }
  }
}

TEST_F(RepositoryCheckTest, RepairWithReadDataLetsTheNextBackupHeal) {
  MakeTwoPoints();
  fs::path victim = PackOfPoint(1);
  {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(100);
    char c;
    f.get(c);
    f.seekp(100);
    f.put(static_cast<char>(c ^ 0x10));
  }
  auto r = Reopen(SmallPacks(LockMode::kExclusive));
  auto rep = r->Check(true);
  ASSERT_EQ(rep->pack_problems.size(), 1u);
  BlobId lost = rep->pack_problems[0].lost_blobs.at(0);
  // Without repair, storing the same data again dedups against the damaged copy.
  EXPECT_TRUE(r->Has(lost));
  auto rebuilt = r->RebuildIndex(/*read_data=*/true);
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status().ToString();
  ASSERT_EQ(rebuilt->bad_packs.size(), 1u);
  EXPECT_EQ(rebuilt->bad_packs[0].lost_blobs, std::vector<BlobId>{lost});
  EXPECT_FALSE(r->Has(lost));
  // The next backup of the same data stores the blob again: the point is whole.
  ASSERT_TRUE(data_.count(lost));
  auto again = r->Put(BlobType::kData, data_[lost]);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, lost);
  ASSERT_TRUE(r->Flush().ok());
  EXPECT_TRUE(r->Get(lost).ok());
  rep = r->Check(false);
  ASSERT_TRUE(rep.ok());
  EXPECT_TRUE(rep->manifest_problems.empty());
}

TEST_F(RepositoryCheckTest, MissingPackNamesAffectedPoints) {
  MakeTwoPoints();
  fs::path victim = PackOfPoint(1);
  fs::remove(victim);
  auto r = Reopen();
  auto rep = r->Check(false);
  ASSERT_TRUE(rep.ok());
  ASSERT_EQ(rep->pack_problems.size(), 1u);
  EXPECT_EQ(rep->pack_problems[0].pack, victim.string());
  EXPECT_NE(rep->pack_problems[0].problem.find("missing"), std::string::npos);
  ASSERT_EQ(rep->manifest_problems.size(), 1u);
  EXPECT_EQ(rep->manifest_problems[0].manifest, manifests_[1]);
  for (const auto& id : blobs_[0]) EXPECT_TRUE(r->Get(id).ok());
  EXPECT_EQ(r->Get(blobs_[1][1]).status().code(), StatusCode::kDataLoss);
}

TEST_F(RepositoryCheckTest, TruncatedPackLosesOnlyTheTail) {
  MakeTwoPoints();
  fs::path victim = PackOfPoint(1);
  uint64_t size = fs::file_size(victim);
  fs::resize_file(victim, size / 2);
  auto r = Reopen();
  auto rep = r->Check(false);
  ASSERT_TRUE(rep.ok());
  ASSERT_EQ(rep->pack_problems.size(), 1u);
  EXPECT_NE(rep->pack_problems[0].problem.find("index says"), std::string::npos) << rep->pack_problems[0].problem;
  EXPECT_GT(rep->pack_problems[0].lost_blobs.size(), 0u);
  EXPECT_LT(rep->pack_problems[0].lost_blobs.size(), 7u);
  ASSERT_EQ(rep->manifest_problems.size(), 1u);
  EXPECT_EQ(rep->manifest_problems[0].manifest, manifests_[1]);
  // Repair cannot adopt a pack without its header; it reports it and keeps the rest.
  r.reset();
  r = Reopen(SmallPacks(LockMode::kExclusive));
  auto rebuilt = r->RebuildIndex();
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status().ToString();
  EXPECT_EQ(rebuilt->bad_packs.size(), 1u);
  EXPECT_EQ(rebuilt->packs_indexed, 1u);
  for (const auto& id : blobs_[0]) EXPECT_TRUE(r->Get(id).ok());
}

TEST_F(RepositoryCheckTest, RebuildIndexAfterDeletingIndexFiles) {
  MakeTwoPoints();
  for (const auto& f : Files("index")) fs::remove(f);
  {
    auto r = Reopen();
    EXPECT_FALSE(r->Has(blobs_[0][1]));
    auto rep = r->Check(false);
    ASSERT_TRUE(rep.ok());
    EXPECT_EQ(rep->unindexed_packs.size(), 2u);
    EXPECT_EQ(rep->manifest_problems.size(), 2u);
    EXPECT_EQ(r->RebuildIndex().status().code(), StatusCode::kFailedPrecondition);  // shared lock
  }
  {
    auto r = Reopen(SmallPacks(LockMode::kExclusive));
    auto rebuilt = r->RebuildIndex();
    ASSERT_TRUE(rebuilt.ok()) << rebuilt.status().ToString();
    EXPECT_EQ(rebuilt->packs_indexed, 2u);
    EXPECT_EQ(rebuilt->blobs_indexed, 13u);
    EXPECT_TRUE(rebuilt->bad_packs.empty());
  }
  auto r = Reopen();
  for (const auto& [id, bytes] : data_) {
    auto got = r->Get(id);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, bytes);
  }
  auto rep = r->Check(true);
  ASSERT_TRUE(rep.ok());
  EXPECT_TRUE(rep->ok());
  EXPECT_EQ(Files("index").size(), 1u);
}

TEST_F(RepositoryCheckTest, DamagedIndexFileIsReportedAndRepaired) {
  MakeTwoPoints();
  auto idx = Files("index");
  ASSERT_FALSE(idx.empty());
  {
    std::fstream f(idx[0], std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(30);
    f.put('X');
  }
  auto r = Reopen(SmallPacks(LockMode::kExclusive));
  ASSERT_TRUE(r);
  auto rep = r->Check(false);
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(rep->index_problems.size(), 1u);
  EXPECT_FALSE(rep->ok());
  ASSERT_TRUE(r->RebuildIndex().ok());
  rep = r->Check(true);
  ASSERT_TRUE(rep.ok());
  EXPECT_TRUE(rep->ok()) << (rep->index_problems.empty() ? "" : rep->index_problems[0]);
}

TEST_F(RepositoryCheckTest, DamagedManifestIsReported) {
  MakeTwoPoints();
  auto files = Files("manifests");
  ASSERT_EQ(files.size(), 2u);
  fs::resize_file(files[0], 10);
  auto r = Reopen();
  auto rep = r->Check(false);
  ASSERT_TRUE(rep.ok());
  ASSERT_EQ(rep->manifest_problems.size(), 1u);
  EXPECT_NE(rep->manifest_problems[0].problem.find("unreadable"), std::string::npos);
}

}  // namespace
}  // namespace continuum::repo
