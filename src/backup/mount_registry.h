#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "continuum/backup/mount.h"

namespace continuum::backup {

// The registry of repo mounts: <dir>/<id>.json, written atomically. Plain JSON
// so an operator can see what serves which device.
class MountRegistry {
 public:
  explicit MountRegistry(std::string dir);

  const std::string& dir() const { return dir_; }
  Status Save(const MountRecord& record) const;
  Status Remove(const std::string& id) const;
  // Every decodable entry, live or not. Undecodable files are skipped.
  Result<std::vector<MountRecord>> LoadAll() const;
  // The live entries; entries whose process is gone are cleaned up (their
  // FUSE directory lazily unmounted, their loop device detached if it
  // still points into it) and removed.
  Result<std::vector<MountRecord>> LoadLive() const;
  // A private directory for the FUSE mount of image `id`.
  std::string FuseDirOf(const std::string& id) const { return dir_ + "/" + id + ".fuse"; }
  std::string LogOf(const std::string& id) const { return dir_ + "/" + id + ".log"; }

 private:
  std::string dir_;
};

// Whether `pid` runs and is the process that started at `start_ticks` (0:
// any). Zombies count as gone.
bool ProcessAlive(pid_t pid, uint64_t start_ticks);
// Start time of a running process in clock ticks since boot; 0 if none.
uint64_t StartTicksOf(pid_t pid);

// Removes what a dead mount left: detaches loop devices backed by its FUSE
// directory, lazily unmounts that directory (or the path mount) if it is a
// dead FUSE mount, and removes the directory.
void CleanUpDeadMount(const MountRegistry& registry, const MountRecord& record);

}  // namespace continuum::backup
