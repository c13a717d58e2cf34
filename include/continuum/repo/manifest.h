#pragma once

#include <cstdint>
#include <vector>

#include "continuum/repo/blob_id.h"

namespace continuum::repo {

// A manifest's id is the SHA-256 of its file.
using ManifestId = FileId;

// One backup point. `roots` plus the refs of every tree reachable from them are
// all the blobs the point needs (the repository walks them in check and prune);
// `payload` is the backup layer's description (JSON), opaque here, <= 64 MiB.
struct Manifest {
  int64_t time_ns = 0;
  std::vector<BlobId> roots;
  std::vector<uint8_t> payload;
};

// A tree blob: references to other blobs plus the backup layer's payload (a
// directory listing, an offset -> chunk map). Keep trees to a few MiB: split a
// large map into several trees under one root so that unchanged parts dedup.
struct Tree {
  std::vector<BlobId> refs;
  std::vector<uint8_t> payload;
};

}  // namespace continuum::repo
