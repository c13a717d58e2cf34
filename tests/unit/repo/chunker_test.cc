// Covers src/repo/fixed_chunker.cc and src/repo/fast_cdc_chunker.cc.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "continuum/repo/fast_cdc_chunker.h"
#include "continuum/repo/fixed_chunker.h"
#include "repo/crypto.h"
#include "repo_test_util.h"

namespace continuum::repo {
namespace {

using testing::RandomBytes;

struct Cut {
  uint64_t offset;
  size_t size;
  bool zero;
  FileId hash;
};

// Feeds `data` in slices of `slice` bytes and records every chunk.
std::vector<Cut> ChunkAll(Chunker& c, const std::vector<uint8_t>& data, size_t slice) {
  std::vector<Cut> out;
  ChunkSink sink = [&](const Chunk& ch) {
    out.push_back({ch.offset, ch.data.size(), ch.zero, Sha256(ch.data)});
    return Status::Ok();
  };
  for (size_t pos = 0; pos < data.size(); pos += slice) {
    size_t n = std::min(slice, data.size() - pos);
    EXPECT_TRUE(c.Write({data.data() + pos, n}, sink).ok());
  }
  EXPECT_TRUE(c.Finish(sink).ok());
  return out;
}

FastCdcOptions SmallCdc() { return {.min_size = 2048, .avg_size = 8192, .max_size = 65536}; }

TEST(FixedChunkerTest, SplitsAtMultiplesAndFlagsZeroChunks) {
  std::vector<uint8_t> data = RandomBytes(10 * 4096 + 100, 1);
  std::fill(data.begin() + 4096, data.begin() + 3 * 4096, 0);  // chunks 1 and 2 are zero
  FixedChunker c({.chunk_size = 4096});
  for (size_t slice : {size_t{1000}, size_t{4096}, size_t{50000}}) {
    auto cuts = ChunkAll(c, data, slice);
    ASSERT_EQ(cuts.size(), 11u) << "slice " << slice;
    for (size_t i = 0; i < cuts.size(); ++i) {
      EXPECT_EQ(cuts[i].offset, i * 4096);
      EXPECT_EQ(cuts[i].size, i == 10 ? 100u : 4096u);
      EXPECT_EQ(cuts[i].zero, i == 1 || i == 2) << i;
    }
  }
}

TEST(FixedChunkerTest, IsAllZero) {
  std::vector<uint8_t> z(1 << 20, 0);
  EXPECT_TRUE(IsAllZero(z));
  EXPECT_TRUE(IsAllZero({}));
  z[z.size() - 1] = 1;
  EXPECT_FALSE(IsAllZero(z));
  z[z.size() - 1] = 0;
  z[0] = 1;
  EXPECT_FALSE(IsAllZero(z));
}

TEST(FastCdcTest, RejectsBadOptions) {
  EXPECT_FALSE(FastCdcChunker::Create({.min_size = 4096, .avg_size = 3000, .max_size = 65536}).ok());
  EXPECT_FALSE(FastCdcChunker::Create({.min_size = 9000, .avg_size = 8192, .max_size = 65536}).ok());
  EXPECT_FALSE(FastCdcChunker::Create({.min_size = 2048, .avg_size = 8192, .max_size = 4096}).ok());
  EXPECT_TRUE(FastCdcChunker::Create({}).ok());
}

TEST(FastCdcTest, GearTableIsDeterministicPerSeed) {
  EXPECT_EQ(FastCdcChunker::GearTable(0), FastCdcChunker::GearTable(0));
  EXPECT_NE(FastCdcChunker::GearTable(0), FastCdcChunker::GearTable(1));
  auto t = FastCdcChunker::GearTable(0);
  EXPECT_EQ(std::set<uint64_t>(t.begin(), t.end()).size(), 256u);
}

TEST(FastCdcTest, BoundariesIgnoreSlicingAndRespectLimits) {
  std::vector<uint8_t> data = RandomBytes(4 << 20, 2);
  auto c = FastCdcChunker::Create(SmallCdc());
  ASSERT_TRUE(c.ok());
  auto ref = ChunkAll(**c, data, data.size());
  for (size_t slice : {size_t{1}, size_t{777}, size_t{8192}, size_t{100000}}) {
    if (slice == 1) {
      std::vector<uint8_t> head(data.begin(), data.begin() + 300000);
      auto a = ChunkAll(**c, head, 1);
      auto b = ChunkAll(**c, head, head.size());
      ASSERT_EQ(a.size(), b.size());
      for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].hash, b[i].hash);
      continue;
    }
    auto got = ChunkAll(**c, data, slice);
    ASSERT_EQ(got.size(), ref.size()) << "slice " << slice;
    for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].hash, ref[i].hash);
  }
  uint64_t total = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_EQ(ref[i].offset, total);
    total += ref[i].size;
    if (i + 1 < ref.size()) {
      EXPECT_GE(ref[i].size, 2048u);
      EXPECT_LE(ref[i].size, 65536u);
    }
  }
  EXPECT_EQ(total, data.size());
  double avg = static_cast<double>(data.size()) / ref.size();
  EXPECT_GT(avg, 8192 * 0.6);
  EXPECT_LT(avg, 8192 * 2.0);
}

