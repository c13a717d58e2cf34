#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "continuum/common/result.h"
#include "continuum/repo/repository_options.h"
#include "repo/crypto.h"

namespace continuum::repo {

inline constexpr size_t kKeyFileBytes = 172;

// Codec of keys/<id> (docs/format/repository.md, "Key files"): the master key
// wrapped by a key derived from a password (Argon2id) or from a key file.
// Thread-safety: stateless functions.
class KeyFile {
 public:
  // Returns the bytes of a new key file wrapping `key` for `creds`.
  static Result<std::vector<uint8_t>> Wrap(const MasterKey& key, const Credentials& creds,
                                           const KdfParams& kdf);
  // Unwraps a key file. Errors: kDataLoss when the file is damaged (checksum),
  // kInvalidArgument("wrong password") when the credentials do not open it,
  // kFailedPrecondition for an unknown version. `name` is used in messages.
  static Result<MasterKey> Unwrap(std::span<const uint8_t> file, const Credentials& creds,
                                  const std::string& name);
};

}  // namespace continuum::repo
