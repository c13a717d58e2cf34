#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace continuum {

// XXH3-64 of a byte range. Used for record and frame checksums (not security).
uint64_t Checksum64(std::span<const uint8_t> data, uint64_t seed = 0);
uint64_t Checksum64(const void* data, size_t size, uint64_t seed = 0);

}  // namespace continuum
