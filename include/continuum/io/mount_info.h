#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace continuum::io {

// One line of /proc/self/mountinfo (proc(5)); paths are unescaped (\040 -> ' ').
struct MountEntry {
  dev_t dev = 0;              // st_dev of files on this mount (major:minor)
  std::string mount_point;
  std::string fstype;
  std::string super_options;  // e.g. "rw,errors=remount-ro"
};

// The mounts of this process's mount namespace, in mountinfo order (a later
// entry at the same mount point is stacked on the earlier one). Empty if
// mountinfo cannot be read.
std::vector<MountEntry> ReadMountInfo();

}  // namespace continuum::io
