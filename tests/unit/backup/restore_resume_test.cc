// Covers resuming in src/backup/image_restore.cc and path_restore.cc: what a
// progress file records is complete in the target, a resumed restore writes
// only the rest, and --verify covers what the interrupted run wrote.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>

#include "backup/restore_progress.h"
#include "backup_test_util.h"
#include "continuum/backup/image_backup.h"
#include "continuum/backup/path_backup.h"
#include "continuum/backup/restore.h"

namespace continuum::backup {
namespace {

using testing::RandomBytes;
using testing::ReadFile;
using testing::WriteFile;
namespace fs = std::filesystem;

constexpr uint64_t kChunk = 64 << 10;  // BackupTest's fixed chunk size

class RestoreResumeTest : public testing::BackupTest {
 protected:
  std::vector<uint8_t> MakeImage() {
    std::vector<uint8_t> img = RandomBytes((3 << 20) + 1000, 7);
    std::fill(img.begin() + (1 << 20), img.begin() + (3 << 19), 0);  // a zero region: holes
    return img;
  }
  PointInfo ImagePoint(const std::vector<uint8_t>& img) {
    WriteFile(dir_ / "disk.img", img);
    auto p = BackupImage(*repo_, {.source = (dir_ / "disk.img").string()});
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    return *p;
  }
  // What an interrupted image restore leaves: the first `done` chunks written,
  // the rest zeros, and a progress file saying so.
  void Interrupted(const PointInfo& p, const std::vector<uint8_t>& img, const fs::path& out, uint64_t done) {
    std::vector<uint8_t> partial(img.size(), 0);
    std::copy(img.begin(), img.begin() + static_cast<long>(done * kChunk), partial.begin());
    WriteFile(out, partial);
    RestoreProgressFile pf(out.string() + ".continuum-restore");
    RestoreProgress rec{.point = p.id,
                        .type = PointType::kImage,
                        .options = RestoreOptionsDigest(PointType::kImage, {}, kChunk, img.size()),
                        .done = done,
                        .total = (img.size() + kChunk - 1) / kChunk,
                        .bytes_done = done * kChunk,
                        .bytes_total = img.size()};
    ASSERT_TRUE(pf.Save(rec).ok());
  }
};

TEST_F(RestoreResumeTest, ImageResumesAtTheRecordedChunk) {
  auto img = MakeImage();
  PointInfo p = ImagePoint(img);
  auto out = dir_ / "out.img";
  Interrupted(p, img, out, 20);
  std::string notice;
  auto rep =
      Restore(*repo_, p, {.target = out.string(), .verify = true, .notice = [&](const std::string& m) { notice = m; }});
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_TRUE(rep->resumed);
  EXPECT_EQ(rep->bytes_resumed, 20 * kChunk);
  // Only chunks past 20 are written; 20..23 are zeros, left as holes (not written).
  EXPECT_EQ(rep->bytes_written, img.size() - 24 * kChunk);
  EXPECT_EQ(rep->bytes_verified, img.size());
  EXPECT_NE(notice.find("resuming restore of " + p.id.Hex().substr(0, 12) + " at 1.2 MiB of 3.0 MiB"),
            std::string::npos)
      << notice;
  EXPECT_EQ(ReadFile(out), img);
  EXPECT_FALSE(fs::exists(out.string() + ".continuum-restore"));
}

TEST_F(RestoreResumeTest, VerifyAfterResumeCoversWhatTheInterruptedRunWrote) {
  auto img = MakeImage();
  PointInfo p = ImagePoint(img);
  auto out = dir_ / "out.img";
  Interrupted(p, img, out, 20);
  // Damage inside the part the interrupted run "wrote": only --verify sees it.
  std::vector<uint8_t> bytes = ReadFile(out);
  bytes[5 * kChunk + 3] ^= 1;
  WriteFile(out, bytes);
  auto rep = Restore(*repo_, p, {.target = out.string(), .verify = true});
  ASSERT_FALSE(rep.ok());
  EXPECT_EQ(rep.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(rep.status().message().find("offset " + std::to_string(5 * kChunk)), std::string::npos)
      << rep.status().message();
  // The next run starts over rather than resuming onto bad data.
  EXPECT_FALSE(fs::exists(out.string() + ".continuum-restore"));
  rep = Restore(*repo_, p, {.target = out.string(), .verify = true});
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_FALSE(rep->resumed);
  EXPECT_EQ(ReadFile(out), img);
}

TEST_F(RestoreResumeTest, RecordedProgressIsAlwaysWritten) {
  auto img = MakeImage();
  PointInfo p = ImagePoint(img);
  auto out = dir_ / "out.img";
  RestoreProgressFile pf(out.string() + ".continuum-restore");
  uint64_t max_done = 0, checks = 0;
  auto on_progress = [&](const Progress&) {
    auto rec = pf.Load();
    ASSERT_TRUE(rec.ok()) << rec.status().ToString();  // present from the start to the end
    max_done = std::max(max_done, rec->done);
    // Every chunk the record calls complete holds the image's bytes.
    std::vector<uint8_t> now = ReadFile(out);
    ASSERT_EQ(now.size(), img.size());
    uint64_t n = std::min<uint64_t>(rec->done * kChunk, img.size());
    EXPECT_TRUE(std::equal(img.begin(), img.begin() + static_cast<long>(n), now.begin())) << rec->done;
    ++checks;
  };
  auto rep = Restore(*repo_, p, {.target = out.string(), .checkpoint_bytes = 3 * kChunk}, on_progress);
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_GT(checks, 10u);
  EXPECT_GE(max_done, 30u);
  EXPECT_FALSE(fs::exists(pf.path()));
}

TEST_F(RestoreResumeTest, AnotherPointIsRefusedUnlessRestart) {
  auto img = MakeImage();
  PointInfo p = ImagePoint(img);
  auto other_img = RandomBytes(100000, 9);
  WriteFile(dir_ / "other.img", other_img);
  auto other = BackupImage(*repo_, {.source = (dir_ / "other.img").string()});
  ASSERT_TRUE(other.ok());
  auto out = dir_ / "out.img";
  Interrupted(p, img, out, 20);
  auto rep = Restore(*repo_, *other, {.target = out.string()});
  ASSERT_FALSE(rep.ok());
  EXPECT_EQ(rep.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(rep.status().message().find("--restart"), std::string::npos);
  EXPECT_EQ(fs::file_size(out), img.size());  // untouched
  rep = Restore(*repo_, *other, {.target = out.string(), .verify = true, .restart = true});
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_EQ(ReadFile(out), other_img);
}

// A restore that fails midway keeps its progress; once the obstacle is gone the
// same restore resumes and ends identical to a full one.
TEST_F(RestoreResumeTest, TreeResumesAfterAFailureMidway) {
  fs::path src = dir_ / "src";
  fs::create_directories(src / "d");
  for (int i = 0; i < 200; ++i) {
    char name[16];
    std::snprintf(name, sizeof(name), "f%03d", i);
    WriteFile(src / "d" / name, RandomBytes(4096 + i, i));
    fs::permissions(src / "d" / name, static_cast<fs::perms>(0600 + i % 8));
  }
  fs::create_hard_link(src / "d" / "f000", src / "d" / "g-hard");
  fs::create_symlink("f001", src / "d" / "h-link");
  WriteFile(src / "z", RandomBytes(1000, 1000));
  auto p = BackupPaths(*repo_, {.sources = {src.string()}});
  ASSERT_TRUE(p.ok()) << p.status().ToString();

  fs::path out = dir_ / "out";
  fs::create_directories(out / "src" / "z");  // a directory where the file "z" goes: the restore fails there
  WriteFile(out / "src" / "z" / "x", {1});
  RestoreOptions o{.target = out.string(), .verify = true, .checkpoint_interval_ns = 0};
  auto rep = Restore(*repo_, *p, o);
  ASSERT_FALSE(rep.ok());
  EXPECT_NE(rep.status().message().find("is a directory"), std::string::npos) << rep.status().message();
  RestoreProgressFile pf((out / ".continuum-restore").string());
  auto rec = pf.Load();
  ASSERT_TRUE(rec.ok()) << rec.status().ToString();
  EXPECT_GT(rec->done, 50u);  // files completed behind the pending window were recorded

  fs::remove_all(out / "src" / "z");
  std::string notice;
  o.notice = [&](const std::string& m) { notice = m; };
  rep = Restore(*repo_, *p, o);
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_TRUE(rep->resumed);
  EXPECT_NE(notice.find("at entry " + std::to_string(rec->done)), std::string::npos) << notice;
  EXPECT_GT(rep->bytes_resumed, 0u);
  EXPECT_FALSE(fs::exists(pf.path()));
  uint64_t total = 0;
  for (auto& e : fs::recursive_directory_iterator(src)) {
    if (!e.is_regular_file() || e.is_symlink() || e.path().filename() == "g-hard") continue;
    total += e.file_size();
    fs::path b = out / "src" / fs::relative(e.path(), src);
    EXPECT_EQ(ReadFile(e.path()), ReadFile(b)) << b;
    EXPECT_EQ(fs::status(e.path()).permissions(), fs::status(b).permissions()) << b;
  }
  EXPECT_LT(rep->bytes_written, total);
  EXPECT_EQ(rep->bytes_verified, total);  // the resumed files were verified too
  struct stat a, b;
  ASSERT_EQ(::stat((out / "src" / "d" / "g-hard").c_str(), &a), 0);
  ASSERT_EQ(::stat((out / "src" / "d" / "f000").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(fs::read_symlink(out / "src" / "d" / "h-link"), "f001");
}

}  // namespace
}  // namespace continuum::backup
