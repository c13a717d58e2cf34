#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "continuum/common/status.h"

namespace continuum::backup {

// Writes `data` at `offset` of a file that reads as zeros there (created empty
// or truncated), in as few writes as possible: each run of 64 KiB blocks that
// are not all zero goes out in one pwrite; zero blocks are skipped and stay
// holes. Errors name `path`.
Status WriteSparse(int fd, uint64_t offset, std::span<const uint8_t> data, const std::string& path);

}  // namespace continuum::backup
