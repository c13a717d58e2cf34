#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "continuum/cdp/cdp_store.h"
#include "continuum/common/result.h"
#include "continuum/common/task_pool.h"
#include "continuum/io/aligned_buffer.h"
#include "continuum/io/block_target.h"
#include "continuum/io/file.h"
#include "continuum/journal/segment_log.h"
#include "continuum/volume/change_tracker.h"

namespace continuum::volume {

class VolumeView;

// A replication target's position in the volume's write stream. The write
// log keeps every record after the lowest `acked` of all live cursors.
struct StreamCursor {
  std::atomic<uint64_t> acked{0};
};

// Called after a write or flush is admitted with the seq it must wait for;
// used by sync replication to hold the caller until targets have it.
using AckWaiter = std::function<Status(uint64_t seq)>;

struct VolumeConfig {
  std::string name;
  std::string backing;  // block device or regular file (the mirror)
  uint64_t size = 0;
  uint32_t block_size = 4096;
  bool cdp = true;  // false = capture only (write log, no undo journal)
  uint64_t journal_bytes = 1ull << 30;
  int64_t retention_ns = 0;
  cdp::FullPolicy full_policy = cdp::FullPolicy::kTrim;
  // Replication write cache: new data kept in memory for targets that have
  // not acknowledged it yet (the ring), then in the write log (the file
  // cache); past both, targets resync the ranges from the mirror.
  uint64_t cache_bytes = 128ull << 20;
  uint64_t spill_bytes = 4ull << 30;
  int64_t created_ts_ns = 0;
  // A replica: written only by replication, with the source's seqs. Its
  // write-log records always carry the data, so recovery can re-apply a
  // record whose mirror write a crash or a full disk cut short.
  bool replica = false;
  // When set, Open registers a replication cursor at this acked seq before
  // any checkpoint can trim the write log, so records that targets resumed
  // after Open still need are kept; ReleaseOpenCursor() drops it.
  std::optional<uint64_t> open_cursor;
  // Journal-first CDP writes (docs/adr/0012-journal-first-cdp-writes.md): a
  // data write of at most this many bytes is acknowledged once its undo and
  // write-log records (with the data) are appended; the mirror gets it in the
  // background. 0 = every write reaches the mirror before its acknowledgement.
  // Only for a CDP volume that is not a replica. $CONTINUUM_CDP_WRITE_BEHIND=0
  // turns it off (benchmarks compare both).
  uint64_t write_behind_max_bytes = 128ull << 10;
  // Data held in memory for writes not yet in the mirror; past it, writes go
  // the direct way.
  uint64_t write_behind_bytes = 32ull << 20;
};

// Called for operator-relevant events ("journal_trimmed", "apply_failed" ...).
using EventSink = std::function<void(const std::string& kind, const std::string& message)>;

struct VolumeStats {
  uint64_t last_seq = 0;     // newest admitted write
  uint64_t applied_seq = 0;  // every write up to here is in the mirror (and undo journal)
  uint64_t pending_bytes = 0;  // replication ring: data not yet acknowledged by every target
  uint64_t spilled_records = 0;   // writes whose data went to the write log (ring full)
  uint64_t unbuffered_records = 0;  // writes past ring and file cache (targets resync them)
  uint64_t writes = 0;
  uint64_t bytes_written = 0;
  uint64_t flushes = 0;
  uint64_t write_behind_bytes = 0;  // acknowledged data not yet in the mirror (journal-first)
  uint64_t journal_bytes = 0;
  uint64_t wlog_bytes = 0;
  cdp::Point oldest;
  cdp::Point latest;
  bool writes_blocked = false;
  std::string error;  // non-empty once the apply step failed
};

// A protected volume: the write pipeline behind its block device
// (docs/adr/0002-write-pipeline.md, "direct mirror" design).
//
//   Write (caller's thread) -> range lock -> [append_mu_: seq + timestamp,
//         CDP before-image (read old, append undo), write-log record with the
//         data's checksum] -> undo durable (group commit) -> publish to views
//         -> O_DIRECT write to the mirror -> changed-block bitmaps.
//
// Journal-first (docs/adr/0012-journal-first-cdp-writes.md): on a CDP
// volume, a small data write stops after admission (its write-log record
// then carries the data) and sits in write_behind_; ApplierLoop does the
// undo sync, publish and mirror write later, in seq order. Reads overlay it.
//
// Otherwise data is written once, directly to the mirror; the write log records
// metadata (seq, time, range, checksum) in seq order. Replication targets get
// the data from a memory ring, or from the write log when the ring is full
// (spill), or — past both — as a resync of the range from the mirror.
// A Flush syncs the mirror and the write log. After a crash, Open() replays
// write-log records that carry data and re-marks the bitmaps for the rest.
// Thread-safety: BlockTarget calls, bookmarks and views may come from any
// thread. mu_ guards the admission state; overlapping writes are serialized
// by range locks; mirror_mu_ is held shared by writers around publish+write
// and exclusively by view reads, so a view never sees the mirror ahead of its map.
class Volume : public io::BlockTarget, public std::enable_shared_from_this<Volume> {
 public:
  static constexpr size_t kMaxLabelBytes = 200;  // bookmark labels: 1 to this many bytes
  static Result<std::shared_ptr<Volume>> Open(const VolumeConfig& cfg, const std::string& dir,
                                              EventSink events);
  ~Volume() override;

