#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "continuum/common/result.h"
#include "continuum/net/connection.h"
#include "continuum/net/tls_options.h"
#include "continuum/replication/codec.h"
#include "continuum/replication/frame.h"
#include "continuum/replication/heartbeat.h"
#include "continuum/replication/sync_quorum.h"
#include "continuum/replication/token_bucket.h"
#include "continuum/volume/volume.h"

namespace continuum::replication {

class DiffSync;
struct DiffSyncProgress;

enum class Mode { kSync, kAsync, kAdaptive };
Result<Mode> ParseMode(const std::string& s);
std::string ModeName(Mode m);

// The resync window of a replica as its own source announced it (cascade).
struct UpstreamWindow {
  bool active = false;
  uint64_t first = 0;
  uint64_t consistent_from = 0;
  bool operator==(const UpstreamWindow&) const = default;
};

struct TargetOptions {
  std::string volume;       // source volume name
  std::string address;      // target HOST:PORT
  Mode mode = Mode::kAsync;
  net::TlsOptions tls;
  std::string source_name;  // this agent's name (the target names the replica after it)
  std::string state_path;   // JSON file holding the acked seq and resync state
  int64_t adaptive_latency_ns = 500'000'000;  // adaptive: degrade when an ack takes longer
  uint64_t window_bytes = 64ull << 20;        // unacknowledged bytes in flight
  // Async: the target may hold record frames this long and apply them as one
  // batch with one flush (fewer device flushes beside the application's).
  // Sync and adaptive targets acknowledge at once.
  int async_ack_delay_ms = 20;
  // Async (and adaptive while asynchronous): a batch that emptied the stream
  // is followed by a pause of this long before the next, so a trickle of
  // small writes is sent as one frame per interval. Adds at most this much
  // lag. 0 = send each write as soon as it is admitted.
  int async_coalesce_ms = 5;
  Codec compress = Codec::kNone;              // RECORDS payloads (kept plain when they do not shrink)
  uint64_t bandwidth = 0;                     // bytes/s on the wire for this target; 0 = unlimited
  HeartbeatOptions heartbeat;                 // idle interval and peer timeout (both ends)
  // Called after every acknowledgement and state change, from the sender's
  // threads (or Stop's caller) with no lock held; SyncQuorum::Changed.
  std::function<void()> on_change;
  // Cascade (docs/adr/0004-replication.md): the volume is a replica this
  // server forwards. Its write log carries the source's seqs and the data, so
  // the stream is forwarded as is; a target that is new (or that the write
  // log no longer reaches) is seeded from a view of the replica at its newest
  // point instead of resynced, since a replica cannot allocate seqs. Async only.
  bool cascade = false;
  // Cascade: the replica's resync window now (nullopt = unknown, keep the
  // last); forwarded to the target so its points are marked the same way.
  std::function<std::optional<UpstreamWindow>()> upstream_window;
};

struct TargetStatus {
  std::string address;
  std::string state;           // connecting, streaming, disconnected, stopped
  std::string mode;            // configured
  std::string effective_mode;  // sync or async right now (adaptive switches)
  uint64_t acked_seq = 0;
  uint64_t last_seq = 0;
  uint64_t lag_bytes = 0;
  double lag_seconds = 0;      // age of the oldest write the target has not acknowledged; 0 caught up
  double rate_bytes_per_s = 0;
  bool resyncing = false;
  std::string replica;
  std::string last_error;
  int64_t last_error_ns = 0;   // wall time of last_error; 0: none
  std::string compress;        // none, zstd, lz4
  uint64_t bandwidth = 0;      // configured limit in bytes/s, 0 = unlimited
  uint64_t bytes_sent = 0;     // record bytes shipped (before compression), this process
  uint64_t wire_bytes = 0;     // the same on the wire (after compression)
  int peer_timeout_ms = 0;     // a target silent this long is disconnected
  nlohmann::json diff_sync;    // null, or the last differential sync's progress (diff_sync.h)
  nlohmann::json ToJson() const;
};

// Ships one volume's write stream to one target, in seq order, over TLS
// (docs/adr/0004-replication.md). Resumes from the target's durable seq after
// any disconnect or restart; when the write log no longer holds what the
// target needs (or the target is new) it resyncs the whole volume.
// Thread-safety: all public methods are thread-safe.
class TargetSender : public SyncMember {
 public:
  static Result<std::unique_ptr<TargetSender>> Start(std::shared_ptr<volume::Volume> volume, TargetOptions opts,
                                                     EventFn events);
  ~TargetSender() override;
  void Stop();

  // Sync replication (SyncQuorum holds the writers): whether this target has
  // `seq` durable, and whether a writer should wait for it now (connected and
  // synchronous).
  SyncProbe Probe(uint64_t seq) const override;
  // Adaptive: an acknowledgement took longer than adaptive_latency_ns.
  void SlowAck(uint64_t seq) override;
  TargetStatus GetStatus() const;
  const TargetOptions& options() const { return opts_; }

