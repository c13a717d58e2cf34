#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace continuum::repo {

// How the master key is unlocked: a password (Argon2id) or a key file.
struct Credentials {
  std::string password;  // used when key_file is empty; must not be empty then
  std::string key_file;  // path of a file holding >= 32 random bytes (at most 1 MiB)
};

// Argon2id cost (libsodium crypto_pwhash). Defaults cost ~0.1 s (measured) and 64 MiB per
// open; tests pass ops 1 / mem 8 KiB. Stored in the key file, so opening uses
// whatever the key was created with.
struct KdfParams {
  uint64_t ops_limit = 3;
  uint64_t mem_limit = 64ull << 20;
};

enum class LockMode {
  kNone,       // read-only inspection that tolerates concurrent writers
  kShared,     // backup, restore, check: many at once
  kExclusive,  // rebuild index, forget, prune: alone
};

struct InitOptions {
  bool append_only = false;
  KdfParams kdf;
  // Chunker parameters stored (encrypted) in the config; every writer uses them.
  uint32_t cdc_min = 512u << 10;
  uint32_t cdc_avg = 1u << 20;
  uint32_t cdc_max = 8u << 20;
  uint32_t fixed_chunk = 1u << 20;
};

struct OpenOptions {
  LockMode lock = LockMode::kShared;
  uint64_t pack_target_bytes = 16ull << 20;  // a pack is sealed once it passes this; 64 KiB-512 MiB
  // zstd level; 0 stores uncompressed. 2 (with the codec's minimum match of 5) costs ~25% less
  // CPU than 3 for ~2% more bytes on system files: see docs/user-guide/backup.md.
  int compression_level = 2;
  int64_t stale_lock_ns = 30ll * 60 * 1000000000;
  int64_t lock_refresh_ns = 5ll * 60 * 1000000000;
  // Wall clock in ns since the epoch, for lock times (tests inject one). Empty: real clock.
  std::function<int64_t()> clock;
};

}  // namespace continuum::repo
