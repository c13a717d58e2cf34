#pragma once

#include <cstdint>
#include <functional>

namespace continuum::backup {

// Where a backup or restore is. `bytes_total` is 0 when unknown (path backups
// do not pre-scan). Reported from the working thread, at most every ~64 MiB or
// per file; the receiver rate-limits its own output.
struct Progress {
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
  uint64_t files_done = 0;
  uint64_t new_bytes = 0;  // plaintext of new blobs so far
};

using ProgressFn = std::function<void(const Progress&)>;

}  // namespace continuum::backup
