#include "continuum/backup/image_backup.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "continuum/backup/chain.h"
#include "continuum/backup/point_catalog.h"
#include "continuum/common/time_util.h"
#include "continuum/io/file.h"
#include "image_tree_writer.h"
#include "point_util.h"

namespace continuum::backup {

Result<PointInfo> BackupImage(repo::Repository& repo, const ImageBackupOptions& options, const ProgressFn& progress) {
  int64_t start_wall = WallNowNs();
  int64_t start = MonoNowNs();
  const repo::RepositoryStats before = repo.stats();
  CONTINUUM_ASSIGN_OR_RETURN(auto file, io::File::Open(options.source, O_RDONLY | O_CLOEXEC));
  // lseek works for block devices too (fstat reports size 0 for them).
  off_t end = ::lseek(file->fd(), 0, SEEK_END);
  if (end < 0) return PosixError("size of " + options.source, errno);
  const uint64_t size = static_cast<uint64_t>(end);

  PointInfo info;
  info.time_ns = start_wall;
  info.type = PointType::kImage;
  info.sources = {AbsolutePath(options.source)};
  info.host = HostName();
  info.tags = options.tags;
  info.size = size;
  info.files = 1;
  info.chunk_size = repo.FixedOptions().chunk_size;
  struct stat st;
  if (::fstat(file->fd(), &st) == 0 && S_ISREG(st.st_mode)) {
    info.source_file = {.dev = static_cast<uint64_t>(st.st_dev), .ino = static_cast<uint64_t>(st.st_ino),
                        .size = size, .mtime_ns = st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec,
                        .ctime_ns = st.st_ctim.tv_sec * 1'000'000'000LL + st.st_ctim.tv_nsec};
  }
  // Without a bitmap nothing says which chunks changed: read everything,
  // unless the source is a regular file untouched since the parent point
  // (same device, inode, size, mtime and ctime): then reuse its maps.
  ImageReadPlan read{.file = file.get(), .size = size};
  if (options.kind != BackupKind::kFull) {
    CONTINUUM_ASSIGN_OR_RETURN(std::vector<PointInfo> points, ListPoints(repo));
    ChainPlan plan = PlanChain(points, info, options.kind);
    ApplyPlan(plan, &info);
    if (plan.parent && info.source_file.ino != 0 && plan.parent->source_file == info.source_file) {
      CONTINUUM_ASSIGN_OR_RETURN(repo::BlobId parent_root, PointRoot(repo, *plan.parent));
      CONTINUUM_ASSIGN_OR_RETURN(bool fits, ParentFits(repo, parent_root, size));
      // A repair may have dropped damaged chunks of the parent: then read.
      if (fits) {
        CONTINUUM_ASSIGN_OR_RETURN(fits, AllBlobsPresent(repo, parent_root));
      }
      if (fits) read.parent_root = parent_root;  // no changed ranges: nothing is read
    }
  }
  CONTINUUM_ASSIGN_OR_RETURN(ImageTrees trees, WriteImageTrees(repo, read, progress));
  info.bytes_read = trees.bytes_read;
  return SavePoint(repo, std::move(info), trees.root, before, start);
}

}  // namespace continuum::backup
