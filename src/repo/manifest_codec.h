#pragma once

#include <span>
#include <string>
#include <vector>

#include "continuum/common/result.h"
#include "continuum/repo/manifest.h"
#include "repo/crypto.h"

namespace continuum::repo {

inline constexpr uint64_t kMaxManifestPayload = 64ull << 20;

// Codecs of manifest files and tree blob plaintext (docs/format/repository.md).
// Stateless; the Crypto passed in is not thread-safe.
class ManifestCodec {
 public:
  static Result<std::vector<uint8_t>> Encode(Crypto& crypto, const Manifest& m);
  static Result<Manifest> Decode(Crypto& crypto, std::span<const uint8_t> file, const std::string& what);

  static std::vector<uint8_t> EncodeTree(const Tree& t);
  static Result<Tree> DecodeTree(std::span<const uint8_t> plain, const std::string& what);
};

}  // namespace continuum::repo
