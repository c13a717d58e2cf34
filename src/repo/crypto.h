#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "continuum/common/result.h"
#include "continuum/repo/blob_id.h"

namespace continuum::repo {

inline constexpr size_t kNonceBytes = 12;
inline constexpr size_t kTagBytes = 16;
inline constexpr size_t kSealOverhead = kNonceBytes + kTagBytes;

// The repository master key: never written unwrapped (see key_file.h).
struct MasterKey {
  std::array<uint8_t, 32> data_key{};  // AES-256-GCM
  std::array<uint8_t, 32> id_key{};    // HMAC-SHA-256 of blob ids
};

// Fills `out` from the OS CSPRNG (OpenSSL RAND_bytes).
Status RandomBytes(std::span<uint8_t> out);
FileId Sha256(std::span<const uint8_t> data);
std::array<uint8_t, 32> HmacSha256(std::span<const uint8_t> key, std::span<const uint8_t> a,
                                   std::span<const uint8_t> b = {});
// Wipes secrets so they do not linger in freed memory.
void SecureZero(std::span<uint8_t> bytes);

// Keyed ids and AES-256-GCM sealing with the repository's master key.
// Thread-safety: none; the cipher and MAC contexts are reused between calls to
// save their key schedules. Use one Crypto per thread.
class Crypto {
 public:
  static Result<std::unique_ptr<Crypto>> Create(const MasterKey& key);
  ~Crypto();
  Crypto(const Crypto&) = delete;
  Crypto& operator=(const Crypto&) = delete;

  // HMAC-SHA-256(id_key, type ‖ data).
  BlobId Id(BlobType type, std::span<const uint8_t> data);

  // Appends nonce ‖ ciphertext ‖ tag to *out. Appending (rather than returning a
  // vector) lets the pack writer encrypt straight into the pack buffer.
  Status SealAppend(std::span<const uint8_t> aad, std::span<const uint8_t> plaintext,
                    std::vector<uint8_t>* out);
  Result<std::vector<uint8_t>> Seal(std::span<const uint8_t> aad, std::span<const uint8_t> plaintext);
  // Verifies the tag and decrypts. A failure is kDataLoss with `what` in the
  // message ("blob <id> in pack <name>").
  Result<std::vector<uint8_t>> Open(std::span<const uint8_t> aad, std::span<const uint8_t> sealed,
                                    const std::string& what);
  // Open into `out`, which holds exactly sealed.size() - kSealOverhead bytes
  // (callers that reuse one buffer per thread).
  Status OpenTo(std::span<const uint8_t> aad, std::span<const uint8_t> sealed, const std::string& what,
                std::span<uint8_t> out);

  const MasterKey& key() const { return key_; }

 private:
  Crypto() = default;
  MasterKey key_;
  struct Contexts;
  std::unique_ptr<Contexts> ctx_;
};

// AES-256-GCM with an arbitrary key (for wrapping the master key).
Result<std::vector<uint8_t>> SealWithKey(std::span<const uint8_t> key, std::span<const uint8_t> aad,
                                         std::span<const uint8_t> plaintext);
// Returns kDataLoss("authentication failed") when the tag does not verify.
Result<std::vector<uint8_t>> OpenWithKey(std::span<const uint8_t> key, std::span<const uint8_t> aad,
                                         std::span<const uint8_t> sealed);

}  // namespace continuum::repo
