#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "continuum/io/block_target.h"

namespace continuum::capture::nbd_test {

// An in-memory BlockTarget that counts the calls the NBD server makes, so
// tests can prove that a client's flush or FUA reached the target.
// Thread-safety: all calls may run concurrently (one mutex over the bytes).
class NbdMemoryTarget : public io::BlockTarget {
 public:
  explicit NbdMemoryTarget(uint64_t size, bool read_only = false, uint32_t block_size = 4096)
      : bytes_(size), read_only_(read_only), block_size_(block_size) {}

  uint64_t Size() const override { return bytes_.size(); }
  uint32_t BlockSize() const override { return block_size_; }
  bool ReadOnly() const override { return read_only_; }

  Status Read(uint64_t offset, std::span<uint8_t> out) override {
    ++reads;
    if (offset > bytes_.size() || out.size() > bytes_.size() - offset) {
      return OutOfRange("memory target read past end");
    }
    std::lock_guard lock(mu_);
    std::memcpy(out.data(), bytes_.data() + offset, out.size());
    return Status::Ok();
  }

  Status Write(uint64_t offset, std::span<const uint8_t> data, bool fua) override {
    ++writes;
    if (fua) ++fua_writes;
    if (fail_writes_with.load() != 0) {
      return Status(StatusCode::kIoError, "memory target write failed", fail_writes_with.load());
    }
    if (offset > bytes_.size() || data.size() > bytes_.size() - offset) {
      return ResourceExhausted("memory target write past end");
    }
    std::lock_guard lock(mu_);
    std::memcpy(bytes_.data() + offset, data.data(), data.size());
    return Status::Ok();
  }

  Status Flush() override {
    ++flushes;
    return Status::Ok();
  }

  Status Trim(uint64_t offset, uint64_t length) override {
    ++trims;
    return Zero(offset, length);
  }

  Status WriteZeroes(uint64_t offset, uint64_t length, bool fua) override {
    ++write_zeroes;
    if (fua) ++fua_writes;
    return Zero(offset, length);
  }

  // Copy of the bytes in [offset, offset + length).
  std::vector<uint8_t> Snapshot(uint64_t offset = 0, uint64_t length = UINT64_MAX) const {
    std::lock_guard lock(mu_);
    length = std::min<uint64_t>(length, bytes_.size() - offset);
    return {bytes_.begin() + static_cast<ptrdiff_t>(offset),
            bytes_.begin() + static_cast<ptrdiff_t>(offset + length)};
  }

  void Fill(uint8_t value) {
    std::lock_guard lock(mu_);
    std::memset(bytes_.data(), value, bytes_.size());
  }

  std::atomic<uint64_t> reads{0}, writes{0}, fua_writes{0}, flushes{0}, trims{0}, write_zeroes{0};
  // Nonzero: every Write fails with this errno (fault injection).
  std::atomic<int> fail_writes_with{0};

 private:
  Status Zero(uint64_t offset, uint64_t length) {
    if (offset > bytes_.size() || length > bytes_.size() - offset) {
      return OutOfRange("memory target zero past end");
    }
    std::lock_guard lock(mu_);
    std::memset(bytes_.data() + offset, 0, length);
    return Status::Ok();
  }

  mutable std::mutex mu_;
  std::vector<uint8_t> bytes_;
  const bool read_only_;
  const uint32_t block_size_;
};

}  // namespace continuum::capture::nbd_test
