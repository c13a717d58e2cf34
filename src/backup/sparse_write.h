#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "continuum/common/status.h"
#include "continuum/io/aligned_buffer.h"

namespace continuum::backup {

// Writes `data` at `offset` of a file that reads as zeros there (created empty
// or truncated), in as few writes as possible: each run of 64 KiB blocks that
// are not all zero goes out in one pwrite; zero blocks are skipped and stay
// holes. Errors name `path`.
Status WriteSparse(int fd, uint64_t offset, std::span<const uint8_t> data, const std::string& path);

// Alignment of the offsets, lengths and buffers of direct writes.
constexpr uint64_t kDirectAlign = io::AlignedBuffer::kAlign;

// As WriteSparse, but the whole kDirectAlign blocks of the range go through
// `direct_fd`, the same file opened O_DIRECT (past the page cache: no copy, no
// page allocation, no writeback later); the partial blocks at the ends go
// through `fd`. A direct write the filesystem refuses (EINVAL) is retried
// through `fd`. direct_fd < 0: WriteSparse. (io::ReopenDirect opens one.)
Status WriteSparseDirect(int fd, int direct_fd, uint64_t offset, std::span<const uint8_t> data,
                         const std::string& path);

// As WriteSparseDirect, but every byte is written (a device does not read as
// zeros where nothing was written).
Status WriteAllDirect(int fd, int direct_fd, uint64_t offset, std::span<const uint8_t> data, const std::string& path);

}  // namespace continuum::backup
