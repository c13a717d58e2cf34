#pragma once

#include <cstdint>
#include <vector>

#include "continuum/common/result.h"
#include "continuum/repo/manifest.h"

namespace continuum::backup {

// The tree payloads of an image point (little-endian):
//
//   root tree:  refs = the map trees in order
//     payload := "CIMR" ‖ version u16 = 1 ‖ reserved u16 ‖ size u64 ‖ chunk_size u32 ‖ chunks_per_map u32
//   map tree:   refs = the distinct data chunks it uses
//     payload := "CIMP" ‖ version u16 = 1 ‖ reserved u16 ‖ first_chunk u64 ‖ count u32 ‖ slot u32 * count
//     slot    := index into refs, or 0xFFFFFFFF for an all-zero chunk (a hole)
//
// Chunk i covers bytes [i * chunk_size, min((i + 1) * chunk_size, size)). Map
// trees are bounded (chunks_per_map slots each) so an unchanged region of the
// image yields the same map tree and dedups.
inline constexpr uint32_t kHoleSlot = 0xFFFFFFFFu;
inline constexpr uint32_t kChunksPerMap = 512;

struct ImageRoot {
  uint64_t size = 0;
  uint32_t chunk_size = 0;
  uint32_t chunks_per_map = 0;
};

struct ImageMap {
  uint64_t first_chunk = 0;
  std::vector<uint32_t> slots;
};

std::vector<uint8_t> EncodeImageRoot(const ImageRoot& root);
std::vector<uint8_t> EncodeImageMap(const ImageMap& map);
// Validate everything a crafted repository could get wrong; kDataLoss naming `what`.
Result<ImageRoot> DecodeImageRoot(const std::vector<uint8_t>& payload, size_t map_count, const std::string& what);
Result<ImageMap> DecodeImageMap(const std::vector<uint8_t>& payload, size_t ref_count, const std::string& what);

}  // namespace continuum::backup
