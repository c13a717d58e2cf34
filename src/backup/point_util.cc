#include "point_util.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "continuum/repo/chunker.h"

#include "continuum/common/time_util.h"

namespace continuum::backup {

std::string HostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

std::string AbsolutePath(const std::string& path) {
  std::error_code ec;
  auto abs = std::filesystem::absolute(path, ec);
  if (ec) return path;
  std::string s = abs.lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

Result<repo::BlobId> PointRoot(repo::Repository& repo, const PointInfo& point) {
  CONTINUUM_ASSIGN_OR_RETURN(repo::Manifest m, repo.LoadManifest(point.id));
  if (m.roots.size() != 1) return DataLoss("point " + point.id.Hex() + " does not have exactly one root");
  return m.roots[0];
}

Result<PointInfo> SavePoint(repo::Repository& repo, PointInfo info, const repo::BlobId& root,
                            const repo::RepositoryStats& before, int64_t start_mono_ns) {
  // Flush first so the stored-byte counters include the last pack.
  CONTINUUM_RETURN_IF_ERROR(repo.Flush());
  info.new_raw_bytes = repo.stats().raw_bytes_new - before.raw_bytes_new;
  info.new_stored_bytes = repo.stats().stored_bytes_new - before.stored_bytes_new;
  info.duration_ns = MonoNowNs() - start_mono_ns;
  repo::Manifest m{.time_ns = info.time_ns, .roots = {root}, .payload = info.Encode()};
  CONTINUUM_ASSIGN_OR_RETURN(info.id, repo.SaveManifest(m));
  return info;
}

}  // namespace continuum::backup

namespace continuum::backup {

Result<uint64_t> WriteSkippingZeros(int fd, uint64_t offset, std::span<const uint8_t> data, const std::string& path) {
  constexpr size_t kBlock = 64 << 10;
  uint64_t written = 0;
  for (size_t pos = 0; pos < data.size();) {
    size_t n = std::min(kBlock, data.size() - pos);
    auto block = data.subspan(pos, n);
    if (!repo::IsAllZero(block)) {
      size_t done = 0;
      while (done < n) {
        ssize_t w = ::pwrite(fd, block.data() + done, n - done, static_cast<off_t>(offset + pos + done));
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return PosixError("write " + path, errno);
        done += static_cast<size_t>(w);
      }
      written += n;
    }
    pos += n;
  }
  return written;
}

}  // namespace continuum::backup
