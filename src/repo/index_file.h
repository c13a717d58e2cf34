#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "continuum/common/result.h"
#include "repo/crypto.h"
#include "repo/pack_format.h"

namespace continuum::repo {

struct IndexPack {
  FileId pack;
  uint64_t pack_size = 0;
  std::vector<PackEntry> entries;
};

// Contents of one index/<id> file (docs/format/repository.md, "Index files").
struct IndexContents {
  int64_t created_ns = 0;
  std::vector<FileId> supersedes;  // index files this one replaces
  std::vector<IndexPack> packs;
};

// Codec of index files. Stateless; the Crypto passed in is not thread-safe.
class IndexFile {
 public:
  static Result<std::vector<uint8_t>> Encode(Crypto& crypto, const IndexContents& contents);
  // Checks every count against the bytes present before allocating, and that
  // each entry lies inside its pack. Errors are kDataLoss naming `what`.
  static Result<IndexContents> Decode(Crypto& crypto, std::span<const uint8_t> file, const std::string& what);
};

}  // namespace continuum::repo
