#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace continuum::repo {

// This host's name (gethostname), cut to 255 bytes; "localhost" if unknown.
std::string HostName();
// Start time of `pid` in clock ticks since boot (/proc/<pid>/stat field 22), or 0
// when no such process exists. Together with the pid it identifies a process
// across pid reuse.
uint64_t ProcessStartTicks(pid_t pid);

}  // namespace continuum::repo
