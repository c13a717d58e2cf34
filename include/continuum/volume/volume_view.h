#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "continuum/cdp/cdp_store.h"
#include "continuum/io/block_target.h"
#include "continuum/io/file.h"

namespace continuum::volume {

class Volume;

// The volume as it was at a point: the live mirror overlaid by the undo
// journal's before-images (the map is kept current by the apply step).
// Writable views send writes to a sparse overlay file and never touch the
// volume or its journal.
// Thread-safety: all BlockTarget calls may run concurrently.
class VolumeView : public io::BlockTarget {
 public:
  VolumeView(std::shared_ptr<Volume> volume, std::shared_ptr<cdp::ViewMap> map, cdp::Point point,
             std::unique_ptr<io::File> overlay);
  ~VolumeView() override;

  uint64_t Size() const override;
  uint32_t BlockSize() const override;
  bool ReadOnly() const override { return overlay_ == nullptr; }
  Status Read(uint64_t offset, std::span<uint8_t> out) override;
  Status Write(uint64_t offset, std::span<const uint8_t> data, bool fua) override;
  Status Flush() override { return Status::Ok(); }
  Status Trim(uint64_t offset, uint64_t length) override;
  Status WriteZeroes(uint64_t offset, uint64_t length, bool fua) override;

  const cdp::Point& point() const { return point_; }
  // Blocks that differ from the live volume (those with a before-image).
  std::vector<uint64_t> ChangedBlocks() const;
  // Copies the image at the point to `dest` (a file, created sparse, or a
  // block device). `progress` gets bytes done and total.
  Status CopyTo(const std::string& dest, const std::function<void(uint64_t, uint64_t)>& progress);

 private:
  Status ReadBase(uint64_t block, uint64_t count, uint8_t* out);

  std::shared_ptr<Volume> volume_;
  std::shared_ptr<cdp::ViewMap> map_;
  cdp::Point point_;
  std::unique_ptr<io::File> overlay_;
  std::mutex overlay_mu_;
  std::vector<bool> overlay_bits_;  // GUARDED_BY(overlay_mu_)
};

}  // namespace continuum::volume