  uint64_t Size() const override { return cfg_.size; }
  uint32_t BlockSize() const override { return cfg_.block_size; }
  bool ReadOnly() const override { return false; }
  Status Read(uint64_t offset, std::span<uint8_t> out) override;
  Status Write(uint64_t offset, std::span<const uint8_t> data, bool fua) override;
  Status Flush() override;
  Status Trim(uint64_t offset, uint64_t length) override;
  Status WriteZeroes(uint64_t offset, uint64_t length, bool fua) override;

  // Inserts a bookmark into the write stream after every write admitted so
  // far, waits until it is applied and durable, and returns its point.
  Result<cdp::Point> AddBookmark(const std::string& label, uint32_t flags);
  // Waits until every admitted write is applied.
  Status Drain();
  // Applies and checkpoints everything, then stops the apply thread.
  Status Close();

  Result<cdp::Point> ResolvePoint(const std::string& text);
  // A read-only (or overlay-writable) block view of the volume at `point`.
  Result<std::shared_ptr<VolumeView>> OpenView(const cdp::Point& point, const std::string& overlay_path);
  // Rewinds the volume to `point` by writing the old contents back through
  // the pipeline, after a bookmark that marks the state before; returns it.
  Result<cdp::Bookmark> Rollback(const cdp::Point& point);

  // --- replication source ---
  std::shared_ptr<StreamCursor> AddCursor(uint64_t acked);
  // Drops the cursor of VolumeConfig::open_cursor (the targets have their own now).
  void ReleaseOpenCursor();
  // Whether any replication cursor is registered (the volume is replicated).
  bool HasCursors();
  void SetAckWaiter(AckWaiter waiter);
  const journal::SegmentLog* write_log() const { return wlog_.get(); }
  // Appends kResync records (at most 1 MiB each) covering `extents`; targets
  // receive the ranges' contents as of when they ship them. Returns the seq of the last.
  Result<uint64_t> AppendResync(const std::vector<ChangedExtent>& extents);
  // The current contents of a range and the newest seq they include.
  Result<uint64_t> ReadCurrent(uint64_t offset, std::span<uint8_t> out);

  // --- replica side ---
  // Admits a write received from the source with the source's seq and time.
  // Seqs at or below the newest admitted are ignored (a resend).
  Status AdmitReplicated(const journal::RecordHeader& h, std::vector<uint8_t> data);
  // AdmitReplicated for each record in order (their data is moved out). Runs
  // of data writes to disjoint ranges go through the pipeline together: their
  // before-image reads and mirror writes in parallel, one undo-journal sync.
  // Afterwards every record is admitted as if one by one, or the first error
  // is returned with the records before it admitted.
  Status AdmitReplicatedBatch(std::vector<journal::RecordWithData>& records);
  uint64_t LastSeq() const;
  int64_t LastTimestamp() const;
  // Seeding a replica at a seq (cascade, docs/adr/0004-replication.md): a
  // middle server sends its replica as of seq S; WriteSeed puts the blocks
  // straight into the mirror (no seq, no undo, no write-log record) and
  // EndSeed makes them durable and sets the volume's newest seq to S with no
  // undo history before it. Until EndSeed the volume holds no seq, so an
  // interrupted seed is simply started again.
  // REQUIRES: a replica that holds no seq yet (LastSeq() == 0) and no other
  // writer; offset and length block-aligned; `data` empty means zeros.
  Status WriteSeed(uint64_t offset, uint64_t length, std::span<const uint8_t> data);
  Status EndSeed(uint64_t seq, int64_t ts_ns);
  // Waits until a write after `seq` is admitted, or `timeout_ms` passes.
  void WaitAdmitted(uint64_t seq, int timeout_ms);

