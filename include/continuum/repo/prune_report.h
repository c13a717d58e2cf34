#pragma once

#include <cstdint>
#include <string>

namespace continuum::repo {

struct PruneOptions {
  // A pack that holds both used and unused blobs is rewritten only when at least
  // this share of its stored bytes is unused (0: rewrite every partly used pack,
  // 1: never rewrite, only delete packs that are wholly unused). Repacking costs
  // a read and a write of the used part, so small waste is left in place.
  double repack_unused_fraction = 0.2;
  // Plan only: count what would go, change nothing.
  bool dry_run = false;
};

// What a prune did (or, with dry_run, would do).
struct PruneReport {
  uint64_t points = 0;             // manifests whose blobs were kept
  uint64_t blobs_used = 0;
  uint64_t blobs_removed = 0;      // unreferenced blobs no longer stored
  uint64_t packs_deleted = 0;      // wholly unused, plus the rewritten ones
  uint64_t packs_repacked = 0;     // partly used packs whose used blobs were copied
  uint64_t packs_written = 0;      // new packs holding the copied blobs
  uint64_t unindexed_packs_deleted = 0;  // left by crashed writers
  uint64_t bytes_deleted = 0;      // sizes of the deleted packs
  uint64_t bytes_written = 0;      // sizes of the new packs
  uint64_t unused_bytes_kept = 0;  // unused blobs left in packs below the repack threshold
  uint64_t pins_removed = 0;       // pins of points that no longer exist
  uint64_t bytes_freed() const { return bytes_deleted > bytes_written ? bytes_deleted - bytes_written : 0; }
};

}  // namespace continuum::repo
