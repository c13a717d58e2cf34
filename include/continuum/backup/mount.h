#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "continuum/backup/point_files.h"
#include "continuum/backup/point_info.h"
#include "continuum/common/result.h"
#include "continuum/repo/repository.h"

namespace continuum::backup {

// Where repo mounts are registered (one <id>.json per mount); $CONTINUUM_MOUNT_DIR overrides.
inline constexpr const char* kDefaultMountRegistry = "/run/continuum/mounts";
std::string MountRegistryDir();

// One mount of a point, served by a background process of its own.
struct MountRecord {
  std::string id;          // registry name
  std::string kind;        // "image" (block device) or "path" (directory)
  std::string point;       // full point id (hex)
  std::string repo;        // absolute repository path
  std::string device;      // image: /dev/loopN
  std::string mountpoint;  // path: the directory; image: the FUSE directory holding the image file
  bool writable = false;
  int pid = 0;             // the serving process
  uint64_t start_ticks = 0;  // of pid, to see through pid reuse
  int64_t created_ns = 0;

  nlohmann::json ToJson() const;
  static Result<MountRecord> FromJson(const nlohmann::json& j);
};

struct MountRequest {
  std::string repo_path;
  repo::Credentials creds;
  std::string point;   // id, unique prefix or "latest"
  std::string at_dir;  // path points: an existing empty directory; empty for image points
  bool writable = false;  // image points: writes go to a scratch overlay, never to the repository
  uint64_t cache_bytes = 256ull << 20;  // chunk cache of the serving process
  std::string registry_dir;  // empty: MountRegistryDir()
};

// Starts a mount and returns once it is ready (the device is attached or the
// directory mounted): a child process opens the repository (holding a shared
// lock for the mount's lifetime, so prune cannot delete its data), sets the
// mount up and reports back; then it keeps serving reads on demand in the
// background until CloseMount or SIGTERM. Errors of the child (unknown point,
// wrong password, FUSE unavailable ...) are returned here with its message.
// Must be called while the process is single-threaded (it forks).
Result<MountRecord> StartMount(const MountRequest& request);

// The registered repo mount whose device, directory or id is `device_or_dir`
// (its server may have died: CloseMount then only cleans up); kNotFound when
// there is none.
Result<MountRecord> FindMount(const std::string& device_or_dir, const std::string& registry_dir = "");
// Every live repo mount (stale entries are cleaned up).
Result<std::vector<MountRecord>> ListMounts(const std::string& registry_dir = "");

// Ends a mount: detaches the loop device (kFailedPrecondition while it is
// mounted or open) or unmounts the directory (kFailedPrecondition while busy),
// stops the serving process and removes its registry entry.
Status CloseMount(const MountRecord& record, const std::string& registry_dir = "");

// Lists the files inside an image point's filesystem, as ListFiles does for
// path points: attaches the point read-only (FUSE file + loop device), mounts
// its filesystem read-only in a private mount namespace and temporary
// directory, walks it, and cleans everything up. Moves the calling process to
// a private mount namespace (when it can), so it must be called while the
// process is single-threaded. kNotFound when `path` is not in the filesystem,
// kFailedPrecondition when no filesystem can be mounted from the image.
Result<std::vector<FileEntry>> ListImageFiles(repo::Repository& repo, const PointInfo& point, const std::string& path);

}  // namespace continuum::backup
