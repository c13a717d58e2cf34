// Covers src/backup/retention.cc (keep rules, grouping, pins, forget) and
// point_files.cc (ls of path points).
#include "continuum/backup/retention.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <time.h>

#include <set>

#include "backup_test_util.h"
#include "continuum/backup/image_backup.h"
#include "continuum/backup/path_backup.h"
#include "continuum/backup/point_catalog.h"
#include "continuum/backup/point_files.h"

namespace continuum::backup {
namespace {

namespace fs = std::filesystem;
using testing::RandomBytes;
using testing::WriteFile;

constexpr int64_t kSec = 1000000000;
constexpr int64_t kHour = 3600 * kSec;
constexpr int64_t kDay = 24 * kHour;
constexpr int64_t kJan1st2024 = 1704067200 * kSec;  // a Monday, ISO week 1

PointInfo At(int64_t time_ns, const std::string& source = "/data", bool pinned = false) {
  PointInfo p;
  p.type = PointType::kPath;
  p.host = "h";
  p.sources = {source};
  p.time_ns = time_ns;
  p.pinned = pinned;
  p.id.bytes[0] = static_cast<uint8_t>(time_ns / kHour);
  p.id.bytes[1] = static_cast<uint8_t>(time_ns / kHour >> 8);
  p.id.bytes[2] = static_cast<uint8_t>(source.size());
  return p;
}

std::set<int64_t> KeptTimes(const std::vector<RetentionDecision>& ds) {
  std::set<int64_t> out;
  for (const auto& d : ds) {
    if (d.keep) out.insert(d.point.time_ns);
  }
  return out;
}

class RetentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Buckets are local time: make the test independent of the machine's zone.
    const char* tz = ::getenv("TZ");
    old_tz_ = tz ? tz : "";
    had_tz_ = tz != nullptr;
    ::setenv("TZ", "UTC", 1);
    ::tzset();
  }
  void TearDown() override {
    if (had_tz_) {
      ::setenv("TZ", old_tz_.c_str(), 1);
    } else {
      ::unsetenv("TZ");
    }
    ::tzset();
  }
  std::string old_tz_;
  bool had_tz_ = false;
};

TEST_F(RetentionTest, KeepLastKeepsTheNewest) {
  std::vector<PointInfo> ps;
  for (int i = 0; i < 5; ++i) ps.push_back(At(kJan1st2024 + i * kHour));
  auto kept = KeptTimes(ApplyRetention(ps, {.keep_last = 2}));
  EXPECT_EQ(kept, (std::set<int64_t>{kJan1st2024 + 3 * kHour, kJan1st2024 + 4 * kHour}));
}

TEST_F(RetentionTest, KeepDailyKeepsTheNewestOfEachDay) {
  std::vector<PointInfo> ps;
  for (int i = 0; i < 20; ++i) ps.push_back(At(kJan1st2024 + i * 6 * kHour));  // 4 a day, 5 days
  auto kept = KeptTimes(ApplyRetention(ps, {.keep_daily = 3}));
  EXPECT_EQ(kept, (std::set<int64_t>{kJan1st2024 + 2 * kDay + 18 * kHour, kJan1st2024 + 3 * kDay + 18 * kHour,
                                     kJan1st2024 + 4 * kDay + 18 * kHour}));
}

TEST_F(RetentionTest, KeepWeeklyUsesIsoWeeks) {
  std::vector<PointInfo> ps;
  for (int i = 0; i < 21; ++i) ps.push_back(At(kJan1st2024 + i * kDay + 12 * kHour));
  auto kept = KeptTimes(ApplyRetention(ps, {.keep_weekly = 2}));
  // The Sundays ending weeks 2 and 3.
  EXPECT_EQ(kept, (std::set<int64_t>{kJan1st2024 + 13 * kDay + 12 * kHour, kJan1st2024 + 20 * kDay + 12 * kHour}));
}

