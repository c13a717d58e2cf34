#pragma once

#include <cstdint>
#include <vector>

#include "continuum/repo/chunker.h"

namespace continuum::repo {

struct FixedChunkerOptions {
  uint32_t chunk_size = 1u << 20;  // > 0
};

// Fixed-size chunks at multiples of chunk_size: for images and volumes, where
// blocks keep their offsets and a changed-block bitmap maps onto chunks. Flags
// all-zero chunks so callers elide them. Thread-safety: see Chunker.
class FixedChunker : public Chunker {
 public:
  explicit FixedChunker(FixedChunkerOptions options);
  Status Write(std::span<const uint8_t> data, const ChunkSink& sink) override;
  Status Finish(const ChunkSink& sink) override;
  // Emits `bytes` of zeros (a hole of a sparse source) as zero chunks without
  // data. REQUIRES: no partial chunk pending and `bytes` a multiple of the
  // chunk size; else InvalidArgument.
  Status SkipZeros(uint64_t bytes, const ChunkSink& sink);
  uint32_t chunk_size() const { return size_; }

 private:
  Status Emit(std::span<const uint8_t> data, const ChunkSink& sink);
  uint32_t size_;
  uint64_t offset_ = 0;
  std::vector<uint8_t> pending_;  // < size_ bytes of a chunk that straddles writes
};

}  // namespace continuum::repo
