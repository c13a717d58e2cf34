#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "continuum/common/result.h"
#include "continuum/io/aligned_buffer.h"
#include "repo/blob_codec.h"
#include "repo/index_file.h"

namespace continuum::repo {

// Builds one pack in memory: stored blobs, then (at Finish) the sealed header and
// trailer. Blobs stay readable from memory until the pack is stored.
// Thread-safety: none; owned by the Repository's thread.
class PackWriter {
 public:
  PackWriter(BlobCodec* codec, Crypto* crypto);

  Result<PackEntry> Add(BlobType type, const BlobId& id, std::span<const uint8_t> data);
  // Appends a blob another BlobCodec already encoded (`e.offset` is ignored and
  // set to where it lands), so compression and encryption can run on workers.
  Result<PackEntry> AddStored(PackEntry e, std::span<const uint8_t> stored);
  const PackEntry* Find(const BlobId& id) const;
  std::span<const uint8_t> Stored(const PackEntry& e) const { return {buf_.data() + e.offset, e.stored_len}; }

  void Reserve(size_t bytes) { buf_.reserve(bytes); }
  bool empty() const { return entries_.empty(); }
  size_t bytes() const { return buf_.size(); }

  // Appends header and trailer; returns the pack's bytes and its index record.
  // The span is valid until Unfinish or Reset.
  struct Finished {
    std::span<const uint8_t> bytes;
    IndexPack record;
  };
  Result<Finished> Finish();
  // Removes what Finish appended, so a failed store can be retried later.
  void Unfinish();
  void Reset();

 private:
  BlobCodec* codec_;
  Crypto* crypto_;
  // Page-aligned, so that the backend can write the pack past the page cache.
  std::vector<uint8_t, io::PageAlignedAllocator<uint8_t>> buf_;
  std::vector<uint8_t> scratch_;  // Add encodes here first
  size_t data_end_ = 0;  // Invariant: buf_[0, data_end_) holds exactly the entries' blobs.
  std::vector<PackEntry> entries_;
  std::unordered_map<BlobId, size_t, BlobIdHash> by_id_;
};

}  // namespace continuum::repo
