#include "backup/mount_blob_cache.h"

namespace continuum::backup {

MountBlobCache::MountBlobCache(std::unique_ptr<repo::Repository> repo, uint64_t capacity_bytes)
    : owned_(std::move(repo)), repo_(owned_.get()), capacity_(capacity_bytes) {}

MountBlobCache::MountBlobCache(repo::Repository* repo, uint64_t capacity_bytes)
    : repo_(repo), capacity_(capacity_bytes) {}

Result<MountBlobCache::Blob> MountBlobCache::Get(const repo::BlobId& id) {
  std::lock_guard lock(mu_);
  if (auto it = map_.find(id); it != map_.end()) {
    ++hits_;
    lru_.splice(lru_.begin(), lru_, it->second);
    return it->second->second;
  }
  ++misses_;
  // Held across the read: the repository is single-threaded anyway, and a
  // second reader of the same chunk then finds it cached.
  CONTINUUM_ASSIGN_OR_RETURN(std::vector<uint8_t> data, repo_->Get(id));
  auto blob = std::make_shared<const std::vector<uint8_t>>(std::move(data));
  lru_.emplace_front(id, blob);
  map_[id] = lru_.begin();
  bytes_ += blob->size();
  // Invariant: at most capacity_ bytes cached, except a single larger blob.
  while (bytes_ > capacity_ && lru_.size() > 1) {
    bytes_ -= lru_.back().second->size();
    map_.erase(lru_.back().first);
    lru_.pop_back();
  }
  return blob;
}

Result<repo::Tree> MountBlobCache::GetTree(const repo::BlobId& id) {
  std::lock_guard lock(mu_);
  return repo_->GetTree(id);
}

Status MountBlobCache::KeepLockFresh(const repo::BlobId& any_blob) {
  std::lock_guard lock(mu_);
  // Get refreshes the lock first when the refresh interval has passed.
  return repo_->Get(any_blob).status();
}

uint64_t MountBlobCache::hits() const {
  std::lock_guard lock(mu_);
  return hits_;
}

uint64_t MountBlobCache::misses() const {
  std::lock_guard lock(mu_);
  return misses_;
}

uint64_t MountBlobCache::cached_bytes() const {
  std::lock_guard lock(mu_);
  return bytes_;
}

}  // namespace continuum::backup
