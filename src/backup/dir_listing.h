#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "continuum/common/result.h"

namespace continuum::backup {

enum class EntryType { kFile, kDir, kSymlink, kCharDev, kBlockDev, kFifo, kSocket };

// One directory entry of a path point. Names and symlink targets are raw
// bytes (not necessarily UTF-8).
struct DirEntry {
  std::string name;
  EntryType type = EntryType::kFile;
  uint32_t mode = 0;  // permission bits, 07777
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;  // informational: restore cannot set it
  // No atime: reading the source changes it, so storing it would make every
  // tree differ between runs and defeat dedup. Restore sets atime = mtime.
  uint64_t size = 0;
  uint64_t inode = 0;
  uint64_t nlink = 0;
  uint64_t rdev = 0;
  std::string link_target;
  // Files: the content in order; i >= 0 is refs[i] of the directory's tree, a
  // negative value is a hole of -i zero bytes.
  std::vector<int64_t> chunks;
  int64_t subtree = -1;  // directories: refs index of their own tree
  std::map<std::string, std::vector<uint8_t>> xattrs;
  uint64_t hardlink_group = 0;  // 0: none; equal values share one inode
};

// The payload of a directory tree: CBOR {"v": 1, "e": [entry...]} with short
// keys (see dir_listing.cc). Entries sorted by name.
std::vector<uint8_t> EncodeDirListing(const std::vector<DirEntry>& entries);
// Rejects everything a crafted repository could use against a restore: names
// that are empty, ".", "..", hold '/' or NUL, or repeat; refs out of range;
// a directory without a subtree; chunks on non-files. kDataLoss naming `what`.
Result<std::vector<DirEntry>> DecodeDirListing(const std::vector<uint8_t>& payload, size_t ref_count,
                                               const std::string& what);

// True for a name that can only ever mean one entry inside its directory.
bool IsSafeEntryName(std::string_view name);

}  // namespace continuum::backup
