#include "repo/master_index.h"

namespace continuum::repo {

uint32_t MasterIndex::PackSlot(const FileId& pack, uint64_t pack_size) {
  auto [it, inserted] = pack_slots_.emplace(pack, static_cast<uint32_t>(packs_.size()));
  if (inserted) packs_.push_back({pack, pack_size});
  return it->second;
}

void MasterIndex::Add(const FileId& pack, uint64_t pack_size, const PackEntry& e) {
  if (blobs_.count(e.id)) return;
  uint32_t slot = PackSlot(pack, pack_size);
  blobs_.emplace(e.id, Slot{slot, e.stored_len, e.raw_len, static_cast<uint8_t>(e.type), e.compression, e.offset});
}

void MasterIndex::AddPack(const FileId& pack, uint64_t pack_size) { PackSlot(pack, pack_size); }

PackEntry MasterIndex::ToEntry(const BlobId& id, const Slot& s) {
  PackEntry e;
  e.id = id;
  e.type = static_cast<BlobType>(s.type);
  e.compression = s.compression;
  e.stored_len = s.stored_len;
  e.raw_len = s.raw_len;
  e.offset = s.offset;
  return e;
}

std::optional<BlobLocation> MasterIndex::Find(const BlobId& id) const {
  auto it = blobs_.find(id);
  if (it == blobs_.end()) return std::nullopt;
  return BlobLocation{packs_[it->second.pack].id, ToEntry(id, it->second)};
}

void MasterIndex::Clear() {
  blobs_.clear();
  packs_.clear();
  pack_slots_.clear();
}

}  // namespace continuum::repo
