#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "continuum/common/status.h"

namespace continuum::repo {

// One chunk of a stream. `data` is valid only during the sink call (it may point
// into the caller's input or into the chunker's buffer).
struct Chunk {
  uint64_t offset = 0;  // from the start of the stream
  std::span<const uint8_t> data;
  bool zero = false;    // every byte is zero: callers may elide it (sparse images)
};

// Receives chunks in stream order; an error stops the chunker and is returned.
using ChunkSink = std::function<Status(const Chunk&)>;

// Splits a byte stream into chunks, push style: feed any slices with Write, then
// Finish. Boundaries do not depend on how the stream is sliced.
// Thread-safety: none; one stream at a time per object.
class Chunker {
 public:
  virtual ~Chunker() = default;
  // Feeds the next bytes; calls `sink` for each chunk completed by them.
  virtual Status Write(std::span<const uint8_t> data, const ChunkSink& sink) = 0;
  // Emits the last, possibly short, chunk and resets for a new stream.
  virtual Status Finish(const ChunkSink& sink) = 0;
};

// True when every byte is zero (the empty range included).
bool IsAllZero(std::span<const uint8_t> data);

}  // namespace continuum::repo
