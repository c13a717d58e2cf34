// Covers src/replication/codec.cc and token_bucket.h: frame compression and
// the per-target bandwidth limit.
#include "continuum/replication/codec.h"

#include <gtest/gtest.h>

#include "continuum/replication/token_bucket.h"

namespace continuum::replication {
namespace {

std::vector<uint8_t> Compressible() {
  std::vector<uint8_t> v(1 << 20);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>((i / 4096) & 0x7);
  return v;
}

void RoundTrip(Codec c) {
  auto in = Compressible();
  auto enc = Encode(c, in);
  ASSERT_TRUE(enc.ok()) << enc.status().message();
  ASSERT_FALSE(enc->bytes.empty());
  EXPECT_LT(enc->bytes.size(), in.size() / 10);
  auto out = Decode(enc->flags, enc->bytes, 64 << 20);
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_EQ(*out, in);
}

TEST(Codec, ZstdRoundTrips) { RoundTrip(Codec::kZstd); }

TEST(Codec, Lz4RoundTripsWhenBuiltIn) {
  auto c = ParseCodec("lz4");
  if (!c.ok()) GTEST_SKIP() << c.status().message();
  RoundTrip(*c);
}

TEST(Codec, IncompressibleDataIsSentPlain) {
  std::vector<uint8_t> in(65536);
  uint64_t x = 88172645463325252ull;
  for (auto& b : in) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    b = static_cast<uint8_t>(x);
  }
  auto enc = Encode(Codec::kZstd, in);
  ASSERT_TRUE(enc.ok());
  EXPECT_TRUE(enc->bytes.empty());
  EXPECT_EQ(enc->flags, 0);
}

TEST(Codec, CorruptOrOversizedInputIsDataLoss) {
  auto enc = Encode(Codec::kZstd, Compressible());
  ASSERT_TRUE(enc.ok());
  EXPECT_EQ(Decode(enc->flags, enc->bytes, 4096).status().code(), StatusCode::kDataLoss);
  std::vector<uint8_t> junk(100, 0xab);
  EXPECT_EQ(Decode(kFrameFlagZstd, junk, 64 << 20).status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(Decode(kFrameFlagZstd | kFrameFlagLz4, junk, 64 << 20).status().code(), StatusCode::kDataLoss);
}

TEST(Codec, ParsesNames) {
  EXPECT_EQ(*ParseCodec("zstd"), Codec::kZstd);
  EXPECT_EQ(*ParseCodec(""), Codec::kNone);
  EXPECT_FALSE(ParseCodec("gzip").ok());
}

TEST(ParseRate, AcceptsSuffixesAndPerSecond) {
  EXPECT_EQ(*ParseRate("20M"), 20ull << 20);
  EXPECT_EQ(*ParseRate("512K/s"), 512ull << 10);
  EXPECT_EQ(*ParseRate(""), 0u);
  EXPECT_FALSE(ParseRate("fast").ok());
}

TEST(TokenBucket, AveragesToTheRate) {
  TokenBucket b(1 << 20);  // 1 MiB/s, holds 256 KiB
  int64_t now = 1'000'000'000;
  EXPECT_EQ(b.Take(256 << 10, now), 0);  // the initial burst
  int64_t wait = b.Take(1 << 20, now);    // a 1 MiB batch right after: wait ~1 s
  EXPECT_NEAR(static_cast<double>(wait), 1e9, 1e6);
  now += wait;
  EXPECT_EQ(b.Take(0, now), 0);
  EXPECT_EQ(TokenBucket(0).Take(1ull << 40, now), 0);  // unlimited
}

}  // namespace
}  // namespace continuum::replication
