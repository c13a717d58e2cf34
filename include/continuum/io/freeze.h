#pragma once

#include <string>

#include "continuum/common/result.h"

namespace continuum::io {

// The mount point of the filesystem on block device `dev_path`, or an empty
// string when it is not mounted (read from /proc/self/mountinfo).
Result<std::string> MountPointOf(const std::string& dev_path);

// Freezes the filesystem mounted at `mount_point` (FIFREEZE): dirty data is
// written to the device and new writes wait until Thaw.
Status FreezeFilesystem(const std::string& mount_point);
Status ThawFilesystem(const std::string& mount_point);

// Runs `command` through /bin/sh -c; non-zero exit is an error naming it.
Status RunHook(const std::string& command, const std::string& what);

}  // namespace continuum::io
