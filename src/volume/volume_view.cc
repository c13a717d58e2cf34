#include "continuum/volume/volume_view.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "continuum/volume/volume.h"

namespace continuum::volume {

VolumeView::VolumeView(std::shared_ptr<Volume> volume, std::shared_ptr<cdp::ViewMap> map,
                       cdp::Point point, std::unique_ptr<io::File> overlay)
    : volume_(std::move(volume)), map_(std::move(map)), point_(point), overlay_(std::move(overlay)) {
  if (overlay_) overlay_bits_.assign(volume_->Size() / volume_->BlockSize(), false);
}

VolumeView::~VolumeView() {
  if (volume_->cdp()) volume_->cdp()->CloseViewMap(map_);
}

uint64_t VolumeView::Size() const { return volume_->Size(); }
uint32_t VolumeView::BlockSize() const { return volume_->BlockSize(); }

Status VolumeView::ReadBase(uint64_t block, uint64_t count, uint8_t* out) {
  const uint32_t bs = volume_->BlockSize();
  // Exclusive: writers update the map before they change the mirror, under
  // the shared lock, so a block missing from the map is unchanged in the
  // mirror while we read it.
  std::unique_lock lock(volume_->mirror_mu_);
  uint64_t i = 0;
  while (i < count) {
    auto it = map_->blocks.find(block + i);
    if (it != map_->blocks.end()) {
      CONTINUUM_RETURN_IF_ERROR(volume_->cdp()->ReadBlock(it->second, {out + i * bs, bs}));
      ++i;
      continue;
    }
    uint64_t j = i + 1;
    while (j < count && map_->blocks.find(block + j) == map_->blocks.end()) ++j;
    CONTINUUM_RETURN_IF_ERROR(volume_->ReadMirror((block + i) * bs, {out + i * bs, (j - i) * bs}));
    i = j;
  }
  return Status::Ok();
}

Status VolumeView::Read(uint64_t offset, std::span<uint8_t> out) {
  const uint32_t bs = volume_->BlockSize();
  if (offset + out.size() > Size()) return Status(StatusCode::kInvalidArgument, "read past the end of view", EINVAL);
  uint64_t start = offset / bs;
  uint64_t end = (offset + out.size() + bs - 1) / bs;
  bool aligned = offset % bs == 0 && out.size() % bs == 0;
  std::vector<uint8_t> tmp;
  uint8_t* dst = out.data();
  if (!aligned) {
    tmp.resize((end - start) * bs);
    dst = tmp.data();
  }
  CONTINUUM_RETURN_IF_ERROR(ReadBase(start, end - start, dst));
  if (overlay_) {
    std::lock_guard lock(overlay_mu_);
    for (uint64_t b = start; b < end; ++b) {
      if (overlay_bits_[b]) {
        CONTINUUM_RETURN_IF_ERROR(overlay_->PRead(b * bs, {dst + (b - start) * bs, bs}, true));
      }
    }
  }
  if (!aligned) std::memcpy(out.data(), tmp.data() + (offset - start * bs), out.size());
  return Status::Ok();
}

Status VolumeView::Write(uint64_t offset, std::span<const uint8_t> data, bool fua) {
  if (!overlay_) return Status(StatusCode::kFailedPrecondition, "view is read-only", EROFS);
  const uint32_t bs = volume_->BlockSize();
  if (offset + data.size() > Size()) return Status(StatusCode::kInvalidArgument, "write past the end of view", ENOSPC);
  uint64_t start = offset / bs;
  uint64_t end = (offset + data.size() + bs - 1) / bs;
  std::vector<uint8_t> buf((end - start) * bs);
  if (offset % bs != 0 || data.size() % bs != 0) {
    CONTINUUM_RETURN_IF_ERROR(Read(start * bs, buf));
  }
  std::memcpy(buf.data() + (offset - start * bs), data.data(), data.size());
  std::lock_guard lock(overlay_mu_);
  CONTINUUM_RETURN_IF_ERROR(overlay_->PWrite(start * bs, buf));
  for (uint64_t b = start; b < end; ++b) overlay_bits_[b] = true;
  return Status::Ok();
}

Status VolumeView::Trim(uint64_t offset, uint64_t length) { return WriteZeroes(offset, length, false); }

Status VolumeView::WriteZeroes(uint64_t offset, uint64_t length, bool fua) {
  std::vector<uint8_t> zeros(std::min<uint64_t>(length, 1ull << 20), 0);
  for (uint64_t done = 0; done < length;) {
    uint64_t n = std::min<uint64_t>(zeros.size(), length - done);
    CONTINUUM_RETURN_IF_ERROR(Write(offset + done, {zeros.data(), n}, false));
    done += n;
  }
  return Status::Ok();
}

std::vector<uint64_t> VolumeView::ChangedBlocks() const {
  std::unique_lock lock(volume_->mirror_mu_);
  std::vector<uint64_t> out;
  out.reserve(map_->blocks.size());
  for (const auto& [b, loc] : map_->blocks) out.push_back(b);
  std::sort(out.begin(), out.end());
  return out;
}

Status VolumeView::CopyTo(const std::string& dest,
                          const std::function<void(uint64_t, uint64_t)>& progress) {
  struct stat st;
  bool exists = ::stat(dest.c_str(), &st) == 0;
  bool is_blk = exists && S_ISBLK(st.st_mode);
  int flags = O_WRONLY | (exists ? 0 : O_CREAT);
  CONTINUUM_ASSIGN_OR_RETURN(auto out, io::File::Open(dest, flags, 0600));
  const uint64_t size = Size();
  if (is_blk) {
    CONTINUUM_ASSIGN_OR_RETURN(uint64_t dev_size, out->Size());
    if (dev_size < size) {
      return FailedPrecondition("device " + dest + " is " + std::to_string(dev_size) +
                                " bytes, smaller than the volume (" + std::to_string(size) + ")");
    }
  } else {
    // A fresh sparse file: zero chunks are simply skipped.
    CONTINUUM_RETURN_IF_ERROR(out->Truncate(0));
    CONTINUUM_RETURN_IF_ERROR(out->Truncate(size));
  }
  constexpr uint64_t kChunk = 1ull << 20;
  std::vector<uint8_t> buf(kChunk);
  std::vector<uint8_t> zero(kChunk, 0);
  for (uint64_t off = 0; off < size; off += kChunk) {
    uint64_t n = std::min(kChunk, size - off);
    CONTINUUM_RETURN_IF_ERROR(Read(off, {buf.data(), n}));
    if (is_blk || std::memcmp(buf.data(), zero.data(), n) != 0) {
      CONTINUUM_RETURN_IF_ERROR(out->PWrite(off, {buf.data(), n}));
    }
    if (progress && ((off / kChunk) % 64 == 0 || off + n == size)) progress(off + n, size);
  }
  CONTINUUM_RETURN_IF_ERROR(out->Sync());
  return Status::Ok();
}

}  // namespace continuum::volume
