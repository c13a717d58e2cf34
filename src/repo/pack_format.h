#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "continuum/common/result.h"
#include "continuum/repo/blob_id.h"
#include "repo/bytes.h"
#include "repo/crypto.h"

namespace continuum::repo {

inline constexpr size_t kPackEntryBytes = 52;
inline constexpr size_t kPackTrailerBytes = 20;
inline constexpr uint32_t kMaxBlobRawBytes = 64u << 20;
inline constexpr uint32_t kMaxBlobsPerPack = 1000000;

// Where one blob lives inside a pack; the same record appears in pack headers and
// index files (docs/format/repository.md, "Packs").
struct PackEntry {
  BlobId id;
  BlobType type = BlobType::kData;
  uint8_t compression = 0;  // 0 none, 1 zstd
  uint32_t stored_len = 0;  // sealed bytes in the pack, nonce and tag included
  uint32_t raw_len = 0;     // plaintext bytes
  uint64_t offset = 0;      // from the start of the pack
};

// Codec of the pack header and trailer. Stateless; thread-safe.
class PackFormat {
 public:
  static void EncodeEntry(ByteWriter& w, const PackEntry& e);
  // Reads one entry and checks its fields (type, compression, lengths); false on
  // malformed input. Offsets are checked by the caller, which knows the layout.
  static bool DecodeEntry(ByteReader& r, PackEntry* e);

  // The bytes that follow the blobs: sealed header, then trailer.
  static Result<std::vector<uint8_t>> EncodeTail(Crypto& crypto, const std::vector<PackEntry>& entries);
  // Returns the sealed header length from the last 20 bytes of a pack.
  static Result<uint32_t> DecodeTrailer(std::span<const uint8_t> trailer, const std::string& what);
  // Decrypts and parses the header; checks that entries tile [0, data_end).
  static Result<std::vector<PackEntry>> DecodeHeader(Crypto& crypto, std::span<const uint8_t> sealed_header,
                                                     uint64_t data_end, const std::string& what);
  // Associated data of the sealed header ("CPKH" ‖ version).
  static std::span<const uint8_t> HeaderAad();
  // Associated data of a blob: type ‖ id.
  static std::array<uint8_t, 33> BlobAad(BlobType type, const BlobId& id);
};

}  // namespace continuum::repo
