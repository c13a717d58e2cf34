#pragma once

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace continuum {

// The nice value for worker threads that should run `delta` nicer than the
// calling thread (Linux priorities are per thread); 0 (leave it) when delta is
// not positive or the caller's priority cannot be read. Apply it on the
// worker with setpriority(PRIO_PROCESS, gettid(), value).
inline int WorkerNice(int delta) {
  if (delta <= 0) return 0;
  errno = 0;
  const int base = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()));
  return errno == 0 ? std::min(19, base + delta) : 0;
}

}  // namespace continuum
