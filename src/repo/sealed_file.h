#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "continuum/common/result.h"
#include "repo/crypto.h"

namespace continuum::repo {

// The envelope of index and manifest files:
//   magic[4] ‖ version u16 ‖ reserved u16 ‖ sealed(aad = those 8 bytes, body)
// Thread-safety: stateless; the Crypto passed in is not thread-safe.
class SealedFile {
 public:
  static Result<std::vector<uint8_t>> Encode(Crypto& crypto, uint32_t magic, uint16_t version,
                                             std::span<const uint8_t> body);
  // kDataLoss naming `what` on a wrong magic or a failing tag; kFailedPrecondition
  // on a newer version.
  static Result<std::vector<uint8_t>> Decode(Crypto& crypto, uint32_t magic, uint16_t version,
                                             std::span<const uint8_t> file, const std::string& what);
};

}  // namespace continuum::repo
