// Covers src/backup/sparse_write.cc: restores write blobs at their offsets
// from several workers, the aligned middle of each past the page cache and
// the partial blocks at its ends through it. The file must read back exactly,
// with zero blocks left as holes.
#include "backup/sparse_write.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <random>
#include <thread>

#include "backup_test_util.h"
#include "continuum/io/file.h"
#include "continuum/io/unique_fd.h"

namespace continuum::backup {
namespace {

using testing::RandomBytes;
using testing::ReadFile;

struct Piece {
  uint64_t offset;
  size_t length;
};

class SparseWriteTest : public testing::BackupTest {
 protected:
  // A file of random bytes with zero regions: 64 KiB-aligned ones (holes) and
  // unaligned ones (written as zeros or skipped, reading as zeros either way).
  std::vector<uint8_t> Content() {
    std::vector<uint8_t> c = RandomBytes((5 << 20) + 4321, 11);
    std::fill(c.begin() + (1 << 20), c.begin() + (2 << 20), 0);
    std::fill(c.begin() + 3000000, c.begin() + 3100000, 0);
    std::fill(c.end() - 5000, c.end(), 0);
    return c;
  }
  // Cut at random lengths, as content-defined chunks are, in a random order.
  std::vector<Piece> Pieces(size_t size, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<Piece> out;
    for (uint64_t off = 0; off < size;) {
      size_t n = std::min<size_t>(size - off, 1 + rng() % (700 << 10));
      out.push_back({off, n});
      off += n;
    }
    std::shuffle(out.begin(), out.end(), rng);
    return out;
  }
  // Writes every piece from four threads; the file was truncated to its size.
  void WriteAll(const std::vector<uint8_t>& c, const std::vector<Piece>& pieces, int fd, int direct_fd, bool sparse) {
    std::atomic<size_t> next{0};
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        for (size_t i; (i = next.fetch_add(1)) < pieces.size();) {
          std::span<const uint8_t> data(c.data() + pieces[i].offset, pieces[i].length);
          Status st = sparse ? WriteSparseDirect(fd, direct_fd, pieces[i].offset, data, "f")
                             : WriteAllDirect(fd, direct_fd, pieces[i].offset, data, "f");
          if (!st.ok()) ++failures;
        }
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(failures.load(), 0);
  }
};

TEST_F(SparseWriteTest, DirectWritesFromSeveralThreadsReadBackExactly) {
  const std::vector<uint8_t> c = Content();
  const std::string path = (dir_ / "f").string();
  io::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  ASSERT_TRUE(fd);
  ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(c.size())), 0);
  io::UniqueFd direct(io::ReopenDirect(fd.get()));
  if (!direct) GTEST_LOG_(INFO) << "no O_DIRECT on " << dir_ << ": the page cache takes every write";
  WriteAll(c, Pieces(c.size(), 3), fd.get(), direct.get(), /*sparse=*/true);
  ASSERT_EQ(::fsync(fd.get()), 0);
  EXPECT_TRUE(ReadFile(path) == c);
  // Zero blocks inside the pieces were skipped: the zero MiB holds a hole.
  EXPECT_LT(::lseek(fd.get(), 1 << 20, SEEK_HOLE), 2 << 20);
}

TEST_F(SparseWriteTest, WithoutADirectDescriptorThePageCacheTakesEverything) {
  const std::vector<uint8_t> c = Content();
  const std::string path = (dir_ / "f").string();
  io::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  ASSERT_TRUE(fd);
  ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(c.size())), 0);
  WriteAll(c, Pieces(c.size(), 4), fd.get(), -1, /*sparse=*/true);
  EXPECT_TRUE(ReadFile(path) == c);
}

TEST_F(SparseWriteTest, WriteAllDirectOverwritesWithZerosToo) {
  // A device does not read as zeros where nothing was written: here, a file
  // full of 0xff stands in for one.
  const std::vector<uint8_t> c = Content();
  const std::string path = (dir_ / "dev").string();
  testing::WriteFile(path, std::vector<uint8_t>(c.size(), 0xff));
  io::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  ASSERT_TRUE(fd);
  io::UniqueFd direct(io::ReopenDirect(fd.get()));
  WriteAll(c, Pieces(c.size(), 5), fd.get(), direct.get(), /*sparse=*/false);
  ASSERT_EQ(::fsync(fd.get()), 0);
  EXPECT_TRUE(ReadFile(path) == c);
}

}  // namespace
}  // namespace continuum::backup