TEST_F(RetentionTest, KeepMonthlyAndYearly) {
  int64_t jun15_2022 = 1655251200 * kSec, mar1_2023 = 1677628800 * kSec, dec31_2023 = 1703980800 * kSec,
          jan5_2024 = kJan1st2024 + 4 * kDay;
  std::vector<PointInfo> ps = {At(jun15_2022), At(mar1_2023), At(dec31_2023), At(jan5_2024)};
  EXPECT_EQ(KeptTimes(ApplyRetention(ps, {.keep_yearly = 2})), (std::set<int64_t>{dec31_2023, jan5_2024}));
  EXPECT_EQ(KeptTimes(ApplyRetention(ps, {.keep_monthly = 3})), (std::set<int64_t>{mar1_2023, dec31_2023, jan5_2024}));
  // Rules combine: a point is kept when any rule keeps it.
  auto ds = ApplyRetention(ps, {.keep_last = 1, .keep_yearly = 3});
  EXPECT_EQ(KeptTimes(ds), (std::set<int64_t>{jun15_2022, dec31_2023, jan5_2024}));
  EXPECT_EQ(ds.front().reasons, (std::vector<std::string>{"last", "yearly"}));
}

TEST_F(RetentionTest, KeepWithinIsMeasuredFromTheNewestPoint) {
  std::vector<PointInfo> ps;
  for (int i = 0; i < 10; ++i) ps.push_back(At(kJan1st2024 + i * kDay));
  auto span = ParseCalendarSpan("2d12h");
  ASSERT_TRUE(span.ok());
  auto kept = KeptTimes(ApplyRetention(ps, {.keep_within = *span}));
  EXPECT_EQ(kept, (std::set<int64_t>{kJan1st2024 + 7 * kDay, kJan1st2024 + 8 * kDay, kJan1st2024 + 9 * kDay}));
}

TEST_F(RetentionTest, PinnedPointsAreKeptAndUseNoSlot) {
  std::vector<PointInfo> ps = {At(kJan1st2024, "/data", true), At(kJan1st2024 + kHour),
                               At(kJan1st2024 + 2 * kHour, "/data", true), At(kJan1st2024 + 3 * kHour)};
  auto ds = ApplyRetention(ps, {.keep_last = 1});
  EXPECT_EQ(KeptTimes(ds), (std::set<int64_t>{kJan1st2024, kJan1st2024 + 2 * kHour, kJan1st2024 + 3 * kHour}));
  ps[3].pinned = true;  // the newest pinned: keep_last goes to the next one
  EXPECT_EQ(KeptTimes(ApplyRetention(ps, {.keep_last = 1})),
            (std::set<int64_t>{kJan1st2024, kJan1st2024 + 2 * kHour, kJan1st2024 + 3 * kHour, kJan1st2024 + kHour}));
}

TEST_F(RetentionTest, RulesApplyPerSource) {
  std::vector<PointInfo> ps = {At(1 * kDay, "/a"), At(2 * kDay, "/b"), At(3 * kDay, "/a"), At(4 * kDay, "/a")};
  auto ds = ApplyRetention(ps, {.keep_last = 1});
  EXPECT_EQ(KeptTimes(ds), (std::set<int64_t>{2 * kDay, 4 * kDay}));
  EXPECT_EQ(ds.size(), 4u);
}

