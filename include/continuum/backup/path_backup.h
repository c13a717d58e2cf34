#pragma once

#include <string>
#include <vector>

#include "continuum/backup/point_info.h"
#include "continuum/backup/progress.h"
#include "continuum/common/result.h"
#include "continuum/repo/repository.h"

namespace continuum::backup {

struct PathBackupOptions {
  std::vector<std::string> sources;  // each is stored under its base name at the point's root
  // fnmatch(3) patterns: without '/' matched against every base name, with '/'
  // against the absolute path (and excluding a directory excludes its contents).
  std::vector<std::string> excludes;
  std::vector<std::string> tags;
};

// Walks the sources without following symlinks or crossing into other
// entries' names, chunks file contents with FastCDC (all-zero chunks become
// holes), and stores one tree blob per directory with full metadata: type,
// mode, owner, times, size, inode, link count, symlink target, device number,
// xattrs (ACLs are xattrs) and hard-link groups. Unreadable entries are skipped
// and counted in PointInfo::warnings (each is reported through `warn`).
Result<PointInfo> BackupPaths(repo::Repository& repo, const PathBackupOptions& options,
                              const ProgressFn& progress = {},
                              const std::function<void(const Status&)>& warn = {});

}  // namespace continuum::backup
