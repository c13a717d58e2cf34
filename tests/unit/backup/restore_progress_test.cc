// Covers src/backup/restore_progress.{h,cc}: the restore progress file format
// and the decision to resume, refuse or start over.
#include "backup/restore_progress.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

namespace continuum::backup {
namespace {

namespace fs = std::filesystem;

RestoreProgress Sample() {
  RestoreProgress p;
  p.point.bytes.fill(0xab);
  p.type = PointType::kImage;
  p.options = RestoreOptionsDigest(PointType::kImage, {}, 1 << 20, 400ull << 20);
  p.done = 17;
  p.total = 400;
  p.bytes_done = 17ull << 20;
  p.bytes_total = 400ull << 20;
  return p;
}

void ExpectSame(const RestoreProgress& a, const RestoreProgress& b) {
  EXPECT_EQ(a.point, b.point);
  EXPECT_EQ(a.type, b.type);
  EXPECT_EQ(a.options, b.options);
  EXPECT_EQ(a.done, b.done);
  EXPECT_EQ(a.total, b.total);
  EXPECT_EQ(a.bytes_done, b.bytes_done);
  EXPECT_EQ(a.bytes_total, b.bytes_total);
}

TEST(RestoreProgressFormat, RoundTrips) {
  RestoreProgress p = Sample();
  auto back = DecodeRestoreProgress(EncodeRestoreProgress(p), "f");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ExpectSame(p, *back);
  p.type = PointType::kPath;
  p.total = 0;
  p.bytes_total = 0;
  p.done = UINT64_MAX;
  p.bytes_done = UINT64_MAX;
  back = DecodeRestoreProgress(EncodeRestoreProgress(p), "f");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ExpectSame(p, *back);
}

TEST(RestoreProgressFormat, OptionsDigestSeparatesFields) {
  EXPECT_NE(RestoreOptionsDigest(PointType::kPath, {"a", "b"}, 0, 0),
            RestoreOptionsDigest(PointType::kPath, {"ab"}, 0, 0));
  EXPECT_NE(RestoreOptionsDigest(PointType::kPath, {}, 0, 0), RestoreOptionsDigest(PointType::kImage, {}, 0, 0));
  EXPECT_NE(RestoreOptionsDigest(PointType::kImage, {}, 1, 23), RestoreOptionsDigest(PointType::kImage, {}, 12, 3));
  EXPECT_EQ(RestoreOptionsDigest(PointType::kPath, {"x/*"}, 0, 0),
            RestoreOptionsDigest(PointType::kPath, {"x/*"}, 0, 0));
}

void ExpectBad(const std::string& text, const std::string& fragment) {
  auto r = DecodeRestoreProgress(text, "/t/img.continuum-restore");
  ASSERT_FALSE(r.ok()) << "accepted: " << text;
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("/t/img.continuum-restore"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find(fragment), std::string::npos) << r.status().message();
}

TEST(RestoreProgressFormat, BadInputIsAClearError) {
  const std::string good = EncodeRestoreProgress(Sample());
  ExpectBad("", "truncated");
  ExpectBad("hello\n", "not a restore progress file");
  ExpectBad("continuum restore progress 2\n", "not a restore progress file");
  ExpectBad(good.substr(0, good.size() - 1), "truncated before 'checksum'");
  ExpectBad(good.substr(0, good.find("\ndone")) + "\n", "truncated before 'done'");
  ExpectBad(good + "x", "unexpected data");
  ExpectBad(std::string(5000, 'a'), "too large");

  auto replaced = [&](const std::string& from, const std::string& to) {
    std::string t = good;
    t.replace(t.find(from), from.size(), to);
    return t;
  };
  // A changed value fails the checksum; a malformed one is named first.
  ExpectBad(replaced("done 17", "done 18"), "checksum mismatch");
  ExpectBad(replaced("done 17", "done x7"), "bad done");
  ExpectBad(replaced("done 17", "done -1"), "bad done");
  ExpectBad(replaced("done 17", "done 99999999999999999999999"), "bad done");
  ExpectBad(replaced("done 17", "done "), "bad done");
  ExpectBad(replaced("done 17", "done 17 "), "bad done");
  ExpectBad(replaced("type image", "type disk"), "bad type");
  ExpectBad(replaced("point ab", "point zz"), "bad point");
  ExpectBad(replaced("\ntotal", "\nTOTAL"), "expected 'total VALUE'");
  ExpectBad(replaced("\ntotal 400", "\ntotal"), "expected 'total VALUE'");
  ExpectBad(replaced("checksum ", "checksum 00"), "bad checksum");
}

TEST(RestoreProgressFormat, InconsistentCountsAreRejected) {
  RestoreProgress p = Sample();
  p.done = p.total + 1;
  ExpectBad(EncodeRestoreProgress(p), "exceeds total");
  p = Sample();
  p.bytes_done = p.bytes_total + 1;
  ExpectBad(EncodeRestoreProgress(p), "exceeds bytes_total");
}

TEST(RestoreProgressFormat, RandomMutationsNeverCrash) {
  const std::string good = EncodeRestoreProgress(Sample());
  std::mt19937_64 rng(4);
  for (int i = 0; i < 20000; ++i) {
    std::string t = good;
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < edits; ++k) {
      switch (rng() % 4) {
        case 0:
          t[rng() % t.size()] = static_cast<char>(rng());
          break;
        case 1:
          t.resize(rng() % (t.size() + 1));
          break;
        case 2:
          t.insert(rng() % (t.size() + 1), 1, static_cast<char>(rng()));
          break;
        case 3:
          if (!t.empty()) t.erase(rng() % t.size(), 1);
          break;
      }
      if (t.empty()) t.push_back('x');
    }
    auto r = DecodeRestoreProgress(t, "f");
    if (r.ok() && r->total != 0) {
      EXPECT_LE(r->done, r->total);
    }
  }
}

class RestoreProgressFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("continuum-progress-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(RestoreProgressFileTest, SaveLoadClaimRemove) {
  RestoreProgressFile pf((dir_ / "img.continuum-restore").string());
  EXPECT_EQ(pf.Load().status().code(), StatusCode::kNotFound);
  RestoreProgress fresh = Sample();
  fresh.done = 0;
  auto claim = pf.Claim(fresh, false);
  ASSERT_TRUE(claim.ok());
  EXPECT_FALSE(claim->has_value());

  RestoreProgress mid = Sample();
  ASSERT_TRUE(pf.Save(mid).ok());
  EXPECT_FALSE(fs::exists(pf.path() + ".tmp"));
  claim = pf.Claim(fresh, false);
  ASSERT_TRUE(claim.ok()) << claim.status().ToString();
  ASSERT_TRUE(claim->has_value());
  EXPECT_EQ((*claim)->done, 17u);

  // Another point: refused, naming the file and both ways out.
  RestoreProgress other = fresh;
  other.point.bytes[0] = 0x01;
  claim = pf.Claim(other, false);
  ASSERT_FALSE(claim.ok());
  EXPECT_EQ(claim.status().code(), StatusCode::kFailedPrecondition);
  for (const char* s : {"abababababab", "01abababab", "--restart", "delete", "img.continuum-restore"}) {
    EXPECT_NE(claim.status().message().find(s), std::string::npos) << s << ": " << claim.status().message();
  }
  // Other options of the same point: refused too.
  RestoreProgress opts = fresh;
  opts.options = RestoreOptionsDigest(PointType::kImage, {}, 1 << 20, 1);
  EXPECT_EQ(pf.Claim(opts, false).status().code(), StatusCode::kFailedPrecondition);
  // --restart discards it.
  claim = pf.Claim(other, true);
  ASSERT_TRUE(claim.ok());
  EXPECT_FALSE(claim->has_value());
  EXPECT_FALSE(fs::exists(pf.path()));
  EXPECT_TRUE(pf.Remove().ok());
}

TEST_F(RestoreProgressFileTest, DamagedFileIsRefusedWithAWayOut) {
  RestoreProgressFile pf((dir_ / "p").string());
  std::ofstream(pf.path()) << "garbage";
  auto claim = pf.Claim(Sample(), false);
  ASSERT_FALSE(claim.ok());
  EXPECT_EQ(claim.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(claim.status().message().find("--restart"), std::string::npos) << claim.status().message();
  EXPECT_TRUE(pf.Claim(Sample(), true).ok());
  EXPECT_FALSE(fs::exists(pf.path()));
}

TEST_F(RestoreProgressFileTest, NeverWritesThroughASymlink) {
  fs::path victim = dir_ / "victim";
  std::ofstream(victim) << "keep me";
  RestoreProgressFile pf((dir_ / "p").string());
  fs::create_symlink(victim, pf.path() + ".tmp");
  ASSERT_TRUE(pf.Save(Sample()).ok());
  std::ifstream in(victim);
  std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(got, "keep me");
  EXPECT_TRUE(pf.Load().ok());
  // A symlink at the progress file's own name is not followed when loading.
  RestoreProgressFile link((dir_ / "q").string());
  fs::create_symlink(pf.path(), link.path());
  EXPECT_FALSE(link.Load().ok());
}

TEST(RestoreProgressPaths, WhereProgressFilesLive) {
  EXPECT_EQ(RestoreProgressFile::ForImage("/srv/a.img", false, "/var/lib/continuum"), "/srv/a.img.continuum-restore");
  EXPECT_EQ(RestoreProgressFile::ForImage("/dev/sdb", true, "/var/lib/continuum"),
            "/var/lib/continuum/restore/dev_sdb.continuum-restore");
  EXPECT_EQ(RestoreProgressFile::ForTree("/srv/out/"), "/srv/out/.continuum-restore");
}

}  // namespace
}  // namespace continuum::backup