TEST_F(RetentionTest, ParsesCalendarSpans) {
  auto a = ParseCalendarSpan("1y6m");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->years, 1);
  EXPECT_EQ(a->months, 6);
  auto b = ParseCalendarSpan("2w3d36h");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->days, 17);
  EXPECT_EQ(b->hours, 36);
  for (const char* bad : {"", "5", "d", "5x", "1y-2d", "99999999d"}) {
    EXPECT_EQ(ParseCalendarSpan(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

class ForgetTest : public testing::BackupTest {
 protected:
  // A path point with a given time (crafted: the walk needs only its root).
  repo::ManifestId Point(repo::Repository& r, int64_t time_ns, const std::string& source) {
    auto tree = r.PutTree({.refs = {}, .payload = {}});
    EXPECT_TRUE(tree.ok());
    PointInfo p = At(time_ns, source);
    auto id = r.SaveManifest({.time_ns = time_ns, .roots = {*tree}, .payload = p.Encode()});
    EXPECT_TRUE(id.ok());
    return *id;
  }
};

TEST_F(ForgetTest, ForgetKeepsPinnedPointsAndRefusesWithoutRules) {
  std::vector<repo::ManifestId> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(Point(*repo_, kJan1st2024 + i * kDay, "/data"));
  ASSERT_TRUE(repo_->SetPinned(ids[0], true).ok());
  EXPECT_EQ(Forget(*repo_, {}).status().code(), StatusCode::kInvalidArgument);

  auto dry = Forget(*repo_, {.policy = {.keep_last = 1}, .dry_run = true});
  ASSERT_TRUE(dry.ok()) << dry.status().ToString();
  EXPECT_EQ(dry->removed, 0u);
  EXPECT_EQ(ListPoints(*repo_)->size(), 4u);

  auto rep = Forget(*repo_, {.policy = {.keep_last = 1}});
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_EQ(rep->removed, 2u);
  auto left = ListPoints(*repo_);
  ASSERT_TRUE(left.ok());
  ASSERT_EQ(left->size(), 2u);
  EXPECT_EQ((*left)[0].id, ids[0]);
  EXPECT_TRUE((*left)[0].pinned);
  EXPECT_EQ((*left)[1].id, ids[3]);
  EXPECT_FALSE((*left)[1].pinned);
}

TEST_F(ForgetTest, ForgetWithPruneFreesSpace) {
  repo_.reset();
  repo::OpenOptions o;
  o.lock = repo::LockMode::kExclusive;
  o.pack_target_bytes = 256 << 10;
  auto r = repo::Repository::Open(repo_path_, {.password = "pw"}, std::move(o));
  ASSERT_TRUE(r.ok());
  fs::path src = dir_ / "src";
  fs::create_directories(src);
  for (int i = 0; i < 3; ++i) {
    WriteFile(src / "f", RandomBytes(1 << 20, i));
    ASSERT_TRUE(BackupPaths(**r, {.sources = {src.string()}}).ok());
  }
  auto rep = Forget(**r, {.policy = {.keep_last = 1}, .prune = true, .prune_options = {.repack_unused_fraction = 0}});
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_EQ(rep->removed, 2u);
  ASSERT_TRUE(rep->pruned);
  EXPECT_GT(rep->prune.bytes_freed(), 1u << 20);
  auto check = (*r)->Check(true);
  ASSERT_TRUE(check.ok());
  EXPECT_TRUE(check->ok());
}

TEST_F(ForgetTest, AppendOnlyRepositoriesRefuseForget) {
  repo_.reset();
  fs::remove_all(repo_path_);
  repo::InitOptions init;
  init.kdf = {.ops_limit = 1, .mem_limit = 8192};
  init.append_only = true;
  ASSERT_TRUE(repo::Repository::Init(repo_path_, {.password = "pw"}, init).ok());
  repo_ = Open();
  Point(*repo_, kJan1st2024, "/data");
  Point(*repo_, kJan1st2024 + kDay, "/data");
  auto rep = Forget(*repo_, {.policy = {.keep_last = 1}});
  ASSERT_FALSE(rep.ok());
  EXPECT_EQ(rep.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(rep.status().message().find("append-only"), std::string::npos);
  EXPECT_TRUE(Forget(*repo_, {.policy = {.keep_last = 1}, .dry_run = true}).ok());
  EXPECT_EQ(ListPoints(*repo_)->size(), 2u);
}

TEST_F(ForgetTest, ListFilesOfPathPoints) {
  fs::path src = dir_ / "src";
  fs::create_directories(src / "sub");
  WriteFile(src / "a", RandomBytes(1000, 1));
  WriteFile(src / "sub" / "b", RandomBytes(10, 2));
  fs::create_symlink("a", src / "l");
  auto p = BackupPaths(*repo_, {.sources = {src.string()}});
  ASSERT_TRUE(p.ok());
  auto all = ListFiles(*repo_, *p, "");
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  std::vector<std::string> paths;
  for (const auto& e : *all) paths.push_back(e.path + ":" + e.type);
  EXPECT_EQ(paths, (std::vector<std::string>{"src:dir", "src/a:file", "src/l:symlink", "src/sub:dir", "src/sub/b:file"}));
  EXPECT_EQ((*all)[1].size, 1000u);
  EXPECT_EQ((*all)[2].link_target, "a");

  auto sub = ListFiles(*repo_, *p, "/src/sub/");
  ASSERT_TRUE(sub.ok());
  ASSERT_EQ(sub->size(), 2u);
  EXPECT_EQ((*sub)[1].path, "src/sub/b");
  auto one = ListFiles(*repo_, *p, "src/a");
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ(ListFiles(*repo_, *p, "src/nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(ListFiles(*repo_, *p, "src/a/x").status().code(), StatusCode::kNotFound);

  WriteFile(dir_ / "img", RandomBytes(100000, 3));
  auto img = BackupImage(*repo_, {.source = (dir_ / "img").string()});
  ASSERT_TRUE(img.ok());
  EXPECT_EQ(ListFiles(*repo_, *img, "").status().code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace continuum::backup
