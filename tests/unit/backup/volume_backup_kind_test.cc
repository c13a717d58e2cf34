// Covers src/backup/volume_backup.cc, image_tree_writer.cc and chain.cc:
// backup kinds against a fake agent (views are file snapshots, bitmaps mark
// every write), chain metadata, bitmap rotation and fallbacks, keep-chains.
#include "continuum/backup/volume_backup.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <map>
#include <set>

#include "backup_test_util.h"
#include "continuum/backup/point_catalog.h"
#include "continuum/backup/restore.h"
#include "continuum/backup/retention.h"

namespace continuum::backup {
namespace {

namespace fs = std::filesystem;
using testing::RandomBytes;
using testing::ReadFile;
using testing::WriteFile;

constexpr uint64_t kGranularity = 64 << 10;

// A volume in memory with the agent's semantics: seqs, bookmarks, views as
// snapshots, bitmaps that mark every later write.
class FakeVolume : public VolumeControl {
 public:
  FakeVolume(fs::path dir, std::vector<uint8_t> data) : dir_(std::move(dir)), data_(std::move(data)) {}

  void Write(uint64_t offset, const std::vector<uint8_t>& bytes) {
    std::copy(bytes.begin(), bytes.end(), data_.begin() + offset);
    ++seq_;
    for (auto& [name, bm] : bitmaps_) {
      for (uint64_t g = offset / kGranularity; g <= (offset + bytes.size() - 1) / kGranularity; ++g) bm.marked.insert(g);
    }
  }

  Result<uint64_t> CreateBitmap(const std::string&, const std::string& base) override {
    bitmaps_[base] = {.base_seq = seq_, .marked = {}};
    created.push_back(base);
    return seq_;
  }
  Result<std::optional<Bitmap>> GetBitmap(const std::string&, const std::string& base) override {
    if (fail_get_bitmap) return Internal("injected");
    auto it = bitmaps_.find(base);
    if (it == bitmaps_.end()) return std::optional<Bitmap>();
    Bitmap b{.base_seq = it->second.base_seq, .changed = {}};
    for (uint64_t g : it->second.marked) b.changed.push_back({g * kGranularity, kGranularity});
    return std::optional<Bitmap>(b);
  }
  Status DeleteBitmap(const std::string&, const std::string& base) override {
    return bitmaps_.erase(base) ? Status::Ok() : NotFound("no bitmap " + base);
  }
  Result<uint64_t> AddBookmark(const std::string&, const std::string& label) override {
    ++seq_;
    bookmarks_[label] = seq_;
    WriteFile(dir_ / ("snap-" + std::to_string(seq_)), data_);
    return seq_;
  }
  Result<View> OpenView(const std::string&, const std::string& at) override {
    auto it = bookmarks_.find(at);
    if (it == bookmarks_.end()) return NotFound("no bookmark " + at);
    ++open_views;
    return View{.id = at, .device = (dir_ / ("snap-" + std::to_string(it->second))).string(), .seq = it->second};
  }
  Status CloseView(const std::string&) override {
    --open_views;
    return Status::Ok();
  }

  bool HasBitmap(const std::string& base) const { return bitmaps_.count(base) != 0; }
  void DropBitmaps() { bitmaps_.clear(); }
  const std::vector<uint8_t>& data() const { return data_; }

  int open_views = 0;
  bool fail_get_bitmap = false;
  std::vector<std::string> created;

 private:
  struct Bits {
    uint64_t base_seq;
    std::set<uint64_t> marked;
  };
  fs::path dir_;
  std::vector<uint8_t> data_;
  uint64_t seq_ = 10;
  std::map<std::string, Bits> bitmaps_;
  std::map<std::string, uint64_t> bookmarks_;
};

class VolumeBackupKindTest : public testing::BackupTest {
 protected:
  void SetUp() override {
    BackupTest::SetUp();
    std::vector<uint8_t> img = RandomBytes(4 << 20, 7);
    std::fill(img.begin() + (1 << 20), img.begin() + (2 << 20), 0);
    vol_ = std::make_unique<FakeVolume>(dir_, img);
  }

