#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "backup/mount_blob_cache.h"
#include "continuum/common/result.h"
#include "continuum/io/block_target.h"
#include "continuum/io/file.h"

namespace continuum::backup {

// Logical block size of the loop device over a mounted image: 512, so a
// filesystem made with 1 KiB blocks (mkfs.ext4 of a small image) mounts too.
inline constexpr uint32_t kLoopBlockSize = 512;

struct ImageTargetOptions {
  // Writes go to a scratch overlay (an unnamed sparse file in overlay_dir,
  // gone when the process ends); the repository is never changed. Without it
  // the target is read-only (FUSE answers EROFS).
  bool writable = false;
  std::string overlay_dir = "/var/tmp";
};

// An image point as a block device: reads fetch the point's chunks from the
// repository on demand (through the cache), holes read as zeros. Map trees
// are loaded on first use, so opening costs one tree read whatever the size.
//
// Thread-safety: every BlockTarget call may run concurrently (FUSE workers).
// Maps are guarded by maps_mu_, the overlay bitmap by overlay_mu_ (writers
// exclusive), the repository by the cache's own mutex.
class MountImageTarget : public io::BlockTarget {
 public:
  static constexpr uint32_t kOverlayBlock = 4096;

  static Result<std::unique_ptr<MountImageTarget>> Open(std::shared_ptr<MountBlobCache> blobs,
                                                        const repo::BlobId& root, const ImageTargetOptions& options);

  uint64_t Size() const override { return size_; }
  uint32_t BlockSize() const override { return kOverlayBlock; }
  bool ReadOnly() const override { return overlay_ == nullptr; }
  Status Read(uint64_t offset, std::span<uint8_t> out) override;
  Status Write(uint64_t offset, std::span<const uint8_t> data, bool fua) override;
  Status Flush() override { return Status::Ok(); }  // the overlay is scratch: nothing to make durable
  Status Trim(uint64_t offset, uint64_t length) override { return WriteZeroes(offset, length, false); }
  Status WriteZeroes(uint64_t offset, uint64_t length, bool fua) override;

  uint32_t chunk_size() const { return chunk_size_; }
  // Blocks written to the overlay so far.
  uint64_t overlay_blocks() const;

 private:
  struct Map {
    std::vector<repo::BlobId> refs;
    std::vector<uint32_t> slots;
  };

  MountImageTarget(std::shared_ptr<MountBlobCache> blobs, const repo::BlobId& root, std::vector<repo::BlobId> maps,
                   uint64_t size, uint32_t chunk_size, uint32_t chunks_per_map);
  // The bytes of the point itself (no overlay).
  Status ReadBase(uint64_t offset, std::span<uint8_t> out);
  Result<std::shared_ptr<const Map>> LoadMap(uint64_t index);
  bool InOverlay(uint64_t block) const { return written_[block]; }  // REQUIRES overlay_mu_ held

  const std::shared_ptr<MountBlobCache> blobs_;
  const std::string what_;
  const std::vector<repo::BlobId> map_ids_;
  const uint64_t size_;
  const uint32_t chunk_size_;
  const uint32_t chunks_per_map_;
  std::mutex maps_mu_;
  std::vector<std::shared_ptr<const Map>> maps_;  // guarded by maps_mu_; null until loaded

  std::unique_ptr<io::File> overlay_;  // null when read-only
  mutable std::shared_mutex overlay_mu_;
  std::vector<bool> written_;  // guarded by overlay_mu_; one bit per kOverlayBlock
  uint64_t written_count_ = 0;  // guarded by overlay_mu_
};

}  // namespace continuum::backup
