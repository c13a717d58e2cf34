#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backup/dir_listing.h"
#include "backup/mount_blob_cache.h"
#include "continuum/common/result.h"

namespace continuum::backup {

// The directory trees of a path point as an inode table for a read-only file
// system. Directories are decoded on first lookup or listing; file contents
// are read on demand through the blob cache. Entries of one hard-link group
// share an inode.
//
// Thread-safety: all calls may run concurrently; the table is guarded by
// mu_, blob reads run outside it.
class MountPathTree {
 public:
  static constexpr uint64_t kRootIno = 1;

  // `time_ns` dates the synthetic root directory (the point's time).
  static Result<std::unique_ptr<MountPathTree>> Open(std::shared_ptr<MountBlobCache> blobs, const repo::BlobId& root,
                                                     int64_t time_ns);

  // kNotFound (ENOENT) when `name` is not in directory `parent`.
  Result<uint64_t> Lookup(uint64_t parent, const std::string& name);
  Result<struct stat> Attr(uint64_t ino);
  // Entries of a directory in name order (without "." and "..").
  Result<std::vector<std::pair<std::string, uint64_t>>> List(uint64_t ino);
  Result<std::string> ReadLink(uint64_t ino);
  // Reads up to out.size() bytes at `offset`; fewer only at the end of the file.
  Result<size_t> Read(uint64_t ino, uint64_t offset, std::span<uint8_t> out);
  Result<std::map<std::string, std::vector<uint8_t>>> Xattrs(uint64_t ino);

 private:
  // A file's pieces in order. Holes carry their length; a data blob's length
  // is learned when it is first read (trees do not record it), so `ends`
  // covers a prefix of the pieces. Guarded by its own mutex.
  struct FileData {
    struct Piece {
      repo::BlobId id;
      uint64_t hole = 0;  // > 0: a hole of this many zero bytes
    };
    std::mutex mu;
    std::vector<Piece> pieces;
    std::vector<uint64_t> ends;  // guarded by mu: end offset of pieces[0..ends.size())
  };
  struct Node {
    DirEntry entry;
    repo::BlobId tree;                         // directories: their tree
    bool listed = false;                       // directories: children loaded
    std::map<std::string, uint64_t> children;  // directories
    std::shared_ptr<FileData> data;             // files: their content
  };

  MountPathTree(std::shared_ptr<MountBlobCache> blobs) : blobs_(std::move(blobs)) {}
  // Loads the children of directory `ino`. REQUIRES mu_ held.
  Status LoadDir(uint64_t ino, std::unique_lock<std::mutex>& lock);
  Result<Node*> Get(uint64_t ino);  // REQUIRES mu_ held

  const std::shared_ptr<MountBlobCache> blobs_;
  std::mutex mu_;
  std::unordered_map<uint64_t, std::unique_ptr<Node>> nodes_;  // guarded by mu_
  std::unordered_map<uint64_t, uint64_t> link_groups_;         // guarded by mu_: hard-link group -> ino
  uint64_t next_ino_ = kRootIno + 1;                           // guarded by mu_
};

}  // namespace continuum::backup
