#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "continuum/common/result.h"
#include "repo/crypto.h"
#include "repo/pack_format.h"

namespace continuum::repo {

// Turns plaintext blobs into stored blobs (zstd, then AES-256-GCM) and back,
// verifying the keyed id on the way out.
// Thread-safety: none (reuses zstd and cipher contexts); one per thread.
class BlobCodec {
 public:
  // `level` 0 disables compression.
  BlobCodec(Crypto* crypto, int level);
  ~BlobCodec();

  // Appends the stored form of `data` (whose id is `id`) to *out and returns its
  // entry with offset = the position in *out where it starts.
  Result<PackEntry> EncodeAppend(BlobType type, const BlobId& id, std::span<const uint8_t> data,
                                 std::vector<uint8_t>* out);
  // Decrypts, decompresses and checks the id. Errors are kDataLoss naming `where`.
  Result<std::vector<uint8_t>> Decode(const PackEntry& entry, std::span<const uint8_t> stored,
                                      const std::string& where);
  // Decode into buffers this codec keeps and reuses: no allocation, page fault
  // or zero fill per blob. The span is valid until the next call.
  Result<std::span<const uint8_t>> DecodeView(const PackEntry& entry, std::span<const uint8_t> stored,
                                              const std::string& where);

 private:
  Crypto* crypto_;
  int level_;
  struct Contexts;
  std::unique_ptr<Contexts> ctx_;
  std::vector<uint8_t> scratch_;  // compression output, reused
  std::vector<uint8_t> sealed_plain_;  // DecodeView: decrypted (still compressed) blob
  std::vector<uint8_t> raw_;           // DecodeView: decompressed blob
};

}  // namespace continuum::repo
