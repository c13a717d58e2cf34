#pragma once

#include <functional>
#include <string>
#include <vector>

#include "continuum/backup/point_info.h"
#include "continuum/backup/progress.h"
#include "continuum/common/result.h"
#include "continuum/repo/repository.h"

namespace continuum::backup {

struct RestoreOptions {
  // Image points: the file or block device to write (a file is created sparse).
  // Path points: a directory (created if missing) that receives the sources.
  std::string target;
  // Path points: fnmatch(3) patterns (FNM_PATHNAME) on paths relative to the
  // point's root ("etc/passwd", "etc/*"); a matching directory brings its
  // contents. Empty: everything.
  std::vector<std::string> includes;
  // Re-read what was written (after dropping it from the page cache) and compare.
  bool verify = false;
};

struct RestoreReport {
  uint64_t files = 0;
  uint64_t bytes_written = 0;
  uint64_t bytes_verified = 0;
};

// Restores one point. Never writes outside `target`: entry names from the
// repository are checked (no '/', "." or "..", no duplicates), every step goes
// through directory descriptors with O_NOFOLLOW, and hard links only point at
// files this restore created. Errors: kDataLoss for damaged or crafted points
// (naming the entry), kIoError naming the path.
Result<RestoreReport> Restore(repo::Repository& repo, const PointInfo& point, const RestoreOptions& options,
                              const ProgressFn& progress = {},
                              const std::function<void(const Status&)>& warn = {});

}  // namespace continuum::backup
