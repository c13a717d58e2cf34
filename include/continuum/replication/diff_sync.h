#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "continuum/common/result.h"
#include "continuum/io/block_target.h"
#include "continuum/net/connection.h"
#include "continuum/replication/target_sender.h"
#include "continuum/volume/change_tracker.h"
#include "continuum/volume/volume.h"

namespace continuum::replication {

// Differential sync (docs/format/replication.md, "Differential sync"): when a
// target already holds an image of unknown state, compare checksums range by
// range and resync only the ranges that differ.
//
// Two levels per chunk of the volume, so that a change spread over many small
// blocks costs little more than the blocks themselves on the wire: XXH3-64 per
// kDiffCoarseBytes for the whole chunk, then per block for the coarse ranges
// that differ.
inline constexpr uint64_t kDiffChunkBytes = 64ull << 20;
inline constexpr uint64_t kDiffCoarseBytes = 64ull << 10;

// One checksum request: XXH3-64 of every `piece` bytes of each range (the
// last piece of a range may be short).
struct DiffRequest {
  uint64_t piece = 0;
  std::vector<volume::ChangedExtent> ranges;
};
nlohmann::json DiffRequestJson(const DiffRequest& req);
// Validates against the volume size; at most kMaxFramePayload / 8 checksums.
Result<DiffRequest> ParseDiffRequest(const nlohmann::json& j, uint64_t volume_size);
uint64_t DiffPieceCount(const DiffRequest& req);

// Appends the checksum of each `piece` bytes of `data` to `out`.
void AppendPieceSums(std::span<const uint8_t> data, uint64_t piece, std::vector<uint64_t>* out);
// The target's side of a request: reads each range of `target` and checksums it.
Result<std::vector<uint64_t>> ServeDiffRequest(io::BlockTarget& target, const DiffRequest& req);
// The pieces of `req` whose checksums differ, adjacent ones merged.
// REQUIRES: local.size() == remote.size() == DiffPieceCount(req)
std::vector<volume::ChangedExtent> DifferingPieces(const DiffRequest& req, const std::vector<uint64_t>& local,
                                                   const std::vector<uint64_t>& remote);

struct DiffSyncProgress {
  bool finished = false;      // every range compared; differing ones appended as resync records
  Status error;               // set when it stopped early on a network error (retry on reconnect)
  uint64_t last_seq = 0;      // when finished: the newest seq it read or appended
  uint64_t compared_bytes = 0;
  uint64_t differing_bytes = 0;  // handed to resync records
  uint64_t sums_bytes = 0;       // checksum bytes received from the target
  uint64_t request_bytes = 0;    // frame bytes sent to the target
  bool fallback = false;         // the target cannot compare: the rest is resent whole
};

// Compares the volume with the target's live replica on a connection of its
// own (frame DIFF) while the stream ships what it finds: for each chunk it
// appends RESYNC records for the differing blocks to the volume's write log.
// The stream must already include every write after the seq the comparison
// starts at (the caller opens the resync window first), so a block that is
// equal when compared ends equal once the stream has shipped past `last_seq`.
// Pipelined: the target checksums the next chunk while this side reads the
// current one; two round trips per chunk.
// Thread-safety: Progress may be called from any thread; the destructor stops
// the comparison (shuts its connection down) and joins.
class DiffSync {
 public:
  static std::unique_ptr<DiffSync> Start(std::shared_ptr<volume::Volume> volume, TargetOptions opts);
  ~DiffSync();
  DiffSyncProgress Progress() const;

 private:
  DiffSync(std::shared_ptr<volume::Volume> v, TargetOptions o) : volume_(std::move(v)), opts_(std::move(o)) {}
  void Run();
  Status Compare(uint64_t* next_offset);
  Result<std::vector<uint64_t>> ReadSums(net::Connection& conn, const DiffRequest& req);
  Status SendRequest(net::Connection& conn, const DiffRequest& req);
  Status AppendResync(const std::vector<volume::ChangedExtent>& extents);

  std::shared_ptr<volume::Volume> volume_;
  TargetOptions opts_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  DiffSyncProgress progress_;            // GUARDED_BY(mu_)
  net::Connection* conn_ = nullptr;      // GUARDED_BY(mu_): for the destructor to unblock
};

}  // namespace continuum::replication
