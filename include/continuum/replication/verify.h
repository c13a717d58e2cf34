#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "continuum/common/result.h"
#include "continuum/io/block_target.h"
#include "continuum/replication/target_sender.h"
#include "continuum/volume/change_tracker.h"

namespace continuum::replication {

// Online verify (docs/adr/0004-replication.md, "Online verify"): both sides
// checksum the image *as of the same seq* — a CDP view on each side — so the
// volume stays in use and the stream keeps flowing while they compare.
inline constexpr uint64_t kVerifyRangeBytes = 1ull << 20;

// XXH3-64 of each `range_bytes` range of `target` (the last one may be short).
Result<std::vector<uint64_t>> RangeChecksums(io::BlockTarget& target, uint64_t range_bytes);

// The ranges whose checksums differ, adjacent ones merged, clipped to `size`.
// REQUIRES: a.size() == b.size()
std::vector<volume::ChangedExtent> DiffRanges(const std::vector<uint64_t>& a, const std::vector<uint64_t>& b,
                                              uint64_t range_bytes, uint64_t size);

struct VerifyRequest {
  std::string volume;
  uint64_t size = 0;
  uint32_t block_size = 4096;
  uint64_t seq = 0;  // the replica must hold it durably and outside a resync window
  uint64_t range_bytes = kVerifyRangeBytes;
};

// Dials the target with `opts` (same TLS identity as the stream), asks for the
// replica's checksums at `req.seq` (frame VERIFY) and returns them (VERIFY_SUMS).
Result<std::vector<uint64_t>> FetchReplicaChecksums(const TargetOptions& opts, const VerifyRequest& req);

}  // namespace continuum::replication
