// Covers src/volume/change_tracker.cc: a bitmap created with a seq callback
// marks every write after the seq the callback returns, and persists it.
#include "continuum/volume/change_tracker.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

namespace continuum::volume {
namespace {

class ChangeTrackerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/continuum-cbt-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(ChangeTrackerTest, CreateWithSeqCallbackTracksBeforeReadingTheSeq) {
  constexpr uint64_t kSize = 64ull << 20;
  auto t = ChangeTracker::Open(dir_, kSize);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  (*t)->Mark(0, 4096);  // before the bitmap exists: not in it
  auto seq = (*t)->Create("backup-x-a", [&] {
    // A write applied while the base seq is read is already tracked.
    (*t)->Mark(10ull << 20, 4096);
    return uint64_t{42};
  });
  ASSERT_TRUE(seq.ok()) << seq.status().ToString();
  EXPECT_EQ(*seq, 42u);
  auto changes = (*t)->Changes("backup-x-a");
  ASSERT_TRUE(changes.ok());
  ASSERT_EQ(changes->size(), 1u);
  EXPECT_EQ((*changes)[0].offset, 10ull << 20);
  t->reset();

  auto again = ChangeTracker::Open(dir_, kSize);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  auto info = (*again)->List();
  ASSERT_EQ(info.size(), 1u);
  EXPECT_EQ(info[0].base_seq, 42u);
  EXPECT_EQ(info[0].changed_bytes, ChangeTracker::kDefaultGranularity);
  EXPECT_FALSE((*again)->Create("bad/name", [] { return uint64_t{1}; }).ok());
}

}  // namespace
}  // namespace continuum::volume
