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
  // After a resume this covers what the interrupted run wrote too.
  bool verify = false;

  // Resuming (docs/user-guide/backup.md, "Interrupted restores"): a restore
  // keeps a progress file (RestoreProgressFile) while it runs and continues
  // where it was when one of the same point and options is there. One of
  // another point or options is kFailedPrecondition naming it, unless
  // `restart`, which discards it and starts over.
  bool restart = false;
  // Block-device targets keep their progress file under <state_dir>/restore.
  std::string state_dir = "/var/lib/continuum";
  // Progress is made durable (fdatasync or syncfs) and recorded after this many
  // bytes or this much time, whichever comes first.
  uint64_t checkpoint_bytes = 64ull << 20;
  int64_t checkpoint_interval_ns = 2'000'000'000;
  // Told once, before writing, when a restore resumes.
  std::function<void(const std::string&)> notice;
};

struct RestoreReport {
  uint64_t files = 0;
  uint64_t bytes_written = 0;
  uint64_t bytes_verified = 0;
  bool resumed = false;
  uint64_t bytes_resumed = 0;  // restored by the interrupted run, not again by this one
  std::string progress_file;   // removed when the restore completed
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
