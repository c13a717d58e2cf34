#include "backup/mount_image_target.h"

#include <fcntl.h>

#include <algorithm>
#include <cstring>

#include "backup/image_map.h"

namespace continuum::backup {

Result<std::unique_ptr<MountImageTarget>> MountImageTarget::Open(std::shared_ptr<MountBlobCache> blobs,
                                                                 const repo::BlobId& root_id,
                                                                 const ImageTargetOptions& options) {
  const std::string what = "image point root " + root_id.Hex().substr(0, 12);
  CONTINUUM_ASSIGN_OR_RETURN(repo::Tree tree, blobs->GetTree(root_id));
  CONTINUUM_ASSIGN_OR_RETURN(ImageRoot root, DecodeImageRoot(tree.payload, tree.refs.size(), what));
  auto target = std::unique_ptr<MountImageTarget>(new MountImageTarget(
      std::move(blobs), root_id, std::move(tree.refs), root.size, root.chunk_size, root.chunks_per_map));
  if (options.writable) {
    // O_TMPFILE: the overlay has no name, so nothing is left behind by a crash.
    CONTINUUM_ASSIGN_OR_RETURN(target->overlay_,
                               io::File::Open(options.overlay_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    CONTINUUM_RETURN_IF_ERROR(target->overlay_->Truncate(root.size));
    target->written_.assign((root.size + kOverlayBlock - 1) / kOverlayBlock, false);
  }
  return target;
}

MountImageTarget::MountImageTarget(std::shared_ptr<MountBlobCache> blobs, const repo::BlobId& root,
                                   std::vector<repo::BlobId> maps, uint64_t size, uint32_t chunk_size,
                                   uint32_t chunks_per_map)
    : blobs_(std::move(blobs)),
      what_("image point root " + root.Hex().substr(0, 12)),
      map_ids_(std::move(maps)),
      size_(size),
      chunk_size_(chunk_size),
      chunks_per_map_(chunks_per_map),
      maps_(map_ids_.size()) {}

Result<std::shared_ptr<const MountImageTarget::Map>> MountImageTarget::LoadMap(uint64_t index) {
  {
    std::lock_guard lock(maps_mu_);
    if (maps_[index]) return maps_[index];
  }
  CONTINUUM_ASSIGN_OR_RETURN(repo::Tree tree, blobs_->GetTree(map_ids_[index]));
  CONTINUUM_ASSIGN_OR_RETURN(ImageMap decoded, DecodeImageMap(tree.payload, tree.refs.size(), what_));
  const uint64_t chunks = (size_ + chunk_size_ - 1) / chunk_size_;
  const uint64_t first = index * chunks_per_map_;
  if (decoded.first_chunk != first || decoded.slots.size() != std::min<uint64_t>(chunks_per_map_, chunks - first)) {
    return DataLoss(what_ + ": map " + std::to_string(index) + " does not cover its chunks");
  }
  auto map = std::make_shared<Map>(Map{.refs = std::move(tree.refs), .slots = std::move(decoded.slots)});
  std::lock_guard lock(maps_mu_);
  if (!maps_[index]) maps_[index] = std::move(map);  // a racing loader stored the same map
  return maps_[index];
}

Status MountImageTarget::ReadBase(uint64_t offset, std::span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    const uint64_t pos = offset + done;
    const uint64_t chunk = pos / chunk_size_;
    const uint64_t chunk_start = chunk * chunk_size_;
    const uint64_t chunk_len = std::min<uint64_t>(chunk_size_, size_ - chunk_start);
    const size_t n = static_cast<size_t>(std::min<uint64_t>(out.size() - done, chunk_start + chunk_len - pos));
    CONTINUUM_ASSIGN_OR_RETURN(auto map, LoadMap(chunk / chunks_per_map_));
    const uint32_t slot = map->slots[chunk % chunks_per_map_];
    if (slot == kHoleSlot) {
      std::memset(out.data() + done, 0, n);
    } else {
      CONTINUUM_ASSIGN_OR_RETURN(MountBlobCache::Blob blob, blobs_->Get(map->refs[slot]));
      if (blob->size() != chunk_len) {
        return DataLoss(what_ + ": chunk at offset " + std::to_string(chunk_start) + " holds " +
                        std::to_string(blob->size()) + " bytes, expected " + std::to_string(chunk_len));
      }
      std::memcpy(out.data() + done, blob->data() + (pos - chunk_start), n);
    }
    done += n;
  }
  return Status::Ok();
}

Status MountImageTarget::Read(uint64_t offset, std::span<uint8_t> out) {
  if (offset > size_ || out.size() > size_ - offset) return InvalidArgument(what_ + ": read past the end");
  CONTINUUM_RETURN_IF_ERROR(ReadBase(offset, out));
  if (!overlay_) return Status::Ok();
  std::shared_lock lock(overlay_mu_);
  if (written_count_ == 0) return Status::Ok();
  // Overlay blocks win over the point: copy in every written run.
  const uint64_t end = offset + out.size();
  uint64_t block = offset / kOverlayBlock;
  while (block * kOverlayBlock < end) {
    if (!InOverlay(block)) {
      ++block;
      continue;
    }
    uint64_t run_end = block + 1;
    while (run_end * kOverlayBlock < end && InOverlay(run_end)) ++run_end;
    const uint64_t from = std::max(offset, block * kOverlayBlock);
    const uint64_t to = std::min(end, run_end * kOverlayBlock);
    CONTINUUM_RETURN_IF_ERROR(overlay_->PRead(from, out.subspan(from - offset, to - from)));
    block = run_end;
  }
  return Status::Ok();
}

Status MountImageTarget::Write(uint64_t offset, std::span<const uint8_t> data, bool fua) {
  if (!overlay_) return Status(StatusCode::kFailedPrecondition, what_ + " is mounted read-only", EROFS);
  if (offset > size_ || data.size() > size_ - offset) return InvalidArgument(what_ + ": write past the end");
  if (data.empty()) return Status::Ok();
  std::unique_lock lock(overlay_mu_);
  // A block partly covered by this write must first hold the point's bytes,
  // so the rest of it still reads as before.
  const uint64_t first = offset / kOverlayBlock;
  const uint64_t last = (offset + data.size() - 1) / kOverlayBlock;
  std::vector<uint8_t> buf;
  for (uint64_t b : {first, last}) {
    const uint64_t start = b * kOverlayBlock;
    const uint64_t len = std::min<uint64_t>(kOverlayBlock, size_ - start);
    const bool covered = offset <= start && offset + data.size() >= start + len;
    if (covered || InOverlay(b)) continue;
    buf.resize(len);
    CONTINUUM_RETURN_IF_ERROR(ReadBase(start, buf));
    CONTINUUM_RETURN_IF_ERROR(overlay_->PWrite(start, buf));
    written_[b] = true;
    ++written_count_;
  }
  CONTINUUM_RETURN_IF_ERROR(overlay_->PWrite(offset, data));
  for (uint64_t b = first; b <= last; ++b) {
    if (!written_[b]) {
      written_[b] = true;
      ++written_count_;
    }
  }
  return Status::Ok();
}

Status MountImageTarget::WriteZeroes(uint64_t offset, uint64_t length, bool fua) {
  static const std::vector<uint8_t> kZeros(1u << 20, 0);
  while (length > 0) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(length, kZeros.size()));
    CONTINUUM_RETURN_IF_ERROR(Write(offset, std::span<const uint8_t>(kZeros.data(), n), fua));
    offset += n;
    length -= n;
  }
  return Status::Ok();
}

uint64_t MountImageTarget::overlay_blocks() const {
  std::shared_lock lock(overlay_mu_);
  return written_count_;
}

}  // namespace continuum::backup
