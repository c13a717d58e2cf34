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

// Every entry under `a` has an equal twin under `b`: type, mode, owner, mtime,
// size, content, symlink target, xattrs; and `b` has nothing more.
void ExpectSameTree(const fs::path& a, const fs::path& b) {
  size_t n = 0;
  for (auto it = fs::recursive_directory_iterator(a); it != fs::recursive_directory_iterator(); ++it) {
    fs::path rel = it->path().lexically_relative(a);  // relative() would resolve symlinks
    struct stat sa = Lstat(it->path()), sb = Lstat(b / rel);
    EXPECT_EQ(sa.st_mode, sb.st_mode) << rel;
    EXPECT_EQ(sa.st_uid, sb.st_uid) << rel;
    EXPECT_EQ(sa.st_gid, sb.st_gid) << rel;
    EXPECT_EQ(sa.st_mtim.tv_sec, sb.st_mtim.tv_sec) << rel;
    EXPECT_EQ(sa.st_mtim.tv_nsec, sb.st_mtim.tv_nsec) << rel;
    if (S_ISREG(sa.st_mode)) {
      EXPECT_EQ(sa.st_size, sb.st_size) << rel;
      EXPECT_EQ(ReadFile(it->path()), ReadFile(b / rel)) << rel;
    }
    if (S_ISLNK(sa.st_mode)) {
      EXPECT_EQ(fs::read_symlink(it->path()), fs::read_symlink(b / rel)) << rel;
    }
    char va[64] = {}, vb[64] = {};
    ssize_t la = ::lgetxattr(it->path().c_str(), "user.note", va, sizeof(va));
    ssize_t lb = ::lgetxattr((b / rel).c_str(), "user.note", vb, sizeof(vb));
    EXPECT_EQ(la, lb) << rel;
    if (la > 0) {
      EXPECT_EQ(std::string(va, la), std::string(vb, lb)) << rel;
    }
    ++n;
  }
  size_t m = 0;
  for (auto it = fs::recursive_directory_iterator(b); it != fs::recursive_directory_iterator(); ++it) ++m;
  EXPECT_EQ(n, m);
}

TEST_F(PathBackupTest, IncrementalReusesUnchangedFilesWithoutReadingThem) {
  MakeTree();
  auto p1 = BackupPaths(*repo_, {.sources = {src_.string()}});
  ASSERT_TRUE(p1.ok()) << p1.status().ToString();
  EXPECT_EQ(p1->kind, "full");  // the first point of a source
  EXPECT_GT(p1->bytes_read, 3u << 20);
  auto p2 = BackupPaths(*repo_, {.sources = {src_.string()}});
  ASSERT_TRUE(p2.ok()) << p2.status().ToString();
  EXPECT_EQ(p2->kind, "incremental");
  EXPECT_EQ(p2->parent, p1->id.Hex());
  EXPECT_EQ(p2->full, p1->id.Hex());
  // Every regular file was unchanged (the hard-linked pair shares one inode).
  EXPECT_EQ(p2->bytes_read, 0u);
  EXPECT_EQ(p2->new_raw_bytes, 0u);
  EXPECT_EQ(p2->size, p1->size);
  // --kind full reads everything again, and is the base of differentials.
  auto p3 = BackupPaths(*repo_, {.sources = {src_.string()}, .kind = BackupKind::kFull});
  ASSERT_TRUE(p3.ok());
  EXPECT_EQ(p3->kind, "full");
  EXPECT_EQ(p3->parent, "");
  EXPECT_EQ(p3->bytes_read, p1->bytes_read);
  WriteFile(src_ / "sub" / "new.txt", {'n'});
  auto p4 = BackupPaths(*repo_, {.sources = {src_.string()}});
  ASSERT_TRUE(p4.ok());
  auto p5 = BackupPaths(*repo_, {.sources = {src_.string()}, .kind = BackupKind::kDifferential});
  ASSERT_TRUE(p5.ok());
  EXPECT_EQ(p5->kind, "differential");
  EXPECT_EQ(p5->parent, p3->id.Hex());  // the last full, not the previous point
  EXPECT_EQ(p5->bytes_read, 1u);        // only new.txt is not in the full

  auto to = dir_ / "out";
  auto rep = Restore(*repo_, *p5, {.target = to.string(), .verify = true});
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  ExpectSameTree(src_, to / "src");
}