// Inserting bytes near the start of a stream changes only the chunks around the
// insertion; every later chunk is found again (dedup survives edits).
void ExpectLocalChange(const FastCdcOptions& opts, size_t size, size_t insert_at, uint64_t seed) {
  std::vector<uint8_t> a = RandomBytes(size, seed);
  std::vector<uint8_t> b = a;
  std::vector<uint8_t> ins = RandomBytes(100, seed + 1);
  b.insert(b.begin() + insert_at, ins.begin(), ins.end());
  auto c = FastCdcChunker::Create(opts);
  ASSERT_TRUE(c.ok());
  auto ca = ChunkAll(**c, a, 1 << 20);
  auto cb = ChunkAll(**c, b, 1 << 20);
  std::set<FileId> in_a;
  for (const auto& x : ca) in_a.insert(x.hash);
  size_t changed = 0;
  for (const auto& x : cb) changed += in_a.count(x.hash) ? 0 : 1;
  EXPECT_GE(ca.size(), 8u);
  EXPECT_LE(changed, 2u) << "of " << cb.size() << " chunks";
  // The tail after the first changed chunks is identical, chunk for chunk.
  ASSERT_GE(ca.size(), 4u);
  for (size_t i = 1; i + 3 <= std::min(ca.size(), cb.size()); ++i) {
    EXPECT_EQ(ca[ca.size() - i].hash, cb[cb.size() - i].hash);
  }
}

TEST(FastCdcTest, InsertionChangesOnlyNearbyChunks) {
  ExpectLocalChange(SmallCdc(), 2 << 20, 1000, 3);
  ExpectLocalChange(SmallCdc(), 2 << 20, 20000, 4);
}

TEST(FastCdcTest, InsertionChangesOnlyNearbyChunksWithDefaults) {
  ExpectLocalChange(FastCdcOptions{}, 24 << 20, 5000, 5);
}

TEST(FastCdcTest, DefaultsGiveMegabyteChunks) {
  std::vector<uint8_t> data = RandomBytes(64 << 20, 6);
  auto c = FastCdcChunker::Create({});
  ASSERT_TRUE(c.ok());
  auto cuts = ChunkAll(**c, data, 4 << 20);
  double avg = static_cast<double>(data.size()) / cuts.size();
  EXPECT_GT(avg, 700 * 1024);
  EXPECT_LT(avg, 2 * 1024 * 1024);
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    EXPECT_GE(cuts[i].size, 512u << 10);
    EXPECT_LE(cuts[i].size, 8u << 20);
  }
}

TEST(FastCdcTest, ZeroRunsBecomeMaxSizeZeroChunks) {
  std::vector<uint8_t> data(300000, 0);
  auto c = FastCdcChunker::Create(SmallCdc());
  ASSERT_TRUE(c.ok());
  auto cuts = ChunkAll(**c, data, 50000);
  ASSERT_FALSE(cuts.empty());
  for (const auto& x : cuts) EXPECT_TRUE(x.zero);
  // Identical zero chunks: dedup stores one.
  EXPECT_EQ(cuts[0].hash, cuts[1].hash);
}

TEST(FastCdcTest, SinkErrorStopsChunking) {
  std::vector<uint8_t> data = RandomBytes(1 << 20, 7);
  auto c = FastCdcChunker::Create(SmallCdc());
  ASSERT_TRUE(c.ok());
  int calls = 0;
  Status st = (*c)->Write(data, [&](const Chunk&) {
    ++calls;
    return ResourceExhausted("sink full");
  });
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace continuum::repo
