// Covers src/backup/mount_path_tree.cc: a path point browsed as an inode
// table shows names, types, modes, times, symlinks and hard links as backed
// up, and file reads at any offset return the file's bytes (holes as zeros).
#include "backup/mount_path_tree.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup_test_util.h"
#include "continuum/backup/path_backup.h"

namespace continuum::backup {
namespace {

using testing::RandomBytes;
using testing::WriteFile;
namespace fs = std::filesystem;

class MountPathTreeTest : public testing::BackupTest {
 protected:
  void SetUp() override {
    testing::BackupTest::SetUp();
    src_ = dir_ / "src";
    fs::create_directories(src_ / "sub");
    big_ = RandomBytes(700 << 10, 3);
    std::fill(big_.begin() + (200 << 10), big_.begin() + (450 << 10), 0);  // becomes a hole
    WriteFile(src_ / "big.bin", big_);
    WriteFile(src_ / "sub" / "small.txt", {'h', 'i', '\n'});
    ::chmod((src_ / "sub" / "small.txt").c_str(), 0640);
    ASSERT_EQ(::symlink("sub/small.txt", (src_ / "link").c_str()), 0);
    ASSERT_EQ(::link((src_ / "big.bin").c_str(), (src_ / "sub" / "hard.bin").c_str()), 0);
    PathBackupOptions options;
    options.sources = {src_.string()};
    auto p = BackupPaths(*repo_, options);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    auto m = repo_->LoadManifest(p->id);
    ASSERT_TRUE(m.ok());
    auto blobs = std::make_shared<MountBlobCache>(repo_.get(), 1 << 20);
    auto t = MountPathTree::Open(blobs, m->roots[0], p->time_ns);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    tree_ = std::move(*t);
  }

  uint64_t Walk(const std::vector<std::string>& parts) {
    uint64_t ino = MountPathTree::kRootIno;
    for (const auto& p : parts) {
      auto next = tree_->Lookup(ino, p);
      EXPECT_TRUE(next.ok()) << p << ": " << next.status().ToString();
      if (!next.ok()) return 0;
      ino = *next;
    }
    return ino;
  }

  fs::path src_;
  std::vector<uint8_t> big_;
  std::unique_ptr<MountPathTree> tree_;
};

TEST_F(MountPathTreeTest, ShowsTheTreeWithMetadata) {
  auto top = tree_->List(MountPathTree::kRootIno);
  ASSERT_TRUE(top.ok());
  ASSERT_EQ(top->size(), 1u);
  EXPECT_EQ((*top)[0].first, "src");
  uint64_t src = Walk({"src"});
  auto names = tree_->List(src);
  ASSERT_TRUE(names.ok());
  std::vector<std::string> got;
  for (auto& [n, i] : *names) got.push_back(n);
  EXPECT_EQ(got, (std::vector<std::string>{"big.bin", "link", "sub"}));

  uint64_t small = Walk({"src", "sub", "small.txt"});
  auto st = tree_->Attr(small);
  ASSERT_TRUE(st.ok());
  struct stat orig;
  ASSERT_EQ(::lstat((src_ / "sub" / "small.txt").c_str(), &orig), 0);
  EXPECT_TRUE(S_ISREG(st->st_mode));
  EXPECT_EQ(st->st_mode & 07777, 0640u);
  EXPECT_EQ(st->st_size, 3);
  EXPECT_EQ(st->st_uid, orig.st_uid);
  EXPECT_EQ(st->st_mtim.tv_sec, orig.st_mtim.tv_sec);
  EXPECT_EQ(st->st_mtim.tv_nsec, orig.st_mtim.tv_nsec);

  uint64_t link = Walk({"src", "link"});
  auto target = tree_->ReadLink(link);
  ASSERT_TRUE(target.ok());
  EXPECT_EQ(*target, "sub/small.txt");
  EXPECT_TRUE(S_ISLNK(tree_->Attr(link)->st_mode));

  // Hard links share one inode.
  EXPECT_EQ(Walk({"src", "big.bin"}), Walk({"src", "sub", "hard.bin"}));
  EXPECT_EQ(tree_->Attr(Walk({"src", "big.bin"}))->st_nlink, 2u);

  auto missing = tree_->Lookup(src, "nope");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST_F(MountPathTreeTest, ReadsReturnTheFileBytesAtAnyOffset) {
  uint64_t big = Walk({"src", "big.bin"});
  std::vector<uint8_t> all(big_.size());
  size_t off = 0;
  while (off < all.size()) {
    auto n = tree_->Read(big, off, std::span<uint8_t>(all.data() + off, std::min<size_t>(33333, all.size() - off)));
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    ASSERT_GT(*n, 0u);
    off += *n;
  }
  EXPECT_EQ(all, big_);
  // Random access (backwards) after the lengths are known, and past the end.
  std::vector<uint8_t> piece(5000);
  auto n = tree_->Read(big, 600000, piece);
  ASSERT_TRUE(n.ok());
  EXPECT_TRUE(std::equal(piece.begin(), piece.end(), big_.begin() + 600000));
  n = tree_->Read(big, big_.size() - 10, piece);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 10u);
  EXPECT_EQ(*tree_->Read(big, big_.size() + 5, piece), 0u);
}

TEST_F(MountPathTreeTest, FirstReadDeepInAFileWorks) {
  auto blobs = std::make_shared<MountBlobCache>(repo_.get(), 1 << 20);
  uint64_t big = Walk({"src", "sub", "hard.bin"});
  std::vector<uint8_t> piece(1000);
  auto n = tree_->Read(big, 650000, piece);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_TRUE(std::equal(piece.begin(), piece.end(), big_.begin() + 650000));
}

}  // namespace
}  // namespace continuum::backup