  Result<PointInfo> Take(BackupKind kind, std::vector<std::string>* notices = nullptr) {
    return BackupVolume(*repo_, *vol_, {.volume = "v1", .kind = kind}, {},
                        [&](const std::string& n) {
                          if (notices) notices->push_back(n);
                        });
  }

  void ExpectRestores(const PointInfo& p, const std::vector<uint8_t>& want) {
    auto out = dir_ / ("restore-" + p.id.Hex());
    auto r = Restore(*repo_, p, {.target = out.string(), .verify = true});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_TRUE(ReadFile(out) == want) << "point " << p.id.Hex() << " does not restore its volume state";
  }

  std::unique_ptr<FakeVolume> vol_;
};

TEST_F(VolumeBackupKindTest, FirstPointIsFullThenIncrementalReadsOnlyChanges) {
  auto full = Take(BackupKind::kIncremental);
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  EXPECT_EQ(full->kind, "full");
  EXPECT_EQ(full->sources, std::vector<std::string>{"volume:v1"});
  EXPECT_EQ(full->volume.read, "all");
  EXPECT_EQ(full->bytes_read, 4u << 20);
  EXPECT_FALSE(full->volume.bitmap.empty());
  EXPECT_FALSE(full->volume.full_bitmap.empty());
  const auto state1 = vol_->data();

  vol_->Write(100 << 10, RandomBytes(10, 1));         // one chunk
  vol_->Write((3 << 20) + 5, RandomBytes(70 << 10, 2));  // two chunks
  auto inc = Take(BackupKind::kIncremental);
  ASSERT_TRUE(inc.ok()) << inc.status().ToString();
  EXPECT_EQ(inc->kind, "incremental");
  EXPECT_EQ(inc->parent, full->id.Hex());
  EXPECT_EQ(inc->full, full->id.Hex());
  EXPECT_EQ(inc->volume.read, "changed");
  EXPECT_EQ(inc->bytes_read, 3u * (64 << 10));
  EXPECT_NE(inc->volume.bitmap, full->volume.bitmap);
  EXPECT_FALSE(vol_->HasBitmap(full->volume.bitmap));  // rotated away
  EXPECT_TRUE(vol_->HasBitmap(full->volume.full_bitmap));
  EXPECT_EQ(vol_->open_views, 0);

  ExpectRestores(*full, state1);
  ExpectRestores(*inc, vol_->data());
}

TEST_F(VolumeBackupKindTest, DifferentialReadsEverythingSinceTheFull) {
  auto full = Take(BackupKind::kFull);
  ASSERT_TRUE(full.ok());
  vol_->Write(0, RandomBytes(1000, 3));
  auto inc = Take(BackupKind::kIncremental);
  ASSERT_TRUE(inc.ok());
  EXPECT_EQ(inc->bytes_read, 64u << 10);
  vol_->Write(2 << 20, RandomBytes(1000, 4));
  auto diff = Take(BackupKind::kDifferential);
  ASSERT_TRUE(diff.ok()) << diff.status().ToString();
  EXPECT_EQ(diff->kind, "differential");
  EXPECT_EQ(diff->parent, full->id.Hex());
  EXPECT_EQ(diff->full, full->id.Hex());
  EXPECT_EQ(diff->volume.read, "changed");
  EXPECT_EQ(diff->bytes_read, 2u * (64 << 10));  // both changes since the full
  ExpectRestores(*diff, vol_->data());

  // An incremental after the differential is taken against it.
  vol_->Write(3 << 20, RandomBytes(1000, 5));
  auto inc2 = Take(BackupKind::kIncremental);
  ASSERT_TRUE(inc2.ok());
  EXPECT_EQ(inc2->parent, diff->id.Hex());
  EXPECT_EQ(inc2->bytes_read, 64u << 10);
  ExpectRestores(*inc2, vol_->data());
}

TEST_F(VolumeBackupKindTest, MissingBitmapFallsBackToAFullReadAndSaysSo) {
  ASSERT_TRUE(Take(BackupKind::kFull).ok());
  vol_->Write(5000, RandomBytes(10, 6));
  vol_->DropBitmaps();  // as after a volume was recreated
  std::vector<std::string> notices;
  auto inc = Take(BackupKind::kIncremental, &notices);
  ASSERT_TRUE(inc.ok()) << inc.status().ToString();
  EXPECT_EQ(inc->kind, "incremental");
  EXPECT_EQ(inc->volume.read, "all");
  EXPECT_EQ(inc->bytes_read, 4u << 20);
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_NE(notices[0].find("reading the whole volume"), std::string::npos);
  ExpectRestores(*inc, vol_->data());
  // The next one has a bitmap again.
  vol_->Write(5000, RandomBytes(10, 7));
  auto inc2 = Take(BackupKind::kIncremental);
  ASSERT_TRUE(inc2.ok());
  EXPECT_EQ(inc2->volume.read, "changed");
  ExpectRestores(*inc2, vol_->data());
}

TEST_F(VolumeBackupKindTest, BookmarkOlderThanTheParentIsReadWhole) {
  ASSERT_TRUE(Take(BackupKind::kFull).ok());
  vol_->Write(0, RandomBytes(1000, 8));
  ASSERT_TRUE(vol_->AddBookmark("v1", "early").ok());
  const auto early = vol_->data();
  vol_->Write(3 << 20, RandomBytes(1000, 9));
  ASSERT_TRUE(Take(BackupKind::kIncremental).ok());
  std::vector<std::string> notices;
  auto p = BackupVolume(*repo_, *vol_, {.volume = "v1", .kind = BackupKind::kIncremental, .bookmark = "early"}, {},
                        [&](const std::string& n) { notices.push_back(n); });
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->volume.read, "all");
  EXPECT_EQ(p->volume.bookmark, "early");
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_NE(notices[0].find("newer than the bookmark"), std::string::npos);
  ExpectRestores(*p, early);
  EXPECT_EQ(vol_->open_views, 0);
}

TEST_F(VolumeBackupKindTest, ChangesAcrossMapTreesAreSplitAndUnchangedMapsReused) {
  // 64 KiB chunks, 512 per map: 40 MiB is two map trees (the second partial).
  std::vector<uint8_t> img(40 << 20, 0);
  std::fill(img.begin(), img.begin() + (1 << 20), 0x5a);
  vol_ = std::make_unique<FakeVolume>(dir_, img);
  ASSERT_TRUE(Take(BackupKind::kFull).ok());
  vol_->Write((32 << 20) - (64 << 10), RandomBytes(128 << 10, 10));  // the last chunk of map 0, first of map 1
  vol_->Write((40 << 20) - 100, RandomBytes(100, 11));                 // the very last chunk
  auto inc = Take(BackupKind::kIncremental);
  ASSERT_TRUE(inc.ok()) << inc.status().ToString();
  EXPECT_EQ(inc->bytes_read, 3u * (64 << 10));
  ExpectRestores(*inc, vol_->data());
  vol_->Write(5 << 20, RandomBytes(10, 12));  // only map 0 changes: map 1 is reused as is
  auto inc2 = Take(BackupKind::kIncremental);
  ASSERT_TRUE(inc2.ok());
  ExpectRestores(*inc2, vol_->data());
}

TEST_F(VolumeBackupKindTest, FailureClosesTheViewAndSavesNoPoint) {
  ASSERT_TRUE(Take(BackupKind::kFull).ok());
  vol_->fail_get_bitmap = true;
  auto inc = Take(BackupKind::kIncremental);
  EXPECT_FALSE(inc.ok());
  EXPECT_EQ(vol_->open_views, 0);
  auto points = ListPoints(*repo_);
  ASSERT_TRUE(points.ok());
  EXPECT_EQ(points->size(), 1u);
}

TEST_F(VolumeBackupKindTest, ImageIncrementalRecordsItsParent) {
  WriteFile(dir_ / "disk.img", RandomBytes(1 << 20, 9));
  auto a = BackupImage(*repo_, {.source = (dir_ / "disk.img").string(), .kind = BackupKind::kIncremental});
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->kind, "full");
  auto b = BackupImage(*repo_, {.source = (dir_ / "disk.img").string(), .kind = BackupKind::kIncremental});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->kind, "incremental");
  EXPECT_EQ(b->parent, a->id.Hex());
  EXPECT_EQ(b->bytes_read, 0u);  // the file is untouched since the parent: its maps are reused
  EXPECT_LT(b->new_raw_bytes, 64u << 10);
  auto points = ListPoints(*repo_);
  ASSERT_TRUE(points.ok());
  ASSERT_EQ(points->size(), 2u);
  EXPECT_EQ(points->back().parent, a->id.Hex());  // survives the manifest round trip
  EXPECT_EQ(points->back().source_file, b->source_file);
  // Any write changes the ctime (even with the mtime set back): read whole.
  struct stat before;
  ASSERT_EQ(::stat((dir_ / "disk.img").c_str(), &before), 0);
  auto changed = RandomBytes(1 << 20, 9);
  changed[12345] ^= 0xff;
  WriteFile(dir_ / "disk.img", changed);
  struct timespec times[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, (dir_ / "disk.img").c_str(), times, 0), 0);
  auto c = BackupImage(*repo_, {.source = (dir_ / "disk.img").string(), .kind = BackupKind::kIncremental});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->bytes_read, 1u << 20);
  ExpectRestores(*c, changed);
  ExpectRestores(*b, RandomBytes(1 << 20, 9));
}

