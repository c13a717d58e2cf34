#pragma once

#include <memory>
#include <string>
#include <thread>

#include "backup/mount_path_tree.h"
#include "continuum/common/result.h"

struct fuse_session;

namespace continuum::backup {

// Serves a MountPathTree as a read-only FUSE file system at a directory:
// modes, owners, times, sizes, symlinks, hard links and xattrs as recorded.
// Writes of any kind are EROFS (the mount is "ro"). Other users see the tree
// with the recorded permissions (allow_other + default_permissions).
//
// Thread-safety: Stop may be called from any thread, once; the session's
// worker threads call the tree concurrently.
class MountPathFuse {
 public:
  // Mounts at `mountpoint` (an existing directory) and starts serving.
  static Result<std::unique_ptr<MountPathFuse>> Start(const std::string& mountpoint,
                                                      std::shared_ptr<MountPathTree> tree);
  ~MountPathFuse();
  MountPathFuse(const MountPathFuse&) = delete;
  MountPathFuse& operator=(const MountPathFuse&) = delete;

  // Unmounts (lazily when busy) and joins the workers; idempotent.
  Status Stop();

 private:
  MountPathFuse(std::string mountpoint, std::shared_ptr<MountPathTree> tree)
      : mountpoint_(std::move(mountpoint)), tree_(std::move(tree)) {}

  const std::string mountpoint_;
  const std::shared_ptr<MountPathTree> tree_;
  fuse_session* session_ = nullptr;
  std::thread loop_;
};

}  // namespace continuum::backup