  VolumeStats Stats() const;
  const VolumeConfig& config() const { return cfg_; }
  cdp::CdpStore* cdp() { return cdp_.get(); }
  ChangeTracker* tracker() { return tracker_.get(); }
  void SetRetention(int64_t retention_ns, uint64_t journal_bytes, cdp::FullPolicy policy);

 private:
  friend class VolumeView;
  // One write-stream operation on its way through Commit().
  struct Op {
    journal::WriteKind kind;
    uint64_t offset = 0;
    uint64_t length = 0;
    std::shared_ptr<const io::AlignedBuffer> data;  // kWrite
    std::vector<uint8_t> label;                     // kBookmark
    uint32_t flags = 0;
    uint64_t given_seq = 0;  // replica: the source's seq and time
    int64_t given_ts = 0;
  };
  // A range of the volume being written; released by the destructor.
  class RangeLock {
   public:
    RangeLock() = default;
    RangeLock(Volume* v, uint64_t id) : v_(v), id_(id) {}
    RangeLock(RangeLock&& o) noexcept : v_(o.v_), id_(o.id_) { o.v_ = nullptr; }
    RangeLock& operator=(RangeLock&& o) noexcept {
      std::swap(v_, o.v_);
      std::swap(id_, o.id_);
      return *this;
    }
    ~RangeLock();

   private:
    Volume* v_ = nullptr;
    uint64_t id_ = 0;
  };
  struct LockedRange {
    uint64_t id, begin, end;
  };
  // A write-log record found past the checkpoint at Open.
  struct ReplayRecord {
    journal::RecordHeader header;
    journal::RecordLocation loc;
  };

  Volume(VolumeConfig cfg, std::string dir, EventSink events)
      : cfg_(std::move(cfg)), dir_(std::move(dir)), events_(std::move(events)) {}
  Status Recover();
  Status OpenMirror();
  // Re-applies records past the checkpoint; returns in *unapplied the ranges
  // of metadata-only writes whose data is not in the mirror (a write in
  // flight at a crash, or one whose mirror write failed).
  Status Replay(const std::vector<ReplayRecord>& records, uint64_t undo_latest,
                std::vector<ChangedExtent>* unapplied);
  // Whether the mirror holds the data of metadata-only record `r`.
  Result<bool> MirrorMatches(const ReplayRecord& r);
  RangeLock LockRange(uint64_t begin, uint64_t end);
  // Runs one operation through the pipeline; returns its seq.
  Result<uint64_t> Commit(Op op);
  // Commit's admission stage: seq, undo record (from `before` when it holds
  // the before-image, else read now), write log, ring. Returns 0 for a
  // replica's resend (nothing admitted). The caller holds the range lock and
  // must ApplyToMirror and Complete a returned seq.
  // `behind`: a journal-first write (ADR 0012), kept in write_behind_ for the applier.
  Result<uint64_t> Admit(const Op& op, const io::AlignedBuffer& before, bool behind = false);
  Status FlushSteps();
  static constexpr uint64_t kMaxZeroRecord = 256ull << 20;  // larger zero ranges are split
  // Validates a replicated record and turns it into an Op.
  Result<Op> ReplicatedOp(const journal::RecordHeader& h, std::vector<uint8_t> data) const;
  // Commit for disjoint replicated data writes, stage by stage (AdmitReplicatedBatch).
  Status CommitGroup(std::vector<Op>& group);
  Status CaptureBefore(const Op& op, uint64_t seq, int64_t ts);
  // `undo_synced`: the caller made the undo journal durable through this op.
  Status ApplyToMirror(const Op& op, bool undo_synced = false);
  // Journal-first writes (ADR 0012).
  void ApplierLoop();
  // Drops kept (applied) entries older than `below_seq` that overlap [b, e).
  void DropKeptLocked(uint64_t b, uint64_t e, uint64_t below_seq);
  // Adds [b, e) to a set of disjoint ranges (begin -> end), merging what it touches.
  static void AddRange(std::map<uint64_t, uint64_t>& set, uint64_t b, uint64_t e);
  // Whether `op` may be a write-behind write (small, room in memory).
  bool WriteBehindFits(const Op& op);
  // Whether a write-behind entry overlaps [b, e) (`unsynced`: or a write-behind
  // write applied to the mirror since its last sync).
  bool WriteBehindOverlapsLocked(uint64_t b, uint64_t e, bool unsynced) const;
  // Before a direct mirror change of [b, e): earlier write-behind writes to it
  // are in the mirror, and durable there (recovery then skips their blocks).
  Status SettleWriteBehind(uint64_t b, uint64_t e);
  // The mirror overlaid with write-behind data: the volume's current contents.
  // `below_seq`: only write-behind writes older than it (a before-image).
  Status ReadLogical(uint64_t offset, std::span<uint8_t> out, uint64_t below_seq = UINT64_MAX);
  // Syncs the mirror; write-behind writes applied before it are durable there.
  Status SyncMirror();
  void Complete(uint64_t seq);
  Status Fail(const Status& st);
  Status WaitAck(uint64_t seq);
  Status WriteAligned(uint64_t offset, std::span<const uint8_t> data);
  Status ReadMirror(uint64_t offset, std::span<uint8_t> out) const;
  Status WriteMirror(uint64_t offset, std::span<const uint8_t> data);
  Status ZeroMirror(uint64_t offset, uint64_t length);
  bool HasCursorsLocked();
  void PurgeRingLocked();
  void MaintenanceLoop();
  // `trim` false keeps the write log (recovery, before replication cursors exist).
  Status Checkpoint(bool trim = true);
  Status TrimWriteLog(uint64_t applied);
  Status CheckWritable() const;
  Status WaitApplied(uint64_t seq);
  void Emit(const std::string& kind, const std::string& message);

