#include "continuum/backup/restore.h"

#include "image_restore.h"
#include "path_restore.h"

namespace continuum::backup {

Result<RestoreReport> Restore(repo::Repository& repo, const PointInfo& point, const RestoreOptions& options,
                              const ProgressFn& progress, const std::function<void(const Status&)>& warn) {
  if (options.target.empty()) return InvalidArgument("no restore target given");
  CONTINUUM_ASSIGN_OR_RETURN(repo::Manifest m, repo.LoadManifest(point.id));
  if (m.roots.size() != 1) return DataLoss("point " + point.id.Hex() + ": expected one root tree");
  if (point.type == PointType::kImage) {
    if (!options.includes.empty()) {
      return InvalidArgument("--include selects files of path points; point " + point.id.Hex().substr(0, 12) +
                             " is an image");
    }
    return RestoreImage(repo, point.id, m.roots[0], options, progress);
  }
  return RestorePaths(repo, point.id, m.roots[0], options, progress, warn);
}

}  // namespace continuum::backup
