#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

#include "continuum/repo/blob_id.h"

namespace continuum::repo {

// Little-endian encoder for the repository formats. Appends to a vector.
class ByteWriter {
 public:
  explicit ByteWriter(std::vector<uint8_t>* out) : out_(out) {}
  void U8(uint8_t v) { out_->push_back(v); }
  void U16(uint16_t v) { Le(v, 2); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  void I64(int64_t v) { Le(static_cast<uint64_t>(v), 8); }
  void Bytes(std::span<const uint8_t> b) { out_->insert(out_->end(), b.begin(), b.end()); }
  void Str(std::string_view s) { out_->insert(out_->end(), s.begin(), s.end()); }
  void Id(const BlobId& id) { Bytes(id.bytes); }
  void Zeros(size_t n) { out_->insert(out_->end(), n, 0); }

 private:
  void Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_->push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t>* out_;
};

// Bounds-checked little-endian decoder over bytes from disk. Every read returns
// false (and latches failed()) instead of reading past the end: parsers check
// once per record and turn failure into a Status naming the file.
class ByteReader {
 public:
  explicit ByteReader(std::span<const uint8_t> in) : in_(in) {}
  bool U8(uint8_t* v) { return Le(v, 1); }
  bool U16(uint16_t* v) { return Le(v, 2); }
  bool U32(uint32_t* v) { return Le(v, 4); }
  bool U64(uint64_t* v) { return Le(v, 8); }
  bool I64(int64_t* v) {
    uint64_t u;
    if (!Le(&u, 8)) return false;
    *v = static_cast<int64_t>(u);
    return true;
  }
  bool Id(BlobId* id) { return Copy(id->bytes.data(), 32); }
  bool Copy(uint8_t* dst, size_t n) {
    if (!Need(n)) return false;
    std::memcpy(dst, in_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  bool Take(size_t n, std::span<const uint8_t>* out) {
    if (!Need(n)) return false;
    *out = in_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  bool Skip(size_t n) {
    if (!Need(n)) return false;
    pos_ += n;
    return true;
  }
  size_t remaining() const { return in_.size() - pos_; }
  size_t position() const { return pos_; }
  bool failed() const { return failed_; }

 private:
  bool Need(size_t n) {
    if (failed_ || n > in_.size() - pos_) {
      failed_ = true;
      return false;
    }
    return true;
  }
  template <typename T>
  bool Le(T* v, int n) {
    if (!Need(static_cast<size_t>(n))) return false;
    uint64_t x = 0;
    for (int i = 0; i < n; ++i) x |= static_cast<uint64_t>(in_[pos_ + i]) << (8 * i);
    pos_ += static_cast<size_t>(n);
    *v = static_cast<T>(x);
    return true;
  }
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  bool failed_ = false;
};

inline uint32_t Magic(const char (&m)[5]) {
  return static_cast<uint32_t>(static_cast<uint8_t>(m[0])) |
         static_cast<uint32_t>(static_cast<uint8_t>(m[1])) << 8 |
         static_cast<uint32_t>(static_cast<uint8_t>(m[2])) << 16 |
         static_cast<uint32_t>(static_cast<uint8_t>(m[3])) << 24;
}

inline std::span<const uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace continuum::repo
