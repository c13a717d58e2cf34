#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "continuum/backup/point_info.h"
#include "continuum/common/result.h"
#include "continuum/repo/repository.h"

namespace continuum::backup {

// One entry of a path point, as `ls` shows it.
struct FileEntry {
  std::string path;  // relative to the point's root, e.g. "etc/ssh/sshd_config"
  std::string type;  // "file", "dir", "symlink", "chardev", "blockdev", "fifo", "socket"
  uint32_t mode = 0;  // permission bits, 07777
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  std::string link_target;
};

// Lists the entries of a path point under `path` (relative to the point root;
// "" or "/" = everything), depth first in name order. A directory brings its
// whole subtree; a file only itself. kNotFound when `path` is not in the point,
// kFailedPrecondition for image points (their filesystem is not read yet),
// kDataLoss for damaged or crafted trees.
Result<std::vector<FileEntry>> ListFiles(repo::Repository& repo, const PointInfo& point, const std::string& path);

}  // namespace continuum::backup
