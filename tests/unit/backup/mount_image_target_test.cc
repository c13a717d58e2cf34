// Covers src/backup/mount_image_target.cc and mount_blob_cache.cc: an image
// point read through the mount target equals the image at any offset and
// alignment, holes read as zeros, the cache stays bounded, writes land in the
// overlay only, and read-only targets refuse writes with EROFS.
#include "backup/mount_image_target.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <atomic>
#include <random>
#include <thread>

#include "backup_test_util.h"
#include "continuum/backup/image_backup.h"

namespace continuum::backup {
namespace {

using testing::RandomBytes;
using testing::WriteFile;

class MountImageTargetTest : public testing::BackupTest {
 protected:
  // 2 MiB + 3000 bytes (chunk size 64 KiB in tests): random with a zero run.
  void SetUp() override {
    testing::BackupTest::SetUp();
    img_ = RandomBytes((2 << 20) + 3000, 7);
    std::fill(img_.begin() + (300 << 10), img_.begin() + (900 << 10), 0);
    WriteFile(dir_ / "disk.img", img_);
    auto p = BackupImage(*repo_, {.source = (dir_ / "disk.img").string()});
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    auto m = repo_->LoadManifest(p->id);
    ASSERT_TRUE(m.ok());
    root_ = m->roots[0];
  }

  std::unique_ptr<MountImageTarget> OpenTarget(uint64_t cache_bytes, bool writable) {
    blobs_ = std::make_shared<MountBlobCache>(repo_.get(), cache_bytes);
    auto t = MountImageTarget::Open(blobs_, root_, {.writable = writable, .overlay_dir = dir_.string()});
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return t.ok() ? std::move(*t) : nullptr;
  }

  std::vector<uint8_t> ReadAll(MountImageTarget& t, size_t step) {
    std::vector<uint8_t> out(t.Size());
    for (size_t off = 0; off < out.size(); off += step) {
      size_t n = std::min(step, out.size() - off);
      EXPECT_TRUE(t.Read(off, std::span<uint8_t>(out.data() + off, n)).ok());
    }
    return out;
  }

  std::vector<uint8_t> img_;
  repo::BlobId root_;
  std::shared_ptr<MountBlobCache> blobs_;
};

TEST_F(MountImageTargetTest, ReadsEqualTheImageAtAnyAlignment) {
  auto t = OpenTarget(16 << 20, false);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->Size(), img_.size());
  EXPECT_TRUE(t->ReadOnly());
  EXPECT_EQ(ReadAll(*t, 4096), img_);
  EXPECT_EQ(ReadAll(*t, 100000), img_);  // spans chunk boundaries
  std::vector<uint8_t> tail(1234);
  ASSERT_TRUE(t->Read(img_.size() - tail.size(), tail).ok());
  EXPECT_TRUE(std::equal(tail.begin(), tail.end(), img_.end() - tail.size()));
  std::vector<uint8_t> past(10);
  EXPECT_FALSE(t->Read(img_.size() - 5, past).ok());
}

TEST_F(MountImageTargetTest, CacheStaysBoundedAndHolesCostNothing) {
  auto t = OpenTarget(128 << 10, false);  // two 64 KiB chunks
  ASSERT_TRUE(t);
  EXPECT_EQ(ReadAll(*t, 65536), img_);
  EXPECT_LE(blobs_->cached_bytes(), 128u << 10);
  const uint64_t misses = blobs_->misses();
  std::vector<uint8_t> hole(64 << 10);
  ASSERT_TRUE(t->Read(512 << 10, hole).ok());  // inside the zero run: a hole
  EXPECT_TRUE(std::all_of(hole.begin(), hole.end(), [](uint8_t b) { return b == 0; }));
  EXPECT_EQ(blobs_->misses(), misses);
}

TEST_F(MountImageTargetTest, ReadOnlyRefusesWritesWithErofs) {
  auto t = OpenTarget(1 << 20, false);
  ASSERT_TRUE(t);
  std::vector<uint8_t> data(4096, 0xAB);
  Status st = t->Write(0, data, false);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.sys_errno(), EROFS);
}

TEST_F(MountImageTargetTest, WritesGoToTheOverlayAndNeverToTheRepository) {
  auto t = OpenTarget(1 << 20, true);
  ASSERT_TRUE(t);
  EXPECT_FALSE(t->ReadOnly());
  std::vector<uint8_t> expect = img_;
  // Unaligned writes across block and chunk boundaries, and into a hole.
  std::vector<uint8_t> a = RandomBytes(10000, 99);
  ASSERT_TRUE(t->Write(65536 - 777, a, false).ok());
  std::copy(a.begin(), a.end(), expect.begin() + 65536 - 777);
  std::vector<uint8_t> b(100, 0x5A);
  ASSERT_TRUE(t->Write(600 << 10, b, false).ok());
  std::copy(b.begin(), b.end(), expect.begin() + (600 << 10));
  ASSERT_TRUE(t->WriteZeroes(1 << 20, 5000, false).ok());
  std::fill(expect.begin() + (1 << 20), expect.begin() + (1 << 20) + 5000, 0);
  EXPECT_EQ(ReadAll(*t, 4096), expect);
  EXPECT_EQ(ReadAll(*t, 70000), expect);
  EXPECT_GT(t->overlay_blocks(), 0u);

  // A fresh target of the same point still reads the original image.
  auto fresh = OpenTarget(1 << 20, false);
  ASSERT_TRUE(fresh);
  EXPECT_EQ(ReadAll(*fresh, 65536), img_);
}

TEST_F(MountImageTargetTest, ConcurrentReadersSeeTheImage) {
  auto t = OpenTarget(256 << 10, false);  // a small cache: readers evict each other's chunks
  ASSERT_TRUE(t);
  std::vector<std::thread> readers;
  std::atomic<int> bad{0};
  for (int r = 0; r < 4; ++r) {
    readers.emplace_back([&, r] {
      std::mt19937_64 rng(r);
      std::vector<uint8_t> buf;
      for (int i = 0; i < 200; ++i) {
        uint64_t off = rng() % img_.size();
        size_t n = static_cast<size_t>(std::min<uint64_t>(1 + rng() % 200000, img_.size() - off));
        buf.resize(n);
        if (!t->Read(off, buf).ok() || !std::equal(buf.begin(), buf.end(), img_.begin() + off)) ++bad;
      }
    });
  }
  for (auto& th : readers) th.join();
  EXPECT_EQ(bad.load(), 0);
}

}  // namespace
}  // namespace continuum::backup
