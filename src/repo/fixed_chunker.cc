#include "continuum/repo/fixed_chunker.h"

#include <algorithm>
#include <cstring>

namespace continuum::repo {

bool IsAllZero(std::span<const uint8_t> data) {
  if (data.empty()) return true;
  // All bytes equal the first iff the range equals itself shifted by one.
  return data[0] == 0 && std::memcmp(data.data(), data.data() + 1, data.size() - 1) == 0;
}

FixedChunker::FixedChunker(FixedChunkerOptions options) : size_(options.chunk_size ? options.chunk_size : 1u << 20) {}

Status FixedChunker::Emit(std::span<const uint8_t> data, const ChunkSink& sink) {
  Chunk c{offset_, data, IsAllZero(data)};
  offset_ += data.size();
  return sink(c);
}

Status FixedChunker::Write(std::span<const uint8_t> data, const ChunkSink& sink) {
  if (!pending_.empty()) {
    size_t take = std::min<size_t>(size_ - pending_.size(), data.size());
    pending_.insert(pending_.end(), data.begin(), data.begin() + take);
    data = data.subspan(take);
    if (pending_.size() < size_) return Status::Ok();
    Status st = Emit(pending_, sink);
    pending_.clear();
    CONTINUUM_RETURN_IF_ERROR(st);
  }
  // Whole chunks straight from the caller's buffer: no copy.
  while (data.size() >= size_) {
    CONTINUUM_RETURN_IF_ERROR(Emit(data.first(size_), sink));
    data = data.subspan(size_);
  }
  pending_.assign(data.begin(), data.end());
  return Status::Ok();
}

Status FixedChunker::SkipZeros(uint64_t bytes, const ChunkSink& sink) {
  if (!pending_.empty() || bytes % size_ != 0) {
    return InvalidArgument("zero run of " + std::to_string(bytes) + " bytes does not fall on chunk boundaries");
  }
  for (uint64_t done = 0; done < bytes; done += size_) {
    Chunk c{offset_, {}, true};
    offset_ += size_;
    CONTINUUM_RETURN_IF_ERROR(sink(c));
  }
  return Status::Ok();
}

Status FixedChunker::Finish(const ChunkSink& sink) {
  Status st = Status::Ok();
  if (!pending_.empty()) st = Emit(pending_, sink);
  pending_.clear();
  offset_ = 0;
  return st;
}

}  // namespace continuum::repo
