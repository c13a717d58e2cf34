#pragma once

#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "continuum/repo/blob_id.h"
#include "repo/pack_format.h"

namespace continuum::repo {

struct BlobLocation {
  FileId pack;
  PackEntry entry;
};

// The in-memory union of index files: blob id -> pack, offset, length.
// About 80 bytes per blob (pack ids are interned).
// Thread-safety: none; owned by the Repository's thread.
class MasterIndex {
 public:
  // The first location added for an id wins (a blob stored twice by racing
  // writers is harmless: either copy is valid).
  void Add(const FileId& pack, uint64_t pack_size, const PackEntry& entry);
  // Registers a pack with no blobs so check still verifies it exists.
  void AddPack(const FileId& pack, uint64_t pack_size);
  std::optional<BlobLocation> Find(const BlobId& id) const;
  bool Has(const BlobId& id) const { return blobs_.count(id) != 0; }
  size_t size() const { return blobs_.size(); }
  void Clear();

  struct PackInfo {
    FileId id;
    uint64_t size = 0;
  };
  const std::vector<PackInfo>& packs() const { return packs_; }
  // Calls f(id, pack, entry) for every blob, in no particular order.
  template <typename F>
  void ForEach(F&& f) const {
    for (const auto& [id, slot] : blobs_) f(id, packs_[slot.pack], ToEntry(id, slot));
  }

 private:
  struct Slot {
    uint32_t pack;
    uint32_t stored_len;
    uint32_t raw_len;
    uint8_t type;
    uint8_t compression;
    uint64_t offset;
  };
  static PackEntry ToEntry(const BlobId& id, const Slot& s);
  uint32_t PackSlot(const FileId& pack, uint64_t pack_size);

  std::unordered_map<BlobId, Slot, BlobIdHash> blobs_;
  std::vector<PackInfo> packs_;
  std::unordered_map<FileId, uint32_t, BlobIdHash> pack_slots_;
};

}  // namespace continuum::repo
