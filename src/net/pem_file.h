#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "continuum/common/status.h"

namespace continuum::net {

enum class Overwrite { kNo, kYes };

// Writes a PKI file durably with exactly `mode` (umask notwithstanding): temp
// file, fchmod, fsync, then link (kNo: fails with kAlreadyExists if `path`
// exists, atomically) or rename (kYes), then fsync of the directory.
// A key is never readable by others, not even for a moment: the temp file is
// created with `mode` before any byte is written.
Status WritePemFile(const std::string& path, std::string_view contents, mode_t mode, Overwrite overwrite);

}  // namespace continuum::net