PointInfo ChainPoint(int64_t t, const std::string& kind, const std::string& full = "") {
  PointInfo p;
  p.type = PointType::kImage;
  p.host = "h";
  p.sources = {"volume:v"};
  p.time_ns = t;
  p.kind = kind;
  p.full = full;
  p.parent = full;
  p.id.bytes[0] = static_cast<uint8_t>(t);
  return p;
}

TEST(ChainTest, KeepChainsKeepsWholeNewestChains) {
  PointInfo f1 = ChainPoint(1, "full");
  PointInfo i1 = ChainPoint(2, "incremental", f1.id.Hex());
  PointInfo f2 = ChainPoint(3, "full");
  PointInfo i2 = ChainPoint(4, "incremental", f2.id.Hex());
  PointInfo d2 = ChainPoint(5, "differential", f2.id.Hex());
  PointInfo f3 = ChainPoint(6, "full");
  PointInfo i3 = ChainPoint(7, "incremental", f3.id.Hex());
  auto decisions = ApplyRetention({f1, i1, f2, i2, d2, f3, i3}, {.keep_chains = 2});
  std::set<int64_t> kept;
  for (const auto& d : decisions) {
    if (d.keep) kept.insert(d.point.time_ns);
  }
  EXPECT_EQ(kept, (std::set<int64_t>{3, 4, 5, 6, 7}));
}

TEST(ChainTest, PlanPicksParentsByKind) {
  PointInfo f1 = ChainPoint(1, "full");
  PointInfo i1 = ChainPoint(2, "incremental", f1.id.Hex());
  PointInfo other = ChainPoint(3, "full");
  other.sources = {"volume:other"};
  PointInfo source = ChainPoint(9, "full");
  auto inc = PlanChain({f1, i1, other}, source, BackupKind::kIncremental);
  EXPECT_EQ(inc.kind, BackupKind::kIncremental);
  EXPECT_EQ(inc.parent->time_ns, 2);
  EXPECT_EQ(inc.full, f1.id.Hex());
  auto diff = PlanChain({f1, i1, other}, source, BackupKind::kDifferential);
  EXPECT_EQ(diff.parent->time_ns, 1);
  EXPECT_EQ(diff.full, f1.id.Hex());
  auto first = PlanChain({other}, source, BackupKind::kDifferential);
  EXPECT_EQ(first.kind, BackupKind::kFull);
  EXPECT_TRUE(first.full.empty());
  EXPECT_FALSE(ParseBackupKind("weekly").ok());
}

}  // namespace
}  // namespace continuum::backup
