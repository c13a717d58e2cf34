#pragma once

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <optional>
#include <vector>

#include "continuum/io/block_target.h"

namespace continuum::capture::testing {

// An in-memory BlockTarget that counts what reaches it, with an optional
// injected write failure. Thread-safe: data under mu_, counters atomic.
class MemoryBlockTarget : public io::BlockTarget {
 public:
  explicit MemoryBlockTarget(uint64_t size, bool read_only = false)
      : data_(size), read_only_(read_only) {}

  uint64_t Size() const override { return data_.size(); }
  uint32_t BlockSize() const override { return 4096; }
  bool ReadOnly() const override { return read_only_; }

  Status Read(uint64_t offset, std::span<uint8_t> out) override {
    if (offset + out.size() > data_.size()) return OutOfRange("read past end of memory target");
    std::lock_guard lock(mu_);
    std::memcpy(out.data(), data_.data() + offset, out.size());
    reads++;
    return Status::Ok();
  }
  Status Write(uint64_t offset, std::span<const uint8_t> in, bool fua) override {
    if (read_only_) return Status(StatusCode::kFailedPrecondition, "memory target is read-only", EROFS);
    if (offset + in.size() > data_.size()) return OutOfRange("write past end of memory target");
    {
      std::lock_guard lock(mu_);
      if (fail_writes_) return *fail_writes_;
      std::memcpy(data_.data() + offset, in.data(), in.size());
    }
    writes++;
    if (fua) fua_writes++;
    uint64_t seen = max_write.load();
    while (in.size() > seen && !max_write.compare_exchange_weak(seen, in.size())) {
    }
    return Status::Ok();
  }
  Status Flush() override {
    flushes++;
    return Status::Ok();
  }
  Status Trim(uint64_t offset, uint64_t length) override {
    Zero(offset, length);
    trims++;
    trimmed_bytes += length;
    return Status::Ok();
  }
  Status WriteZeroes(uint64_t offset, uint64_t length, bool fua) override {
    Zero(offset, length);
    write_zeroes++;
    return Status::Ok();
  }

  // Every later write fails with `status` (nullopt: writes succeed again).
  void FailWrites(std::optional<Status> status) {
    std::lock_guard lock(mu_);
    fail_writes_ = std::move(status);
  }
  std::vector<uint8_t> Snapshot(uint64_t offset, uint64_t length) {
    std::lock_guard lock(mu_);
    return {data_.begin() + offset, data_.begin() + offset + length};
  }
  void Fill(uint64_t offset, uint64_t length, uint8_t byte) {
    std::lock_guard lock(mu_);
    std::memset(data_.data() + offset, byte, length);
  }
  // Offset of the first `align`-aligned occurrence of `needle`, or -1.
  int64_t Find(std::span<const uint8_t> needle, uint64_t align = 4096) {
    std::lock_guard lock(mu_);
    for (uint64_t off = 0; off + needle.size() <= data_.size(); off += align) {
      if (std::memcmp(data_.data() + off, needle.data(), needle.size()) == 0) return static_cast<int64_t>(off);
    }
    return -1;
  }

  std::atomic<uint64_t> reads{0}, writes{0}, fua_writes{0}, flushes{0}, trims{0}, trimmed_bytes{0},
      write_zeroes{0}, max_write{0};

 private:
  void Zero(uint64_t offset, uint64_t length) {
    std::lock_guard lock(mu_);
    uint64_t end = std::min<uint64_t>(offset + length, data_.size());
    if (offset < end) std::memset(data_.data() + offset, 0, end - offset);
  }

  std::mutex mu_;
  std::vector<uint8_t> data_;  // guarded by mu_ (contents; the size is fixed)
  std::optional<Status> fail_writes_;  // guarded by mu_
  const bool read_only_;
};

}  // namespace continuum::capture::testing
