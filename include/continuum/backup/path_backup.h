#pragma once

#include <string>
#include <vector>

#include "continuum/backup/chain.h"
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
  // full reads every file. incremental (the default) and differential take
  // the previous point of the same sources (any kind), respectively the newest
  // full one, as parent (chain.h) and reuse the parent's chunk list for every
  // regular file whose size, mtime, ctime and inode number are unchanged,
  // without opening it (a content or xattr change moves ctime). Without such a
  // parent the point is full. Every point stays complete either way.
  BackupKind kind = BackupKind::kIncremental;
  // Workers that compress and encrypt (0: one per CPU); see repo::BlobPipeline.
  size_t threads = 0;
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
