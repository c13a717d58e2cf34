#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "continuum/repo/blob_id.h"
#include "continuum/repo/manifest.h"

namespace continuum::repo {

// A pack that is missing, truncated or damaged, and the blobs it loses.
struct PackProblem {
  std::string pack;     // file name (full path for local repositories)
  std::string problem;  // "missing", "size 100, index says 200", "content hash mismatch" ...
  std::vector<BlobId> lost_blobs;
};

// A point that cannot be restored completely.
struct ManifestProblem {
  ManifestId manifest;
  std::string problem;        // summary for operators
  uint64_t missing_blobs = 0; // referenced but in no index
  uint64_t damaged_blobs = 0; // indexed but unreadable
};

struct CheckReport {
  uint64_t packs_checked = 0;
  uint64_t blobs_checked = 0;  // blobs decrypted and verified (read_data)
  uint64_t manifests_checked = 0;
  std::vector<std::string> index_problems;  // undecodable index files
  std::vector<PackProblem> pack_problems;
  std::vector<std::string> unindexed_packs;  // harmless: left by a crash; repair adopts them
  std::vector<ManifestProblem> manifest_problems;
  std::vector<std::string> lock_problems;   // undecodable lock files

  // True when every point restores (unindexed packs are only wasted space).
  bool ok() const { return index_problems.empty() && pack_problems.empty() && manifest_problems.empty(); }
};

struct RebuildReport {
  uint64_t packs_indexed = 0;
  uint64_t blobs_indexed = 0;
  uint64_t index_files_written = 0;
  uint64_t index_files_removed = 0;
  // Packs whose header does not decode (left in place, not indexed), and with
  // read_data packs whose damaged blobs were left out (lost_blobs).
  std::vector<PackProblem> bad_packs;
};

}  // namespace continuum::repo
