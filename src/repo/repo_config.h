#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "continuum/common/result.h"
#include "repo/crypto.h"

namespace continuum::repo {

// The repository config (docs/format/repository.md, "Config"): a public header
// with the repository id and an encrypted body with the chunker parameters and flags.
struct RepoConfig {
  std::array<uint8_t, 16> repo_id{};
  bool append_only = false;
  int64_t created_ns = 0;
  uint32_t cdc_min = 0;
  uint32_t cdc_avg = 0;
  uint32_t cdc_max = 0;
  uint64_t gear_seed = 0;
  uint32_t fixed_chunk = 0;

  // Checks the ranges stated in the format; `what` names the source in messages.
  Status Validate(const std::string& what) const;
  Result<std::vector<uint8_t>> Encode(Crypto& crypto) const;
  // kDataLoss when the body does not decrypt (damage, or keys of another repository).
  static Result<RepoConfig> Decode(std::span<const uint8_t> file, Crypto& crypto, const std::string& what);
  // Reads only the public header: the repository id, without keys.
  static Result<std::array<uint8_t, 16>> PeekRepoId(std::span<const uint8_t> file, const std::string& what);
};

}  // namespace continuum::repo
