#include "sparse_write.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "continuum/io/aligned_buffer.h"
#include "continuum/repo/chunker.h"

namespace continuum::backup {
namespace {

constexpr size_t kZeroBlock = 64 << 10;

Status PwriteAll(int fd, const uint8_t* p, size_t n, uint64_t offset, const std::string& path) {
  for (size_t done = 0; done < n;) {
    ssize_t w = ::pwrite(fd, p + done, n - done, static_cast<off_t>(offset + done));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return PosixError("write " + path, errno);
    done += static_cast<size_t>(w);
  }
  return Status::Ok();
}

// Calls fn(pos, len) for each run of kZeroBlock blocks of `data` that are not
// all zero (blocks counted from the start of `data`).
template <typename Fn>
Status ForEachDataRun(std::span<const uint8_t> data, Fn&& fn) {
  size_t pos = 0;
  while (pos < data.size()) {
    size_t n = std::min(kZeroBlock, data.size() - pos);
    if (repo::IsAllZero(data.subspan(pos, n))) {
      pos += n;
      continue;
    }
    size_t end = pos + n;
    while (end < data.size()) {
      size_t m = std::min(kZeroBlock, data.size() - end);
      if (repo::IsAllZero(data.subspan(end, m))) break;
      end += m;
    }
    CONTINUUM_RETURN_IF_ERROR(fn(pos, end - pos));
    pos = end;
  }
  return Status::Ok();
}

// This thread's aligned buffer for direct writes (kept: a restore writes
// thousands of runs from each worker).
thread_local io::AlignedBuffer bounce;
constexpr size_t kBounceSize = 1 << 20;

// Writes `data` at `offset`: whole kDirectAlign blocks through direct_fd, the
// partial blocks at the ends through fd; with `sparse`, zero blocks are skipped.
Status WriteDirect(int fd, int direct_fd, uint64_t offset, std::span<const uint8_t> data, const std::string& path,
                   bool sparse) {
  auto plain = [&](uint64_t at, std::span<const uint8_t> part) {
    return sparse ? WriteSparse(fd, at, part, path) : PwriteAll(fd, part.data(), part.size(), at, path);
  };
  const uint64_t end = offset + data.size();
  const uint64_t a = (offset + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
  const uint64_t b = end / kDirectAlign * kDirectAlign;
  if (direct_fd < 0 || a >= b) return plain(offset, data);
  bounce.Resize(kBounceSize);
  // The partial blocks at either end share a block with a neighbouring blob:
  // through the page cache.
  CONTINUUM_RETURN_IF_ERROR(plain(offset, data.first(a - offset)));
  CONTINUUM_RETURN_IF_ERROR(plain(b, data.subspan(b - offset)));
  std::span<const uint8_t> mid = data.subspan(a - offset, b - a);
  auto direct = [&](size_t pos, size_t n) -> Status {
    for (size_t done = 0; done < n;) {
      // Through this thread's aligned buffer: a copy in user space costs a
      // fraction of one into the page cache (no page allocation, no faults).
      const size_t k = std::min(kBounceSize, n - done);
      std::memcpy(bounce.data(), mid.data() + pos + done, k);
      const uint64_t at = a + pos + done;
      ssize_t w = ::pwrite(direct_fd, bounce.data(), k, static_cast<off_t>(at));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && errno == EINVAL) {
        // The filesystem refused this direct write: the page cache takes it.
        return PwriteAll(fd, mid.data() + pos + done, n - done, at, path);
      }
      if (w < 0) return PosixError("write " + path, errno);
      done += static_cast<size_t>(w);
    }
    return Status::Ok();
  };
  return sparse ? ForEachDataRun(mid, direct) : direct(0, mid.size());
}

}  // namespace

Status WriteSparse(int fd, uint64_t offset, std::span<const uint8_t> data, const std::string& path) {
  return ForEachDataRun(data, [&](size_t pos, size_t n) { return PwriteAll(fd, data.data() + pos, n, offset + pos, path); });
}

Status WriteSparseDirect(int fd, int direct_fd, uint64_t offset, std::span<const uint8_t> data,
                         const std::string& path) {
  return WriteDirect(fd, direct_fd, offset, data, path, /*sparse=*/true);
}

Status WriteAllDirect(int fd, int direct_fd, uint64_t offset, std::span<const uint8_t> data, const std::string& path) {
  return WriteDirect(fd, direct_fd, offset, data, path, /*sparse=*/false);
}

}  // namespace continuum::backup