 public:
  // --- replication source: the data of a metadata-only write-log record,
  // or nullptr when it left the ring (the target then resyncs the range).
  std::shared_ptr<const io::AlignedBuffer> RingData(uint64_t seq) const;

 private:
  VolumeConfig cfg_;
  std::string dir_;
  EventSink events_;
  std::unique_ptr<io::File> mirror_;
  bool mirror_is_blockdev_ = false;
  bool mirror_direct_ = false;  // opened with O_DIRECT (not on tmpfs and the like)
  Result<bool> PrepareWlogSpare() { return wlog_->PrepareSpare(); }
  Result<bool> PrepareUndoSpare() { return cdp_ ? cdp_->PrepareSpare() : Result<bool>(false); }
  bool wlog_shares_flush_ = false;  // io::SharesCacheFlush(backing, write log): ADR 0011
  std::unique_ptr<journal::SegmentLog> wlog_;
  std::unique_ptr<cdp::CdpStore> cdp_;
  std::unique_ptr<ChangeTracker> tracker_;

  mutable std::mutex mu_;
  std::condition_variable range_cv_;    // a range lock was released
  std::condition_variable applied_cv_;  // applied_seq_ advanced
  std::condition_variable admitted_cv_; // last_seq_ advanced
  std::condition_variable maint_cv_;    // stop / checkpoint wanted
  std::vector<LockedRange> ranges_;     // GUARDED_BY(mu_)
  uint64_t next_range_id_ = 1;          // GUARDED_BY(mu_)
  std::set<uint64_t> inflight_;         // GUARDED_BY(mu_): admitted, not yet in the mirror
  std::map<uint64_t, std::shared_ptr<const io::AlignedBuffer>> ring_;  // GUARDED_BY(mu_)
  uint64_t ring_bytes_ = 0;             // GUARDED_BY(mu_)
  uint64_t spilled_records_ = 0, unbuffered_records_ = 0;  // GUARDED_BY(mu_)
  uint64_t last_seq_ = 0;               // GUARDED_BY(mu_)
  int64_t last_ts_ns_ = 0;              // GUARDED_BY(mu_)
  uint64_t applied_seq_ = 0;            // GUARDED_BY(mu_)
  std::mutex checkpoint_mu_;            // serializes Checkpoint and EndSeed; taken before append_mu_
  uint64_t checkpoint_seq_ = 0;         // GUARDED_BY(checkpoint_mu_)
  int64_t last_checkpoint_ns_ = 0;      // maintenance thread
  bool trim_memory_ = false;            // maintenance thread
  uint64_t writes_at_last_checkpoint_ = 0;  // maintenance thread
  bool stopping_ = false;               // GUARDED_BY(mu_)
  bool closed_ = false;                 // GUARDED_BY(mu_)
  Status apply_error_;                  // GUARDED_BY(mu_): the volume is failed
  Status admit_error_;  // GUARDED_BY(mu_): last write-log failure, cleared by a good append
  uint64_t writes_ = 0, bytes_written_ = 0, flushes_ = 0;     // GUARDED_BY(mu_)
  std::vector<std::weak_ptr<StreamCursor>> cursors_;           // GUARDED_BY(mu_)
  std::shared_ptr<AckWaiter> ack_waiter_;                      // GUARDED_BY(mu_)
  std::shared_ptr<StreamCursor> open_cursor_;                  // GUARDED_BY(mu_)
  std::mutex rmw_mu_;     // serializes unaligned read-modify-write
  std::mutex append_mu_;  // serializes admissions (write-log and undo order == seq order); taken before mu_
  io::AlignedBuffer before_buf_;  // GUARDED_BY(append_mu_): before-images being captured
  std::unique_ptr<TaskPool> apply_pool_;  // AdmitReplicatedBatch's I/O threads (its one caller: the receiver)
  mutable std::shared_mutex mirror_mu_;
  std::thread maint_thread_;
  // Flush syncs the write log on this thread while it syncs the mirror itself.
  void WlogSyncLoop();
  std::mutex wsync_mu_;
  std::condition_variable wsync_cv_;
  uint64_t wsync_requested_ = 0;  // GUARDED_BY(wsync_mu_)
  uint64_t wsync_done_ = 0;       // GUARDED_BY(wsync_mu_)
  Status wsync_status_;           // GUARDED_BY(wsync_mu_): result of the sync that reached wsync_done_
  bool wsync_stop_ = false;       // GUARDED_BY(wsync_mu_)
  std::thread wsync_thread_;
  // Journal-first writes (ADR 0012).
  struct WriteBehind {
    uint64_t offset = 0, length = 0;
    std::shared_ptr<const io::AlignedBuffer> data;
    // In the mirror already: kept (up to kRecentBytes) because the blocks are
    // often written again soon (a WAL page), and then their before-image
    // comes from here instead of a mirror read.
    bool applied = false;
    int64_t ts_ns = 0;  // the write's time (its undo record is appended later)
  };
  // The undo journal has the before-images of write-behind writes through
  // here (appended in seq order: by the applier, or by an admission that
  // must come after them). GUARDED_BY(append_mu_); read without it as a hint.
  std::atomic<uint64_t> captured_through_{0};
  // REQUIRES append_mu_. Appends the undo records of write-behind writes up
  // to `upto`, taking before-images from `pre` (read ahead by the applier)
  // or reading them now.
  Status CaptureWriteBehindLocked(uint64_t upto, std::map<uint64_t, io::AlignedBuffer>* pre);
  static constexpr uint64_t kRecentBytes = 4ull << 20;
  uint64_t recent_bytes_ = 0;         // GUARDED_BY(mu_): applied entries kept in write_behind_
  uint64_t write_behind_max_ = 0;     // 0 = off (set in Recover)
  std::map<uint64_t, WriteBehind> write_behind_;  // GUARDED_BY(mu_): seq -> acknowledged, not (or just) in the mirror
  // GUARDED_BY(mu_): write_behind_ by offset (offset -> seq), so the entries
  // over a range are found without a walk of the whole map; entries are at
  // most wb_max_len_ long.
  std::multimap<uint64_t, uint64_t> wb_by_offset_;
  uint64_t wb_max_len_ = 0;
  // REQUIRES mu_. Adds an entry / removes one (returns the next by seq).
  void WbInsertLocked(uint64_t seq, WriteBehind w);
  std::map<uint64_t, WriteBehind>::iterator WbEraseLocked(std::map<uint64_t, WriteBehind>::iterator it);
  // REQUIRES mu_. Seqs below `below_seq` of the entries that overlap [b, e), in seq order.
  std::vector<uint64_t> WbOverlapsLocked(uint64_t b, uint64_t e, uint64_t below_seq) const;
  uint64_t write_behind_bytes_ = 0;   // GUARDED_BY(mu_): of entries not yet applied
  uint64_t write_behind_taken_ = 0;   // GUARDED_BY(mu_): the applier took every seq up to here
  // GUARDED_BY(mu_): seq -> range of write-behind writes in the mirror but not yet synced there.
  std::map<uint64_t, std::pair<uint64_t, uint64_t>> unsynced_;
  uint64_t flush_epoch_ = 0;          // GUARDED_BY(mu_): counts Flushes (the applier waits for one)
  bool applier_stop_ = false;         // GUARDED_BY(mu_)
  std::condition_variable write_behind_cv_;  // new write-behind work, a flush, stop
  std::atomic<bool> mirror_dirty_{false};    // a direct mirror write since the mirror's last sync
  std::mutex mirror_sync_mu_;                // one mirror sync at a time
  std::thread applier_thread_;
};

}  // namespace continuum::volume
