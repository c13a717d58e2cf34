// Covers src/backup/path_backup.cc, path_restore.cc, dir_listing.cc: trees
// with metadata round-trip; excludes and includes select what is expected.
#include "continuum/backup/path_backup.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "backup_test_util.h"
#include "continuum/backup/restore.h"

namespace continuum::backup {
namespace {

namespace fs = std::filesystem;
using testing::RandomBytes;
using testing::ReadFile;
using testing::WriteFile;

struct stat Lstat(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
  return st;
}

void SetTimes(const fs::path& p, int64_t sec) {
  struct timespec ts[2] = {{sec, 123}, {sec, 456789}};
  ASSERT_EQ(::utimensat(AT_FDCWD, p.c_str(), ts, AT_SYMLINK_NOFOLLOW), 0) << p;
}

class PathBackupTest : public testing::BackupTest {
 protected:
  void MakeTree() {
    src_ = dir_ / "src";
    fs::create_directories(src_ / "sub" / "deep");
    WriteFile(src_ / "big.bin", RandomBytes(3 << 20, 1));
    WriteFile(src_ / "sub" / "small.txt", {'h', 'i', '\n'});
    WriteFile(src_ / "sub" / "deep" / "empty", {});
    WriteFile(src_ / "skip.o", {'x'});
    // A sparse file: data, a 2 MiB hole, data.
    int fd = ::open((src_ / "sparse").c_str(), O_CREAT | O_WRONLY, 0640);
    ASSERT_GE(fd, 0);
    auto d = RandomBytes(100000, 2);
    ASSERT_EQ(::pwrite(fd, d.data(), d.size(), 0), static_cast<ssize_t>(d.size()));
    ASSERT_EQ(::pwrite(fd, d.data(), d.size(), 3 << 20), static_cast<ssize_t>(d.size()));
    ::close(fd);
    fs::create_symlink("sub/small.txt", src_ / "link");
    fs::create_symlink("/etc/passwd", src_ / "abs-link");
    fs::create_hard_link(src_ / "sub" / "small.txt", src_ / "hard");
    ASSERT_EQ(::mkfifo((src_ / "fifo").c_str(), 0604), 0);
    ASSERT_EQ(::chmod((src_ / "big.bin").c_str(), 04751), 0);
    ASSERT_EQ(::chown((src_ / "sub" / "small.txt").c_str(), 1234, 5678), 0);
    ASSERT_EQ(::setxattr((src_ / "big.bin").c_str(), "user.note", "v1", 2, 0), 0);
    SetTimes(src_ / "link", 1000000);
    SetTimes(src_ / "sub" / "deep", 2000000);
    SetTimes(src_ / "big.bin", 3000000);
    SetTimes(src_ / "sub", 4000000);
  }

  void ExpectSameMeta(const fs::path& a, const fs::path& b) {
    struct stat sa = Lstat(a), sb = Lstat(b);
    EXPECT_EQ(sa.st_mode, sb.st_mode) << b;
    EXPECT_EQ(sa.st_uid, sb.st_uid) << b;
    EXPECT_EQ(sa.st_gid, sb.st_gid) << b;
    EXPECT_EQ(sa.st_mtim.tv_sec, sb.st_mtim.tv_sec) << b;
    EXPECT_EQ(sa.st_mtim.tv_nsec, sb.st_mtim.tv_nsec) << b;
    if (S_ISREG(sa.st_mode)) {
      EXPECT_EQ(sa.st_size, sb.st_size) << b;
      EXPECT_EQ(ReadFile(a), ReadFile(b)) << b;
    }
  }

  fs::path src_;
};

TEST_F(PathBackupTest, RoundTripKeepsContentAndMetadata) {
  MakeTree();
  auto p = BackupPaths(*repo_, {.sources = {src_.string()}, .excludes = {"*.o"}});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->warnings, 0u);
  auto to = dir_ / "out";
  auto rep = Restore(*repo_, *p, {.target = to.string(), .verify = true});
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  fs::path r = to / "src";
  for (const char* rel : {"big.bin", "sub", "sub/small.txt", "sub/deep", "sub/deep/empty", "sparse", "link",
                          "abs-link", "hard", "fifo"}) {
    ExpectSameMeta(src_ / rel, r / rel);
  }
  EXPECT_FALSE(fs::exists(r / "skip.o"));
  EXPECT_EQ(fs::read_symlink(r / "abs-link"), "/etc/passwd");
  EXPECT_EQ(Lstat(r / "hard").st_ino, Lstat(r / "sub" / "small.txt").st_ino);
  EXPECT_TRUE(S_ISFIFO(Lstat(r / "fifo").st_mode));
  char v[8] = {};
  ASSERT_EQ(::getxattr((r / "big.bin").c_str(), "user.note", v, sizeof(v)), 2);
  EXPECT_STREQ(v, "v1");
  EXPECT_LT(Lstat(r / "sparse").st_blocks * 512, 1 << 20);  // the hole stays a hole
  EXPECT_GT(rep->bytes_verified, 3u << 20);
}

TEST_F(PathBackupTest, UnchangedTreeDedups) {
  MakeTree();
  auto p1 = BackupPaths(*repo_, {.sources = {src_.string()}});
  ASSERT_TRUE(p1.ok());
  auto p2 = BackupPaths(*repo_, {.sources = {src_.string()}});
  ASSERT_TRUE(p2.ok());
  EXPECT_EQ(p2->new_raw_bytes, 0u);  // the same trees, byte for byte
}

TEST_F(PathBackupTest, IncludeRestoresOnlyMatches) {
  MakeTree();
  auto p = BackupPaths(*repo_, {.sources = {src_.string()}});
  ASSERT_TRUE(p.ok());
  auto to = dir_ / "out";
  ASSERT_TRUE(Restore(*repo_, *p, {.target = to.string(), .includes = {"src/sub/deep"}}).ok());
  EXPECT_TRUE(fs::exists(to / "src" / "sub" / "deep" / "empty"));
  EXPECT_FALSE(fs::exists(to / "src" / "big.bin"));
  EXPECT_FALSE(fs::exists(to / "src" / "sub" / "small.txt"));
  auto none = Restore(*repo_, *p, {.target = (dir_ / "none").string(), .includes = {"nothing*"}});
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
}

TEST_F(PathBackupTest, RestoreReplacesPlantedSymlinksInsteadOfFollowingThem) {
  MakeTree();
  auto p = BackupPaths(*repo_, {.sources = {src_.string()}});
  ASSERT_TRUE(p.ok());
  auto outside = dir_ / "outside";
  fs::create_directories(outside);
  auto to = dir_ / "out";
  fs::create_directories(to / "src");
  fs::create_directory_symlink(outside, to / "src" / "sub");            // a directory that is a symlink
  fs::create_symlink(outside / "big.bin", to / "src" / "big.bin");      // a file that is a symlink
  ASSERT_TRUE(Restore(*repo_, *p, {.target = to.string()}).ok());
  EXPECT_TRUE(fs::is_empty(outside));
  EXPECT_FALSE(fs::is_symlink(to / "src" / "sub"));
  EXPECT_EQ(ReadFile(to / "src" / "big.bin"), ReadFile(src_ / "big.bin"));
}

TEST_F(PathBackupTest, TwoSourcesWithTheSameNameAreRefused) {
  fs::create_directories(dir_ / "a" / "x");
  fs::create_directories(dir_ / "b" / "x");
  auto p = BackupPaths(*repo_, {.sources = {(dir_ / "a" / "x").string(), (dir_ / "b" / "x").string()}});
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace continuum::backup
