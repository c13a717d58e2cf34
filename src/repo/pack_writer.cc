#include "repo/pack_writer.h"

namespace continuum::repo {

PackWriter::PackWriter(BlobCodec* codec, Crypto* crypto) : codec_(codec), crypto_(crypto) {}

Result<PackEntry> PackWriter::Add(BlobType type, const BlobId& id, std::span<const uint8_t> data) {
  scratch_.clear();
  CONTINUUM_ASSIGN_OR_RETURN(PackEntry e, codec_->EncodeAppend(type, id, data, &scratch_));
  return AddStored(e, scratch_);
}

Result<PackEntry> PackWriter::AddStored(PackEntry e, std::span<const uint8_t> stored) {
  if (buf_.size() != data_end_) Unfinish();
  if (entries_.size() >= kMaxBlobsPerPack) return FailedPrecondition("pack is full: seal it first");
  if (stored.size() != e.stored_len) return Internal("stored blob length differs from its entry");
  e.offset = buf_.size();
  buf_.insert(buf_.end(), stored.begin(), stored.end());
  data_end_ = buf_.size();
  by_id_.emplace(e.id, entries_.size());
  entries_.push_back(e);
  return e;
}

const PackEntry* PackWriter::Find(const BlobId& id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &entries_[it->second];
}

Result<PackWriter::Finished> PackWriter::Finish() {
  Unfinish();
  CONTINUUM_ASSIGN_OR_RETURN(std::vector<uint8_t> tail, PackFormat::EncodeTail(*crypto_, entries_));
  buf_.insert(buf_.end(), tail.begin(), tail.end());
  Finished f;
  f.bytes = buf_;
  f.record.pack = Sha256(buf_);
  f.record.pack_size = buf_.size();
  f.record.entries = entries_;
  return f;
}

void PackWriter::Unfinish() { buf_.resize(data_end_); }

void PackWriter::Reset() {
  buf_.clear();
  data_end_ = 0;
  entries_.clear();
  by_id_.clear();
}

}  // namespace continuum::repo