TEST_F(PathBackupTest, SameSizeAndMtimeButNewCtimeIsReadAgain) {
  MakeTree();
  auto p1 = BackupPaths(*repo_, {.sources = {src_.string()}});
  ASSERT_TRUE(p1.ok());
  // New content of the same size, then mtime set back to what it was (as
  // tar, rsync -t or touch -d would): only ctime tells.
  fs::path f = src_ / "big.bin";
  struct stat before = Lstat(f);
  auto changed = ReadFile(f);
  changed[12345] ^= 0xff;
  int fd = ::open(f.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, changed.data() + 12345, 1, 12345), 1);
  ::close(fd);
  struct timespec ts[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, f.c_str(), ts, 0), 0);
  struct stat after = Lstat(f);
  ASSERT_EQ(after.st_size, before.st_size);
  ASSERT_EQ(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
  // A changed xattr alone also moves ctime only.
  ASSERT_EQ(::setxattr((src_ / "sub" / "small.txt").c_str(), "user.note", "v2", 2, 0), 0);

  auto p2 = BackupPaths(*repo_, {.sources = {src_.string()}});
  ASSERT_TRUE(p2.ok());
  EXPECT_EQ(p2->kind, "incremental");
  EXPECT_EQ(p2->bytes_read, (3u << 20) + 3u);  // big.bin and small.txt (with its hard link), nothing else
  auto to = dir_ / "out";
  ASSERT_TRUE(Restore(*repo_, *p2, {.target = to.string()}).ok());
  EXPECT_EQ(ReadFile(to / "src" / "big.bin"), changed);
  ExpectSameTree(src_, to / "src");
}

TEST_F(PathBackupTest, ManyFilesAndHardLinksRestoreThroughThePrefetcher) {
  // More files than the restore keeps pending, hard links far apart, and
  // directories whose metadata is applied before their files' content.
  src_ = dir_ / "many";
  for (int d = 0; d < 6; ++d) {
    fs::path sub = src_ / ("d" + std::to_string(d));
    fs::create_directories(sub);
    for (int i = 0; i < 60; ++i) {
      WriteFile(sub / ("f" + std::to_string(i)), RandomBytes(static_cast<size_t>(i * 997 + d), d * 100 + i));
    }
    SetTimes(sub, 1000 + d);
  }
  fs::create_hard_link(src_ / "d0" / "f7", src_ / "d5" / "link-to-d0-f7");
  ASSERT_EQ(::chmod((src_ / "d3").c_str(), 0555), 0);
  SetTimes(src_ / "d5", 99);
  SetTimes(src_ / "d3", 77);
  auto p = BackupPaths(*repo_, {.sources = {src_.string()}, .threads = 3});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  auto to = dir_ / "out";
  auto rep = Restore(*repo_, *p, {.target = to.string(), .verify = true});
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  ExpectSameTree(src_, to / "many");
  EXPECT_EQ(Lstat(to / "many" / "d5" / "link-to-d0-f7").st_ino, Lstat(to / "many" / "d0" / "f7").st_ino);
  ::chmod((src_ / "d3").c_str(), 0755);
  ::chmod((to / "many" / "d3").c_str(), 0755);
}

TEST_F(PathBackupTest, TwoSourcesWithTheSameNameAreRefused) {
  fs::create_directories(dir_ / "a" / "x");
  fs::create_directories(dir_ / "b" / "x");
  auto p = BackupPaths(*repo_, {.sources = {(dir_ / "a" / "x").string(), (dir_ / "b" / "x").string()}});
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace continuum::backup
