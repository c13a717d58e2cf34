#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <span>

namespace continuum::io {

// A buffer aligned for O_DIRECT (4 KiB: the largest logical sector size we
// meet). Move-only.
//
// Buffers of 64 KiB and more come from anonymous mappings kept in a small
// process-wide pool (at most 32 MiB idle): freeing one returns its memory
// instead of leaving it in malloc's arenas, where the agent's mlockall would
// keep every page ever touched resident.
class AlignedBuffer {
 public:
  static constexpr size_t kAlign = 4096;

  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t size) { Resize(size); }
  ~AlignedBuffer() { Release(); }
  AlignedBuffer(AlignedBuffer&& o) noexcept : data_(o.data_), size_(o.size_), capacity_(o.capacity_) {
    o.data_ = nullptr;
    o.size_ = o.capacity_ = 0;
  }
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) {
      Release();
      data_ = o.data_;
      size_ = o.size_;
      capacity_ = o.capacity_;
      o.data_ = nullptr;
      o.size_ = o.capacity_ = 0;
    }
    return *this;
  }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  // Grows the buffer (contents are not kept); never shrinks it.
  void Resize(size_t size);

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<uint8_t> span() { return {data_, size_}; }
  std::span<const uint8_t> span() const { return {data_, size_}; }

  static bool IsAligned(const void* p, size_t size) {
    return reinterpret_cast<uintptr_t>(p) % kAlign == 0 && size % kAlign == 0;
  }

 private:
  void Release();
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

// For containers whose storage must start 4 KiB-aligned (O_DIRECT writes
// straight from a std::vector).
template <typename T>
struct PageAlignedAllocator {
  using value_type = T;
  PageAlignedAllocator() = default;
  template <typename U>
  PageAlignedAllocator(const PageAlignedAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{AlignedBuffer::kAlign})); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t{AlignedBuffer::kAlign}); }
  friend bool operator==(const PageAlignedAllocator&, const PageAlignedAllocator&) { return true; }
};

}  // namespace continuum::io
