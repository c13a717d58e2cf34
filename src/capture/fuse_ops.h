#pragma once

#include "continuum/common/status.h"

struct fuse_lowlevel_ops;

namespace continuum::capture {

// Largest single read/write the kernel may send (needs FUSE max_pages, 5.1+).
inline constexpr unsigned kFuseMaxWrite = 1u << 20;

// The low-level FUSE callbacks of FuseExporter. The session's userdata must be
// the exporter's FuseFileTable*. Every callback may run concurrently on the
// session's worker threads; they share state only through the table.
const fuse_lowlevel_ops& FuseLowLevelOps();

// errno for a failed target call: the Status' own errno when it carries one,
// ENOSPC for kResourceExhausted, EINVAL for kInvalidArgument, else EIO (what a
// block device reports).
int ErrnoFromStatus(const Status& status);

}  // namespace continuum::capture
