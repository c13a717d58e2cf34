// Covers src/replication/verify.cc: per-range checksums and their diff.
#include "continuum/replication/verify.h"

#include <gtest/gtest.h>

#include "capture/memory_block_target.h"

namespace continuum::replication {
namespace {

using capture::testing::MemoryBlockTarget;

TEST(RangeChecksums, OneSumPerRangeAndAShortLastRange) {
  MemoryBlockTarget t((3ull << 20) + 4096);
  auto sums = RangeChecksums(t, 1ull << 20);
  ASSERT_TRUE(sums.ok()) << sums.status().message();
  ASSERT_EQ(sums->size(), 4u);
  EXPECT_EQ((*sums)[0], (*sums)[1]);  // equal contents, equal sums
  EXPECT_NE((*sums)[2], (*sums)[3]);  // the short range hashes fewer bytes
}

TEST(RangeChecksums, ADifferentByteChangesOnlyItsRange) {
  MemoryBlockTarget a(4ull << 20), b(4ull << 20);
  uint8_t x = 0x5a;
  ASSERT_TRUE(b.Write((2ull << 20) + 17, {&x, 1}, false).ok());
  auto sa = RangeChecksums(a, 1ull << 20);
  auto sb = RangeChecksums(b, 1ull << 20);
  ASSERT_TRUE(sa.ok() && sb.ok());
  auto diff = DiffRanges(*sa, *sb, 1ull << 20, 4ull << 20);
  ASSERT_EQ(diff.size(), 1u);
  EXPECT_EQ(diff[0].offset, 2ull << 20);
  EXPECT_EQ(diff[0].length, 1ull << 20);
}

TEST(DiffRanges, MergesAdjacentRangesAndClipsTheLast) {
  std::vector<uint64_t> a{1, 2, 3, 4, 5}, b{1, 0, 0, 4, 0};
  uint64_t size = (4ull << 20) + 8192;
  auto diff = DiffRanges(a, b, 1ull << 20, size);
  ASSERT_EQ(diff.size(), 2u);
  EXPECT_EQ(diff[0].offset, 1ull << 20);
  EXPECT_EQ(diff[0].length, 2ull << 20);
  EXPECT_EQ(diff[1].offset, 4ull << 20);
  EXPECT_EQ(diff[1].length, 8192u);
}

TEST(RangeChecksums, RefusesAZeroRange) {
  MemoryBlockTarget t(4096);
  EXPECT_FALSE(RangeChecksums(t, 0).ok());
}

}  // namespace
}  // namespace continuum::replication
