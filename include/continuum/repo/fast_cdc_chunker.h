#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "continuum/common/result.h"
#include "continuum/repo/chunker.h"

namespace continuum::repo {

struct FastCdcOptions {
  uint32_t min_size = 512u << 10;
  uint32_t avg_size = 1u << 20;  // a power of two
  uint32_t max_size = 8u << 20;
  // Seeds the gear table. A repository keeps a secret random seed in its config
  // so chunk lengths do not fingerprint known files.
  uint64_t seed = 0;
  // Normalized chunking level (FastCDC 2020): masks of avg_bits +/- level bits.
  uint32_t normalization = 2;
};

// Content-defined chunking (FastCDC: gear rolling hash, cut-point skipping below
// min_size, normalized chunking). An insertion moves only the boundaries near it,
// so the rest of a changed file still dedups. Thread-safety: see Chunker.
class FastCdcChunker : public Chunker {
 public:
  // kInvalidArgument unless 64 <= min <= avg <= max <= 1 GiB and avg is a power of two.
  static Result<std::unique_ptr<FastCdcChunker>> Create(FastCdcOptions options);

  Status Write(std::span<const uint8_t> data, const ChunkSink& sink) override;
  Status Finish(const ChunkSink& sink) override;

  // The deterministic gear table for `seed` (SplitMix64).
  static std::array<uint64_t, 256> GearTable(uint64_t seed);

 private:
  explicit FastCdcChunker(FastCdcOptions options);
  // Scans from the current chunk state; returns bytes consumed and whether the
  // chunk ends there.
  size_t Scan(const uint8_t* p, size_t n, bool* cut);
  Status Emit(std::span<const uint8_t> data, const ChunkSink& sink);

  FastCdcOptions options_;
  std::array<uint64_t, 256> gear_;
  uint64_t mask_small_;  // harder to match: used below avg_size
  uint64_t mask_large_;  // easier to match: used from avg_size on
  uint64_t hash_ = 0;
  uint64_t len_ = 0;     // bytes of the current chunk seen so far
  uint64_t offset_ = 0;  // stream offset of the current chunk
  std::vector<uint8_t> pending_;  // the current chunk, when it straddles writes
};

}  // namespace continuum::repo
