#include "sparse_write.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "continuum/repo/chunker.h"

namespace continuum::backup {

Status WriteSparse(int fd, uint64_t offset, std::span<const uint8_t> data, const std::string& path) {
  constexpr size_t kBlock = 64 << 10;
  size_t pos = 0;
  while (pos < data.size()) {
    size_t n = std::min(kBlock, data.size() - pos);
    if (repo::IsAllZero(data.subspan(pos, n))) {
      pos += n;
      continue;
    }
    size_t end = pos + n;
    while (end < data.size()) {
      size_t m = std::min(kBlock, data.size() - end);
      if (repo::IsAllZero(data.subspan(end, m))) break;
      end += m;
    }
    for (size_t done = pos; done < end;) {
      ssize_t w = ::pwrite(fd, data.data() + done, end - done, static_cast<off_t>(offset + done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return PosixError("write " + path, errno);
      done += static_cast<size_t>(w);
    }
    pos = end;
  }
  return Status::Ok();
}

}  // namespace continuum::backup
