// Covers src/volume/change_tracker.cc: a bitmap created with a seq callback
// marks every write after the seq the callback returns, and persists it.
#include "continuum/volume/change_tracker.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

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

TEST_F(ChangeTrackerTest, DamagedBitmapIsSetAsideAndMarksEverythingChanged) {
  constexpr uint64_t kSize = 64ull << 20;
  for (size_t flip_at : {size_t{3}, size_t{60}, size_t{100}}) {  // header, bits, bits
    std::filesystem::remove_all(dir_);
    {
      auto t = ChangeTracker::Open(dir_, kSize);
      ASSERT_TRUE(t.ok());
      ASSERT_TRUE((*t)->Create("backup-a", 7).ok());
      (*t)->Mark(1 << 20, 4096);
      ASSERT_TRUE((*t)->Save(9).ok());
    }
    std::string path = dir_ + "/backup-a.cbt";
    {
      std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
      f.seekg(static_cast<std::streamoff>(flip_at));
      char c = 0;
      f.get(c);
      f.seekp(static_cast<std::streamoff>(flip_at));
      f.put(static_cast<char>(c ^ 0x40));
    }
    auto t = ChangeTracker::Open(dir_, kSize);
    ASSERT_TRUE(t.ok()) << "byte " << flip_at << ": " << t.status().ToString();
    auto events = (*t)->TakeOpenEvents();
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].kind, "bitmap_damaged");
    EXPECT_NE(events[0].message.find("backup-a.cbt.damaged"), std::string::npos) << events[0].message;
    EXPECT_TRUE(std::filesystem::exists(path + ".damaged"));
    auto changes = (*t)->Changes("backup-a");
    ASSERT_TRUE(changes.ok());
    ASSERT_EQ(changes->size(), 1u);
    EXPECT_EQ((*changes)[0].offset, 0u);
    EXPECT_EQ((*changes)[0].length, kSize);
    auto info = (*t)->List();
    ASSERT_EQ(info.size(), 1u);
    EXPECT_EQ(info[0].base_seq, 0u);
    EXPECT_EQ(info[0].changed_bytes, kSize);
    t->reset();
    // The replacement is a sound file: the next open finds nothing wrong.
    auto again = ChangeTracker::Open(dir_, kSize);
    ASSERT_TRUE(again.ok());
    EXPECT_TRUE((*again)->TakeOpenEvents().empty());
  }
}

}  // namespace
}  // namespace continuum::volume
