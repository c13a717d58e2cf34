#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "continuum/backup/chain.h"
#include "continuum/backup/point_info.h"
#include "continuum/backup/progress.h"
#include "continuum/common/result.h"
#include "continuum/repo/repository.h"

namespace continuum::backup {

// A byte range of a source that changed since some earlier point.
struct ChangedRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};

struct ImageBackupOptions {
  std::string source;  // a regular file or a block device
  std::vector<std::string> tags;
  // Recorded in the point's chain (docs/format/backup.md, "Kinds and chains").
  // An image file or device has no changed-block bitmap, so every kind reads
  // the whole source; incremental and differential points differ from full
  // ones only in what they record, and store only chunks the repository does
  // not hold yet (as every point does).
  BackupKind kind = BackupKind::kFull;
};

// Reads the whole source in the repository's fixed chunk size, stores every
// chunk that is not all zeros (dedup by id), writes the offset -> chunk map as
// bounded tree blobs and saves the point (a complete map whatever its kind).
// The point is listed only after all its blobs are durable (SaveManifest
// flushes first). The source should be quiescent (unmounted or frozen):
// nothing here makes it consistent.
Result<PointInfo> BackupImage(repo::Repository& repo, const ImageBackupOptions& options,
                              const ProgressFn& progress = {});

}  // namespace continuum::backup
