#pragma once

#include "continuum/backup/restore.h"

namespace continuum::backup {

// Restore of path point `point` (see Restore). `root` is the manifest's root tree.
Result<RestoreReport> RestorePaths(repo::Repository& repo, const repo::ManifestId& point, const repo::BlobId& root,
                                   const RestoreOptions& options, const ProgressFn& progress,
                                   const std::function<void(const Status&)>& warn);

}  // namespace continuum::backup
