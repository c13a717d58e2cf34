// Covers src/backup/path_restore.cc and dir_listing.cc against a crafted
// repository: a restore never writes outside its target.
#include <gtest/gtest.h>

#include "backup/dir_listing.h"
#include "backup_test_util.h"
#include "continuum/backup/point_catalog.h"
#include "continuum/backup/restore.h"

namespace continuum::backup {
namespace {

namespace fs = std::filesystem;

class CraftedPointTest : public testing::BackupTest {
 protected:
  // Saves a path point whose root directory holds `entries`; file entries get
  // one data chunk "evil\n" (ref 0), directory entries an empty subtree (ref 1).
  Result<PointInfo> Craft(std::vector<DirEntry> entries) {
    std::vector<uint8_t> data = {'e', 'v', 'i', 'l', '\n'};
    CONTINUUM_ASSIGN_OR_RETURN(repo::BlobId chunk, repo_->Put(repo::BlobType::kData, data));
    CONTINUUM_ASSIGN_OR_RETURN(repo::BlobId empty, repo_->PutTree({.payload = EncodeDirListing({})}));
    for (auto& e : entries) {
      e.mode = e.mode ? e.mode : 0644;
      if (e.type == EntryType::kFile) {
        e.chunks = {0};
        e.size = data.size();
      }
      if (e.type == EntryType::kDir && e.subtree < 0) e.subtree = 1;
    }
    CONTINUUM_ASSIGN_OR_RETURN(repo::BlobId root,
                               repo_->PutTree({.refs = {chunk, empty}, .payload = EncodeDirListing(entries)}));
    PointInfo info;
    info.type = PointType::kPath;
    info.time_ns = 1;
    CONTINUUM_ASSIGN_OR_RETURN(repo::ManifestId id,
                               repo_->SaveManifest({.time_ns = 1, .roots = {root}, .payload = info.Encode()}));
    return FindPoint(*repo_, id.Hex());
  }

  Status RestoreCrafted(std::vector<DirEntry> entries) {
    auto p = Craft(std::move(entries));
    if (!p.ok()) return p.status();
    return Restore(*repo_, *p, {.target = (dir_ / "out" / "target").string()}).status();
  }

  bool OutsideTouched() {
    for (auto& e : fs::recursive_directory_iterator(dir_ / "out")) {
      if (e.path().string().rfind((dir_ / "out" / "target").string(), 0) != 0) return true;
    }
    return fs::exists(dir_ / "evil") || fs::exists("/tmp/evil-continuum");
  }
};

TEST_F(CraftedPointTest, DotDotNameIsRejected) {
  fs::create_directories(dir_ / "out");
  Status st = RestoreCrafted({{.name = "..", .type = EntryType::kDir}});
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  st = RestoreCrafted({{.name = "../../evil", .type = EntryType::kFile}});
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  st = RestoreCrafted({{.name = "/tmp/evil-continuum", .type = EntryType::kFile}});
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  st = RestoreCrafted({{.name = ".", .type = EntryType::kFile}});
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  st = RestoreCrafted({{.name = "", .type = EntryType::kFile}});
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  EXPECT_FALSE(OutsideTouched());
}

TEST_F(CraftedPointTest, SymlinkThenSameNamedDirectoryIsRejected) {
  fs::create_directories(dir_ / "out");
  // "x" -> .. followed by a directory "x" holding a file: would write out/evil.
  Status st = RestoreCrafted({{.name = "x", .type = EntryType::kSymlink, .link_target = ".."},
                              {.name = "x", .type = EntryType::kDir}});
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  EXPECT_FALSE(OutsideTouched());
}

TEST_F(CraftedPointTest, SymlinksAreCreatedButNeverFollowed) {
  fs::create_directories(dir_ / "out");
  // A symlink pointing outside is restored as a symlink; nothing is written through it.
  Status st = RestoreCrafted({{.name = "a", .type = EntryType::kSymlink, .link_target = "../.."},
                              {.name = "b", .type = EntryType::kFile}});
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(fs::is_symlink(dir_ / "out" / "target" / "a"));
  EXPECT_FALSE(OutsideTouched());
}

TEST_F(CraftedPointTest, HardLinkGroupsOnlyLinkToFilesOfThisRestore) {
  fs::create_directories(dir_ / "out");
  // Two members of one group: the second links to the first, inside the target.
  Status st = RestoreCrafted({{.name = "a", .type = EntryType::kFile, .hardlink_group = 7},
                              {.name = "b", .type = EntryType::kFile, .hardlink_group = 7}});
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(fs::hard_link_count(dir_ / "out" / "target" / "a"), 2u);
}

TEST_F(CraftedPointTest, BadRefsAndSizesAreDataLoss) {
  fs::create_directories(dir_ / "out");
  Status st = RestoreCrafted({{.name = "d", .type = EntryType::kDir, .subtree = 5}});
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  // A file whose chunks do not add up to its size.
  auto p = Craft({{.name = "f", .type = EntryType::kFile}});
  ASSERT_TRUE(p.ok());
  std::vector<DirEntry> lie = {{.name = "g", .type = EntryType::kFile, .size = 1000, .chunks = {0, -1000000}}};
  auto enc = EncodeDirListing(lie);
  auto dec = DecodeDirListing(enc, 2, "t");
  ASSERT_TRUE(dec.ok());
  EXPECT_FALSE(DecodeDirListing(enc, 0, "t").ok());  // ref 0 out of range
}

TEST(DirListingTest, GarbageDoesNotDecode) {
  EXPECT_EQ(DecodeDirListing({1, 2, 3}, 0, "t").status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(DecodeDirListing({}, 0, "t").status().code(), StatusCode::kDataLoss);
  EXPECT_TRUE(IsSafeEntryName("a.b"));
  EXPECT_FALSE(IsSafeEntryName(std::string("a\0b", 3)));
}

}  // namespace
}  // namespace continuum::backup
