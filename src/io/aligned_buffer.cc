#include "continuum/io/aligned_buffer.h"

#include <sys/mman.h>

#include <bit>
#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

namespace continuum::io {
namespace {

constexpr size_t kPoolMin = 64 * 1024;           // smaller buffers come from malloc
constexpr size_t kPoolIdleBytes = 32ull << 20;   // idle mappings kept for reuse

// Idle mappings by size class (powers of two from 64 KiB).
class MappingPool {
 public:
  static MappingPool& Get() {
    static MappingPool* pool = new MappingPool();  // never destroyed: used until exit
    return *pool;
  }
  static size_t ClassSize(size_t n) { return std::bit_ceil(n); }

  uint8_t* Take(size_t cap) {
    {
      std::lock_guard lock(mu_);
      auto& list = free_[std::countr_zero(cap)];
      if (!list.empty()) {
        uint8_t* p = list.back();
        list.pop_back();
        idle_ -= cap;
        return p;
      }
    }
    void* p = ::mmap(nullptr, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    return static_cast<uint8_t*>(p);
  }

  void Give(uint8_t* p, size_t cap) {
    {
      std::lock_guard lock(mu_);
      if (idle_ + cap <= kPoolIdleBytes) {
        free_[std::countr_zero(cap)].push_back(p);
        idle_ += cap;
        return;
      }
    }
    ::munmap(p, cap);
  }

 private:
  std::mutex mu_;
  std::vector<uint8_t*> free_[64];
  size_t idle_ = 0;
};

}  // namespace

void AlignedBuffer::Resize(size_t size) {
  if (size <= capacity_) {
    size_ = size;
    return;
  }
  Release();
  if (size >= kPoolMin) {
    size_t cap = MappingPool::ClassSize(size);
    data_ = MappingPool::Get().Take(cap);
    capacity_ = cap;
  } else {
    size_t cap = (size + kAlign - 1) / kAlign * kAlign;
    void* p = nullptr;
    if (::posix_memalign(&p, kAlign, cap) != 0) throw std::bad_alloc();
    data_ = static_cast<uint8_t*>(p);
    capacity_ = cap;
  }
  size_ = size;
}

void AlignedBuffer::Release() {
  if (data_ == nullptr) return;
  if (capacity_ >= kPoolMin) {
    MappingPool::Get().Give(data_, capacity_);
  } else {
    std::free(data_);
  }
  data_ = nullptr;
  size_ = capacity_ = 0;
}

}  // namespace continuum::io