 private:
  struct InFlight {
    uint64_t seq;
    int64_t ts_ns;
    uint64_t bytes;
  };
  TargetSender(std::shared_ptr<volume::Volume> v, TargetOptions o, EventFn e)
      : volume_(std::move(v)), opts_(std::move(o)), events_(std::move(e)) {}
  void Run();
  Status Session();
  Status StreamLoop(net::Connection& conn);
  void AckLoop(net::Connection* conn);
  void LoadState();
  void SaveState();
  void SetState(const std::string& state, const std::string& error = "");
  void Emit(const std::string& kind, const std::string& msg);
  void Notify() const {
    if (opts_.on_change) opts_.on_change();
  }
  // Differential sync hooks (target_sender_sync.cc), all on the sender thread.
  bool UseDiffSync(uint64_t durable, bool log_reaches_back) const;
  // Opens a resync window after the volume's newest seq, starts comparing and
  // returns that seq (the stream continues after it).
  Result<uint64_t> BeginDiffSync(net::Connection& conn, uint64_t durable);
  // Restarts the comparison of a window left open by an earlier session.
  void ResumeDiffSync();
  // Once per stream-loop turn: ends the session when the ack thread found the
  // connection dead (an idle stream would not notice otherwise) or the
  // comparison hit a network error; closes a differential sync's window once
  // the comparison is done and the stream has shipped past it.
  Status PollSession(net::Connection& conn, uint64_t shipped_through, uint64_t consistent_at);
  void StopDiffSync();
  // Cascade (target_sender_cascade.cc), on the sender thread.
  // Sends the replica as of seed_point_ (SEED_BEGIN, SEED_DATA..., SEED_DONE).
  Status SeedTarget(net::Connection& conn);
  // Compresses `batch` (when configured), waits for the bandwidth limit and
  // sends it as one frame of `frame_type`, counting the bytes; false when the
  // sender stopped while waiting (nothing sent).
  // Opens a resync window over seqs (before, last] covering the whole volume
  // (initial or differential sync): the target holds nothing after `before`
  // until the window's records are acknowledged; persists the cursor.
  void BeginWholeResync(uint64_t before, uint64_t last);
  Result<bool> SendBatch(net::Connection& conn, FrameType frame_type, std::span<const uint8_t> batch,
                         TokenBucket& bucket);
  // Passes the replica's resync window on to the target when it changed.
  Status ForwardWindow(net::Connection& conn);
  nlohmann::json DiffSyncJsonLocked() const;  // REQUIRES: mu_ held
  // RPO now: age of the oldest write not acknowledged by the target.
  double LagSeconds(uint64_t acked, uint64_t last, int64_t oldest_inflight_ts) const;

  std::shared_ptr<volume::Volume> volume_;
  TargetOptions opts_;
  EventFn events_;
  std::shared_ptr<volume::StreamCursor> cursor_;
  std::thread thread_;
  std::atomic<bool> stop_{false};

  mutable std::mutex mu_;
  std::condition_variable cv_;          // acks, state changes, stop
  std::string state_ = "connecting";    // GUARDED_BY(mu_)
  std::string last_error_;              // GUARDED_BY(mu_)
  int64_t last_error_ns_ = 0;           // GUARDED_BY(mu_)
  // What the target said when it ended the current session (an Error frame:
  // disk full, refused): the cause to show, not the broken pipe that follows.
  std::string target_error_;            // GUARDED_BY(mu_)
  std::string replica_;                 // GUARDED_BY(mu_)
  bool connected_ = false;              // GUARDED_BY(mu_)
  bool sync_now_ = false;               // GUARDED_BY(mu_): waiting writers hold for acks
  uint64_t acked_ = 0;                  // GUARDED_BY(mu_)
  std::deque<InFlight> inflight_;       // GUARDED_BY(mu_)
  uint64_t inflight_bytes_ = 0;         // GUARDED_BY(mu_)
  bool resync_active_ = false;          // GUARDED_BY(mu_)
  uint64_t resync_first_ = 0, resync_last_ = 0;  // GUARDED_BY(mu_)
  uint64_t resync_done_at_ = 0;  // GUARDED_BY(mu_): last RESYNC_DONE sent (repeated on reconnect)
  // GUARDED_BY(mu_): seqs below unproven_below_ (0 = none) are not yet held
  // by the target although acked_ covers them (a full or differential resync
  // started after them); cleared once it acknowledges unproven_until_.
  uint64_t unproven_below_ = 0, unproven_until_ = 0;
  double rate_ = 0;                     // GUARDED_BY(mu_)
  uint64_t bytes_sent_ = 0, wire_bytes_ = 0;  // GUARDED_BY(mu_)
  int64_t last_save_ns_ = 0;
  // Sender thread only: what the target said in its HELLO_ACK, and whether
  // its durable seq is known to be in our seq space (we streamed to it before).
  bool target_fresh_ = false;
  bool target_can_diff_ = false;
  bool target_state_known_ = false;
  bool target_can_seed_ = false;
  // Cascade, sender thread only: the point being seeded this session (seq 0 =
  // none), the seq the target was seeded at, and the window last forwarded.
  cdp::Point seed_point_;
  uint64_t seed_floor_ = 0;
  bool fwd_valid_ = false;
  UpstreamWindow fwd_;
  std::atomic<bool> seeding_{false};
  std::shared_ptr<DiffSync> diff_;       // GUARDED_BY(mu_); created and reset by the sender thread
  nlohmann::json diff_last_;             // GUARDED_BY(mu_): progress of the last finished one
  mutable std::mutex lag_mu_;            // guards the cache below (ts of the first unshipped record)
  mutable uint64_t lag_cache_seq_ = 0;   // GUARDED_BY(lag_mu_)
  mutable int64_t lag_cache_ts_ = 0;     // GUARDED_BY(lag_mu_)
  net::Connection* conn_ = nullptr;     // GUARDED_BY(mu_): for Stop to unblock
};

}  // namespace continuum::replication
