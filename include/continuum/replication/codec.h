#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "continuum/common/result.h"

namespace continuum::replication {

// Compression of RECORDS frame payloads (docs/format/replication.md, "Compression").
// The codec travels in the frame's flags, so a receiver needs no negotiation.
enum class Codec { kNone, kZstd, kLz4 };
Result<Codec> ParseCodec(const std::string& s);
std::string CodecName(Codec c);

inline constexpr uint16_t kFrameFlagZstd = 1u << 0;
inline constexpr uint16_t kFrameFlagLz4 = 1u << 1;
inline constexpr uint16_t kFrameCodecMask = kFrameFlagZstd | kFrameFlagLz4;

struct Encoded {
  std::vector<uint8_t> bytes;  // empty: send the input as is (flags 0)
  uint16_t flags = 0;
};
// Compresses `in`; returns nothing to send instead when it would not shrink.
Result<Encoded> Encode(Codec codec, std::span<const uint8_t> in);
// Undoes Encode for the codec named by `flags`; refuses output over `max_out`.
Result<std::vector<uint8_t>> Decode(uint16_t flags, std::span<const uint8_t> in, size_t max_out);

// "10M", "512K/s", "1G" -> bytes per second (binary multiples); "0" or "" = unlimited.
Result<uint64_t> ParseRate(const std::string& s);

}  // namespace continuum::replication
