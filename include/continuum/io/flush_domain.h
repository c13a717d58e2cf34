#pragma once

#include <string>

namespace continuum::io {

// Whether the cache flush that an fdatasync of a file at `a` ends with also
// makes durable the completed writes of another file at `b`, into blocks of
// `b` that are already allocated and written (ADR 0011). True only where that
// is known: both paths on one ext4 file system (so one block device), mounted
// with write barriers and without data=journal (where data writes are journal
// writes that need a commit). Otherwise false, with the reason in `why_not`.
bool SharesCacheFlush(const std::string& a, const std::string& b, std::string* why_not);

}  // namespace continuum::io
