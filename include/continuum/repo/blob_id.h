#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>

#include "continuum/common/result.h"

namespace continuum::repo {

// What a blob holds. The value is part of the blob id (domain separation) and of
// the on-disk format (docs/format/repository.md): never renumber.
enum class BlobType : uint8_t {
  kData = 0,  // a chunk of file or image content
  kTree = 1,  // refs to other blobs + backup-layer payload; walked by check/prune
};

// 32-byte identifier: a blob id (keyed SHA-256 of its content) or a file name
// (SHA-256 of the file's bytes). A plain value type.
struct BlobId {
  std::array<uint8_t, 32> bytes{};

  std::string Hex() const;
  // Accepts exactly 64 lower- or upper-case hex digits.
  static Result<BlobId> FromHex(std::string_view hex);

  bool operator==(const BlobId&) const = default;
  auto operator<=>(const BlobId&) const = default;
};

struct BlobIdHash {
  size_t operator()(const BlobId& id) const {
    // Ids are uniformly distributed (HMAC/SHA-256 output): any 8 bytes hash well.
    size_t h;
    std::memcpy(&h, id.bytes.data(), sizeof(h));
    return h;
  }
};

// Manifest ids and pack/index names are SHA-256 of the file: same shape.
using FileId = BlobId;

bool IsHexName(std::string_view name);  // 64 lower-case hex digits

}  // namespace continuum::repo
