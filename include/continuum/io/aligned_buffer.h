#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <span>

namespace continuum::io {

// A heap buffer aligned for O_DIRECT (4 KiB: the largest logical sector size
// we meet). Move-only.
class AlignedBuffer {
 public:
  static constexpr size_t kAlign = 4096;

  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t size) { Resize(size); }

  // Grows the buffer (contents are not kept); never shrinks it.
  void Resize(size_t size) {
    if (size <= capacity_) {
      size_ = size;
      return;
    }
    size_t cap = (size + kAlign - 1) / kAlign * kAlign;
    void* p = nullptr;
    if (::posix_memalign(&p, kAlign, cap) != 0) throw std::bad_alloc();
    data_.reset(static_cast<uint8_t*>(p));
    capacity_ = cap;
    size_ = size;
  }

  uint8_t* data() { return data_.get(); }
  const uint8_t* data() const { return data_.get(); }
  size_t size() const { return size_; }
  std::span<uint8_t> span() { return {data_.get(), size_}; }
  std::span<const uint8_t> span() const { return {data_.get(), size_}; }

  static bool IsAligned(const void* p, size_t size) {
    return reinterpret_cast<uintptr_t>(p) % kAlign == 0 && size % kAlign == 0;
  }

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> data_;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

}  // namespace continuum::io
