#pragma once

#include "continuum/backup/restore.h"

namespace continuum::backup {

// Restore of image point `point` (see Restore). `root` is the manifest's root tree.
Result<RestoreReport> RestoreImage(repo::Repository& repo, const repo::ManifestId& point, const repo::BlobId& root,
                                   const RestoreOptions& options, const ProgressFn& progress);

}  // namespace continuum::backup
