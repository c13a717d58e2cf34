#pragma once

#include <cstdint>
#include <span>

#include "continuum/common/status.h"

namespace continuum::io {

// A byte-addressed block device as seen by a frontend (FUSE file, NBD export).
// Offsets and lengths are in bytes; implementations accept any alignment.
// Contract: when Flush() (or a write with fua=true) returns ok, every write
// acknowledged before it is durable. Thread-safety: all calls may run
// concurrently from several frontend threads.
class BlockTarget {
 public:
  virtual ~BlockTarget() = default;

  virtual uint64_t Size() const = 0;
  // Preferred I/O granularity (4096 for volumes).
  virtual uint32_t BlockSize() const = 0;
  virtual bool ReadOnly() const = 0;

  // REQUIRES: offset + out.size() <= Size()
  virtual Status Read(uint64_t offset, std::span<uint8_t> out) = 0;
  virtual Status Write(uint64_t offset, std::span<const uint8_t> data, bool fua) = 0;
  virtual Status Flush() = 0;
  // Discard: afterwards the range reads as zeros.
  virtual Status Trim(uint64_t offset, uint64_t length) = 0;
  virtual Status WriteZeroes(uint64_t offset, uint64_t length, bool fua) = 0;
};

}  // namespace continuum::io
