#include "image_map.h"

#include <cstring>
#include <string>

namespace continuum::backup {
namespace {

template <typename T>
void Append(std::vector<uint8_t>* out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out->push_back(static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i)));
}

template <typename T>
T Load(const uint8_t* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return static_cast<T>(v);
}

void Header(std::vector<uint8_t>* out, const char* magic) {
  out->insert(out->end(), magic, magic + 4);
  Append<uint16_t>(out, 1);
  Append<uint16_t>(out, 0);
}

bool CheckHeader(const std::vector<uint8_t>& p, const char* magic) {
  return p.size() >= 8 && std::memcmp(p.data(), magic, 4) == 0 && Load<uint16_t>(p.data() + 4) == 1;
}

}  // namespace

std::vector<uint8_t> EncodeImageRoot(const ImageRoot& root) {
  std::vector<uint8_t> out;
  Header(&out, "CIMR");
  Append<uint64_t>(&out, root.size);
  Append<uint32_t>(&out, root.chunk_size);
  Append<uint32_t>(&out, root.chunks_per_map);
  return out;
}

std::vector<uint8_t> EncodeImageMap(const ImageMap& map) {
  std::vector<uint8_t> out;
  Header(&out, "CIMP");
  Append<uint64_t>(&out, map.first_chunk);
  Append<uint32_t>(&out, static_cast<uint32_t>(map.slots.size()));
  for (uint32_t s : map.slots) Append<uint32_t>(&out, s);
  return out;
}

Result<ImageRoot> DecodeImageRoot(const std::vector<uint8_t>& p, size_t map_count, const std::string& what) {
  if (!CheckHeader(p, "CIMR") || p.size() != 24) return DataLoss(what + ": bad image root");
  ImageRoot r{.size = Load<uint64_t>(p.data() + 8),
              .chunk_size = Load<uint32_t>(p.data() + 16),
              .chunks_per_map = Load<uint32_t>(p.data() + 20)};
  if (r.chunk_size < 4096 || r.chunk_size > (64u << 20) || r.chunks_per_map == 0 ||
      r.chunks_per_map > (1u << 20)) {
    return DataLoss(what + ": bad image root parameters");
  }
  uint64_t chunks = r.size / r.chunk_size + (r.size % r.chunk_size ? 1 : 0);
  uint64_t maps = chunks / r.chunks_per_map + (chunks % r.chunks_per_map ? 1 : 0);
  if (maps != map_count) {
    return DataLoss(what + ": image of " + std::to_string(r.size) + " bytes needs " + std::to_string(maps) +
                    " map trees, root has " + std::to_string(map_count));
  }
  return r;
}

Result<ImageMap> DecodeImageMap(const std::vector<uint8_t>& p, size_t ref_count, const std::string& what) {
  if (!CheckHeader(p, "CIMP") || p.size() < 20) return DataLoss(what + ": bad image map");
  ImageMap m;
  m.first_chunk = Load<uint64_t>(p.data() + 8);
  uint32_t count = Load<uint32_t>(p.data() + 16);
  if (p.size() != 20 + uint64_t{count} * 4) return DataLoss(what + ": image map length mismatch");
  m.slots.resize(count);
  for (uint32_t i = 0; i < count; ++i) {
    m.slots[i] = Load<uint32_t>(p.data() + 20 + uint64_t{i} * 4);
    if (m.slots[i] != kHoleSlot && m.slots[i] >= ref_count) return DataLoss(what + ": image map slot out of range");
  }
  return m;
}

}  // namespace continuum::backup
