#pragma once

#include <span>
#include <string>

#include "continuum/backup/point_info.h"
#include "continuum/common/result.h"
#include "continuum/repo/repository.h"

namespace continuum::backup {

std::string HostName();
// `path` made absolute and lexically normal (symlinks are not resolved).
std::string AbsolutePath(const std::string& path);
// Fills the size counters from the repository stats since `before`, then
// saves the manifest (which flushes every blob first) and sets `info.id`.
Result<PointInfo> SavePoint(repo::Repository& repo, PointInfo info, const repo::BlobId& root,
                            const repo::RepositoryStats& before, int64_t start_mono_ns);
// The root tree of an image or volume point.
Result<repo::BlobId> PointRoot(repo::Repository& repo, const PointInfo& point);

}  // namespace continuum::backup

namespace continuum::backup {

// Writes `data` at `offset` of a file known to read as zeros there (freshly
// created or truncated), skipping 64 KiB blocks that are all zero so they stay
// holes. Returns the bytes actually written.
Result<uint64_t> WriteSkippingZeros(int fd, uint64_t offset, std::span<const uint8_t> data, const std::string& path);

}  // namespace continuum::backup
