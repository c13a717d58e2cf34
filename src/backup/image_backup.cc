#include "continuum/backup/image_backup.h"

#include <fcntl.h>
#include <unistd.h>

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
  if (options.kind != BackupKind::kFull) {
    CONTINUUM_ASSIGN_OR_RETURN(std::vector<PointInfo> points, ListPoints(repo));
    ApplyPlan(PlanChain(points, info, options.kind), &info);
  }
  // Without a bitmap nothing says which chunks changed: read everything.
  CONTINUUM_ASSIGN_OR_RETURN(ImageTrees trees, WriteImageTrees(repo, {.file = file.get(), .size = size}, progress));
  info.bytes_read = trees.bytes_read;
  return SavePoint(repo, std::move(info), trees.root, before, start);
}

}  // namespace continuum::backup
