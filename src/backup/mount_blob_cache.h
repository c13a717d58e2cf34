#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "continuum/common/result.h"
#include "continuum/repo/repository.h"

namespace continuum::backup {

// Thread-safe, bounded access to the blobs of one repository for a mount: data
// blobs are kept in an LRU cache of at most `capacity_bytes` of plaintext (at
// least one blob), trees are read through. Every repository call runs under one
// mutex because a Repository is single-threaded.
class MountBlobCache {
 public:
  using Blob = std::shared_ptr<const std::vector<uint8_t>>;

  // Owns the repository (the serving process of a mount).
  MountBlobCache(std::unique_ptr<repo::Repository> repo, uint64_t capacity_bytes);
  // Borrows it: `repo` must outlive the cache and not be used elsewhere meanwhile.
  MountBlobCache(repo::Repository* repo, uint64_t capacity_bytes);
  MountBlobCache(const MountBlobCache&) = delete;
  MountBlobCache& operator=(const MountBlobCache&) = delete;

  Result<Blob> Get(const repo::BlobId& id);
  Result<repo::Tree> GetTree(const repo::BlobId& id);

  // Touches the repository so its lock is rewritten when due (a lock that is not
  // refreshed for 30 minutes counts as stale and would let prune run).
  Status KeepLockFresh(const repo::BlobId& any_blob);

  uint64_t hits() const;
  uint64_t misses() const;
  uint64_t cached_bytes() const;

 private:
  using Entry = std::pair<repo::BlobId, Blob>;

  std::unique_ptr<repo::Repository> owned_;
  repo::Repository* repo_;  // guarded by mu_
  const uint64_t capacity_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // front: most recent; guarded by mu_
  std::unordered_map<repo::BlobId, std::list<Entry>::iterator, repo::BlobIdHash> map_;  // guarded by mu_
  uint64_t bytes_ = 0;   // guarded by mu_
  uint64_t hits_ = 0;    // guarded by mu_
  uint64_t misses_ = 0;  // guarded by mu_
};

}  // namespace continuum::backup
