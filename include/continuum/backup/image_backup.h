#pragma once

#include <string>
#include <vector>

#include "continuum/backup/point_info.h"
#include "continuum/backup/progress.h"
#include "continuum/common/result.h"
#include "continuum/repo/repository.h"

namespace continuum::backup {

struct ImageBackupOptions {
  std::string source;  // a regular file or a block device
  std::vector<std::string> tags;
};

// Reads the whole source in the repository's fixed chunk size, stores every
// chunk that is not all zeros (dedup by id), writes the offset -> chunk map as
// bounded tree blobs and saves a full point. The point is listed only after
// all its blobs are durable (SaveManifest flushes first). The source should be
// quiescent (unmounted or frozen): nothing here makes it consistent.
Result<PointInfo> BackupImage(repo::Repository& repo, const ImageBackupOptions& options,
                              const ProgressFn& progress = {});

}  // namespace continuum::backup
