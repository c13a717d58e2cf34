#include "continuum/repo/fast_cdc_chunker.h"

#include <algorithm>
#include <bit>

namespace continuum::repo {

namespace {

// Top `bits` bits set. The gear hash shifts left each byte, so its high bits
// depend on the last 64 bytes while its low bits depend on only the last few:
// testing high bits gives a 64-byte window.
uint64_t TopMask(uint32_t bits) { return bits == 0 ? 0 : ~0ull << (64 - bits); }

}  // namespace

std::array<uint64_t, 256> FastCdcChunker::GearTable(uint64_t seed) {
  std::array<uint64_t, 256> table;
  uint64_t x = seed ^ 0x636f6e74696e7575ull;  // "continuu": seed 0 is not the all-zero state
  for (auto& g : table) {
    x += 0x9e3779b97f4a7c15ull;  // SplitMix64
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    g = z ^ (z >> 31);
  }
  return table;
}

Result<std::unique_ptr<FastCdcChunker>> FastCdcChunker::Create(FastCdcOptions o) {
  if (o.min_size < 64 || o.min_size > o.avg_size || o.avg_size > o.max_size || o.max_size > (1u << 30) ||
      !std::has_single_bit(o.avg_size) || o.avg_size < 256) {
    return InvalidArgument("fastcdc sizes min " + std::to_string(o.min_size) + " avg " + std::to_string(o.avg_size) +
                           " max " + std::to_string(o.max_size) +
                           " must satisfy 64 <= min <= avg <= max <= 1 GiB with avg a power of two >= 256");
  }
  uint32_t bits = static_cast<uint32_t>(std::countr_zero(o.avg_size));
  if (o.normalization >= bits || bits + o.normalization > 48) {
    return InvalidArgument("fastcdc normalization level " + std::to_string(o.normalization) + " is out of range");
  }
  return std::unique_ptr<FastCdcChunker>(new FastCdcChunker(o));
}

FastCdcChunker::FastCdcChunker(FastCdcOptions o) : options_(o), gear_(GearTable(o.seed)) {
  uint32_t bits = static_cast<uint32_t>(std::countr_zero(o.avg_size));
  mask_small_ = TopMask(bits + o.normalization);
  mask_large_ = TopMask(bits - o.normalization);
}

size_t FastCdcChunker::Scan(const uint8_t* p, size_t n, bool* cut) {
  *cut = false;
  size_t i = 0;
  // Cut-point skipping: no boundary below min_size, so those bytes are not hashed.
  // The hash starts from 0 at min_size, which keeps boundaries independent of how
  // the stream is sliced into writes.
  if (len_ < options_.min_size) {
    i = static_cast<size_t>(std::min<uint64_t>(options_.min_size - len_, n));
    len_ += i;
    if (len_ < options_.min_size) return i;
  }
  uint64_t h = hash_;
  // Region [min, avg): the harder mask, so fewer chunks end early (normalization).
  if (len_ < options_.avg_size) {
    size_t start = i;
    size_t end = i + static_cast<size_t>(std::min<uint64_t>(options_.avg_size - len_, n - i));
    for (; i < end; ++i) {
      h = (h << 1) + gear_[p[i]];
      if ((h & mask_small_) == 0) {
        ++i;
        *cut = true;
        break;
      }
    }
    len_ += i - start;
    if (*cut || len_ < options_.avg_size) {
      hash_ = h;
      return i;
    }
  }
  // Region [avg, max): the easier mask; max_size forces a cut.
  size_t start = i;
  size_t end = i + static_cast<size_t>(std::min<uint64_t>(options_.max_size - len_, n - i));
  for (; i < end; ++i) {
    h = (h << 1) + gear_[p[i]];
    if ((h & mask_large_) == 0) {
      ++i;
      *cut = true;
      break;
    }
  }
  len_ += i - start;
  if (len_ >= options_.max_size) *cut = true;
  hash_ = h;
  return i;
}

Status FastCdcChunker::Emit(std::span<const uint8_t> data, const ChunkSink& sink) {
  Chunk c{offset_, data, IsAllZero(data)};
  offset_ += data.size();
  return sink(c);
}

Status FastCdcChunker::Write(std::span<const uint8_t> data, const ChunkSink& sink) {
  size_t pos = 0;
  while (pos < data.size()) {
    bool cut = false;
    size_t used = Scan(data.data() + pos, data.size() - pos, &cut);
    std::span<const uint8_t> piece = data.subspan(pos, used);
    pos += used;
    if (!cut) {
      pending_.insert(pending_.end(), piece.begin(), piece.end());
      continue;
    }
    Status st;
    if (pending_.empty()) {
      st = Emit(piece, sink);  // the whole chunk is in the caller's buffer: no copy
    } else {
      pending_.insert(pending_.end(), piece.begin(), piece.end());
      st = Emit(pending_, sink);
      pending_.clear();
    }
    hash_ = 0;
    len_ = 0;
    CONTINUUM_RETURN_IF_ERROR(st);
  }
  return Status::Ok();
}

Status FastCdcChunker::Finish(const ChunkSink& sink) {
  Status st = Status::Ok();
  if (!pending_.empty()) st = Emit(pending_, sink);
  pending_.clear();
  hash_ = 0;
  len_ = 0;
  offset_ = 0;
  return st;
}

}  // namespace continuum::repo
