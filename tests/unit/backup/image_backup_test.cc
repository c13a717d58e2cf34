// Covers src/backup/image_backup.cc, image_restore.cc, image_map.cc: images
// with zero regions round-trip, zeros are elided, unchanged data dedups.
#include "continuum/backup/image_backup.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "backup/image_map.h"
#include "backup_test_util.h"
#include "continuum/backup/point_catalog.h"
#include "continuum/backup/restore.h"

namespace continuum::backup {
namespace {

using testing::RandomBytes;
using testing::ReadFile;
using testing::WriteFile;

class ImageBackupTest : public testing::BackupTest {
 protected:
  // 3 MiB + 1000 bytes: random, a long zero run, random, a short tail.
  std::vector<uint8_t> MakeImage(uint64_t seed) {
    std::vector<uint8_t> img = RandomBytes((3 << 20) + 1000, seed);
    std::fill(img.begin() + (512 << 10), img.begin() + (2 << 20), 0);
    return img;
  }
};

TEST_F(ImageBackupTest, RoundTripWithZerosIsByteIdenticalAndSparse) {
  auto img = MakeImage(1);
  WriteFile(dir_ / "disk.img", img);
  auto p = BackupImage(*repo_, {.source = (dir_ / "disk.img").string(), .tags = {"t1"}});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->size, img.size());
  EXPECT_EQ(p->kind, "full");
  // 1.5 MiB of zeros are never stored.
  EXPECT_LE(p->new_raw_bytes, img.size() - (3u << 19) + 4096);

  auto points = ListPoints(*repo_);
  ASSERT_TRUE(points.ok());
  ASSERT_EQ(points->size(), 1u);
  EXPECT_EQ((*points)[0].tags, std::vector<std::string>{"t1"});
  EXPECT_EQ((*points)[0].type, PointType::kImage);

  auto out = dir_ / "restored.img";
  auto rep = Restore(*repo_, (*points)[0], {.target = out.string(), .verify = true});
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_EQ(ReadFile(out), img);
  EXPECT_EQ(rep->bytes_verified, img.size());
  struct stat st;
  ASSERT_EQ(::stat(out.c_str(), &st), 0);
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, img.size() - (1u << 20));  // the zeros are a hole
}

TEST_F(ImageBackupTest, SparseSourceHolesAreSkippedAndRoundTrip) {
  // A sparse file: data islands at offsets that do not fall on chunk (or even
  // 4 KiB) boundaries, holes between them, a hole at the end, an odd size.
  const uint64_t size = (9ull << 20) + 12345;
  auto path = dir_ / "sparse.img";
  std::vector<uint8_t> model(size, 0);
  {
    FILE* f = fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    fclose(f);
    std::filesystem::resize_file(path, size);
    int fd = ::open(path.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    const std::pair<uint64_t, uint64_t> islands[] = {
        {0, 100}, {(1ull << 20) - 10, 20}, {(3ull << 20) + 4097, 300000}, {(7ull << 20) + 1, 5000}};
    uint64_t seed = 40;
    for (auto [off, len] : islands) {
      auto d = RandomBytes(len, seed++);
      ASSERT_EQ(::pwrite(fd, d.data(), d.size(), static_cast<off_t>(off)), static_cast<ssize_t>(d.size()));
      std::copy(d.begin(), d.end(), model.begin() + static_cast<std::ptrdiff_t>(off));
    }
    ::close(fd);
  }
  auto p = BackupImage(*repo_, {.source = path.string()});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->size, size);
  auto points = ListPoints(*repo_);
  ASSERT_TRUE(points.ok());
  auto out = dir_ / "sparse-restored.img";
  auto rep = Restore(*repo_, points->back(), {.target = out.string(), .verify = true});
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_EQ(ReadFile(out), model);
}

TEST_F(ImageBackupTest, RestoreOverExistingFileClearsOldData) {
  auto img = MakeImage(2);
  WriteFile(dir_ / "disk.img", img);
  auto p = BackupImage(*repo_, {.source = (dir_ / "disk.img").string()});
  ASSERT_TRUE(p.ok());
  auto out = dir_ / "restored.img";
  WriteFile(out, RandomBytes(5 << 20, 9));  // larger and full of garbage
  ASSERT_TRUE(Restore(*repo_, *p, {.target = out.string()}).ok());
  EXPECT_EQ(ReadFile(out), img);
}

TEST_F(ImageBackupTest, SecondBackupOfUnchangedImageStoresAlmostNothing) {
  auto img = MakeImage(3);
  WriteFile(dir_ / "disk.img", img);
  ASSERT_TRUE(BackupImage(*repo_, {.source = (dir_ / "disk.img").string()}).ok());
  img[100] ^= 1;  // one chunk changes
  WriteFile(dir_ / "disk.img", img);
  auto p2 = BackupImage(*repo_, {.source = (dir_ / "disk.img").string()});
  ASSERT_TRUE(p2.ok());
  // One 64 KiB chunk, one map tree and the root.
  EXPECT_LT(p2->new_raw_bytes, 80u << 10);
  auto out = dir_ / "r2.img";
  ASSERT_TRUE(Restore(*repo_, *p2, {.target = out.string(), .verify = true}).ok());
  EXPECT_EQ(ReadFile(out), img);
}

TEST_F(ImageBackupTest, EmptyImage) {
  WriteFile(dir_ / "empty.img", {});
  auto p = BackupImage(*repo_, {.source = (dir_ / "empty.img").string()});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  auto out = dir_ / "r.img";
  ASSERT_TRUE(Restore(*repo_, *p, {.target = out.string(), .verify = true}).ok());
  EXPECT_TRUE(ReadFile(out).empty());
}

TEST_F(ImageBackupTest, IncludeIsRejectedForImages) {
  WriteFile(dir_ / "disk.img", RandomBytes(1000, 4));
  auto p = BackupImage(*repo_, {.source = (dir_ / "disk.img").string()});
  ASSERT_TRUE(p.ok());
  auto rep = Restore(*repo_, *p, {.target = (dir_ / "x").string(), .includes = {"etc"}});
  EXPECT_EQ(rep.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(ImageBackupTest, MissingSourceNamesIt) {
  auto p = BackupImage(*repo_, {.source = (dir_ / "nope.img").string()});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("nope.img"), std::string::npos) << p.status().message();
}

TEST(ImageMapTest, DecodeRejectsCraftedMaps) {
  ImageMap m{.first_chunk = 0, .slots = {0, 1, kHoleSlot}};
  auto enc = EncodeImageMap(m);
  EXPECT_TRUE(DecodeImageMap(enc, 2, "t").ok());
  EXPECT_EQ(DecodeImageMap(enc, 1, "t").status().code(), StatusCode::kDataLoss);  // slot out of range
  enc.pop_back();
  EXPECT_EQ(DecodeImageMap(enc, 2, "t").status().code(), StatusCode::kDataLoss);  // truncated
  auto root = EncodeImageRoot({.size = 10 << 20, .chunk_size = 1 << 20, .chunks_per_map = 4});
  EXPECT_TRUE(DecodeImageRoot(root, 3, "t").ok());
  EXPECT_EQ(DecodeImageRoot(root, 2, "t").status().code(), StatusCode::kDataLoss);  // maps do not cover the size
  auto bad = EncodeImageRoot({.size = 10, .chunk_size = 1, .chunks_per_map = 4});
  EXPECT_EQ(DecodeImageRoot(bad, 1, "t").status().code(), StatusCode::kDataLoss);
}

}  // namespace
}  // namespace continuum::backup
