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

  // Append-only repositories: whether the filesystem enforces it. Every file of
  // a write-once kind (config, keys, packs, index files, manifests, pins) is
  // asked for its immutable flag. Informational: not part of ok().
  bool append_only = false;
  bool immutability_supported = false;     // false: the storage has no immutable flag
  uint64_t immutable_files = 0;
  std::vector<std::string> mutable_files;  // write-once files lacking the flag

  // True when every point restores (unindexed packs are only wasted space).
  bool ok() const { return index_problems.empty() && pack_problems.empty() && manifest_problems.empty(); }
};

struct RebuildReport {
  uint64_t packs_indexed = 0;
  uint64_t blobs_indexed = 0;
  uint64_t index_files_written = 0;
  uint64_t index_files_removed = 0;
  // Append-only repositories: write-once files that lacked the immutable flag
  // and got it (written by a client without the privilege, say).
  uint64_t files_made_immutable = 0;
  std::string immutability_problem;  // why the rest could not be (no privilege, no flag)
  // Packs whose header does not decode (left in place, not indexed), and with
  // read_data packs whose damaged blobs were left out (lost_blobs).
  std::vector<PackProblem> bad_packs;
};

}  // namespace continuum::repo
