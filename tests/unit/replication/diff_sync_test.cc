// Covers src/replication/diff_sync.cc: request validation, checksums per
// piece on both sides, and the two-level comparison finding exactly the
// changed blocks.
#include "continuum/replication/diff_sync.h"

#include <gtest/gtest.h>

#include <random>

#include "capture/memory_block_target.h"
#include "continuum/replication/frame.h"

namespace continuum::replication {
namespace {

using capture::testing::MemoryBlockTarget;

constexpr uint64_t kMiB = 1ull << 20;

std::vector<uint8_t> ReadAll(MemoryBlockTarget& t, uint64_t off, uint64_t len) {
  std::vector<uint8_t> out(len);
  EXPECT_TRUE(t.Read(off, out).ok());
  return out;
}

TEST(DiffRequest, RoundTripsThroughJson) {
  DiffRequest req{.piece = 4096, .ranges = {{0, 65536}, {1 << 20, 8192}}};
  auto back = ParseDiffRequest(DiffRequestJson(req), 4 * kMiB);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->piece, 4096u);
  ASSERT_EQ(back->ranges.size(), 2u);
  EXPECT_EQ(back->ranges[1].offset, 1u << 20);
  EXPECT_EQ(back->ranges[1].length, 8192u);
  EXPECT_EQ(DiffPieceCount(*back), 18u);
}

TEST(DiffRequest, RefusesBadPiecesAndRangesOutsideTheVolume) {
  auto parse = [](nlohmann::json j) { return ParseDiffRequest(j, 4 * kMiB).status().code(); };
  EXPECT_EQ(parse({{"range_bytes", 1000}, {"ranges", {{0, 4096}}}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(parse({{"range_bytes", 4096}, {"ranges", {{4 * kMiB - 4096, 8192}}}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(parse({{"range_bytes", 4096}, {"ranges", {{0, 0}}}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(parse({{"range_bytes", 4096}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(parse({{"range_bytes", 4096}, {"ranges", {{UINT64_MAX, 4096}}}}), StatusCode::kInvalidArgument);
}

TEST(ServeDiffRequest, MatchesSumsOverTheSameBytesAndAShortLastPiece) {
  MemoryBlockTarget t(4 * kMiB);
  std::mt19937_64 rng(1);
  std::vector<uint8_t> noise(3 * kMiB);
  for (auto& b : noise) b = static_cast<uint8_t>(rng());
  ASSERT_TRUE(t.Write(0, noise, false).ok());
  DiffRequest req{.piece = 65536, .ranges = {{0, 2 * kMiB + 4096}, {3 * kMiB, kMiB}}};
  auto sums = ServeDiffRequest(t, req);
  ASSERT_TRUE(sums.ok());
  std::vector<uint64_t> expect;
  AppendPieceSums(ReadAll(t, 0, 2 * kMiB + 4096), 65536, &expect);
  AppendPieceSums(ReadAll(t, 3 * kMiB, kMiB), 65536, &expect);
  EXPECT_EQ(*sums, expect);
  EXPECT_EQ(sums->size(), DiffPieceCount(req));
}

TEST(DifferingPieces, TwoLevelsFindExactlyTheChangedBlocks) {
  // A source and a replica that differ in a few scattered 4 KiB blocks, two
  // of them adjacent; an all-zero region on both sides compares equal.
  MemoryBlockTarget src(8 * kMiB), dst(8 * kMiB);
  std::mt19937_64 rng(2);
  std::vector<uint8_t> noise(6 * kMiB);
  for (auto& b : noise) b = static_cast<uint8_t>(rng());
  ASSERT_TRUE(src.Write(0, noise, false).ok());
  ASSERT_TRUE(dst.Write(0, noise, false).ok());
  std::vector<uint8_t> blk(4096, 0xab);
  for (uint64_t off : {uint64_t{4096} * 3, kMiB + 8192, kMiB + 12288, 5 * kMiB + 65536 * 2}) {
    ASSERT_TRUE(src.Write(off, blk, false).ok());
  }
  DiffRequest coarse{.piece = kDiffCoarseBytes, .ranges = {{0, 8 * kMiB}}};
  auto a = ServeDiffRequest(src, coarse);
  auto b = ServeDiffRequest(dst, coarse);
  ASSERT_TRUE(a.ok() && b.ok());
  DiffRequest fine{.piece = 4096, .ranges = DifferingPieces(coarse, *a, *b)};
  ASSERT_EQ(fine.ranges.size(), 3u);  // three 64 KiB ranges differ
  auto fa = ServeDiffRequest(src, fine);
  auto fb = ServeDiffRequest(dst, fine);
  ASSERT_TRUE(fa.ok() && fb.ok());
  auto diff = DifferingPieces(fine, *fa, *fb);
  ASSERT_EQ(diff.size(), 3u);
  EXPECT_EQ(diff[0].offset, 4096u * 3);
  EXPECT_EQ(diff[0].length, 4096u);
  EXPECT_EQ(diff[1].offset, kMiB + 8192);
  EXPECT_EQ(diff[1].length, 8192u);  // adjacent blocks merged
  EXPECT_EQ(diff[2].offset, 5 * kMiB + 65536 * 2);
}

TEST(DifferingPieces, EqualImagesHaveNoDifferences) {
  MemoryBlockTarget src(2 * kMiB), dst(2 * kMiB);
  DiffRequest coarse{.piece = kDiffCoarseBytes, .ranges = {{0, 2 * kMiB}}};
  auto a = ServeDiffRequest(src, coarse);
  auto b = ServeDiffRequest(dst, coarse);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(DifferingPieces(coarse, *a, *b).empty());
}

}  // namespace
}  // namespace continuum::replication
