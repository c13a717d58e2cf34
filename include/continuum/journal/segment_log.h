#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "continuum/common/result.h"
#include "continuum/io/aligned_buffer.h"
#include "continuum/io/file.h"
#include "continuum/journal/record.h"

namespace continuum::journal {

// One segment file of a SegmentLog. Held by shared_ptr so readers (views)
// keep a trimmed segment's descriptor open after its file is unlinked.
struct Segment {
  uint64_t first_seq = 0;   // from the file name
  uint64_t last_seq = 0;    // highest seq recorded (0 when empty)
  int64_t last_ts_ns = 0;
  uint64_t bytes = 0;       // valid bytes (the append position)
  uint64_t records = 0;     // records appended since this process opened it
  std::unique_ptr<io::File> file;
  std::unique_ptr<io::File> direct;  // O_DIRECT descriptor for large appends (opened on demand)
  // Bytes from the start that sit in blocks already written and committed
  // (their extents converted, the file size covering them): appends below it
  // change no file-system metadata. Guarded by the log's lock.
  uint64_t settled = 0;
  bool preallocated = false;  // fallocate'd to segment_bytes (the size never grows below that)
  uint64_t warmed = 0;        // read ahead (WILLNEED) up to here, for appends over settled blocks
  uint64_t records_seen = 0;    // PrepareSpare's last look at records / bytes
  uint64_t bytes_seen = 0;
};

// What WriteBackSettled wrote back: the newest segment up to `end`.
struct SettledWriteBack {
  std::shared_ptr<Segment> segment;
  uint64_t end = 0;
};

// Where a record's payload lives.
struct RecordLocation {
  std::shared_ptr<Segment> segment;
  uint64_t payload_offset = 0;
};

// An append-only log of checksummed records split into segment files named
// "<first_seq, 20 digits>.log" in one directory (docs/format/journal.md).
//
// Crash safety: a segment is fdatasync'ed before the next one is created, so
// only the newest segment can end in a torn record; Open() truncates it there.
// Thread-safety: Append/Sync/Trim/ReadPayload may be called from any thread;
// an internal mutex orders appends.
class SegmentLog {
 public:
  struct Options {
    std::string dir;
    uint32_t magic = 0;
    uint64_t segment_bytes = 64ull << 20;
    // Verify payload checksums of every record at Open (else only the
    // newest segment's, where a torn write can be).
    bool verify_all_payloads = false;
    // Keep going past a damaged record in an older segment (the rest of that
    // segment is skipped and reported by Damage()) instead of failing Open.
    bool tolerate_damage = false;
    // Records with payloads of at least this many bytes are written with
    // O_DIRECT at a 4 KiB boundary (pad records fill the gaps), so large
    // appends skip the page cache and its writeback. 0 = never.
    uint64_t direct_payload_bytes = 0;
    // Allocate each new segment's full size up front (fallocate), so small
    // appends need no block allocation: their fdatasync is a data write and a
    // cache flush instead of a file-system journal commit.
    bool preallocate = false;
    // Keep up to this many trimmed segment files as spares ("spare-N.log") and
    // reuse them for new segments: appends then overwrite blocks that are
    // already written, which needs no metadata change at all (ADR 0006).
    // 0 = unlink trimmed segments.
    uint32_t spare_segments = 0;
    // Spares are files of zeros (written blocks) made ahead of use by
    // PrepareSpare while records are small, and a log still converting
    // unwritten extents moves on to such a spare early. Small appends then
    // do not convert extents, so their fdatasync is a page write and a cache
    // flush, not a journal commit (ADR 0011).
    bool zero_fill_spares = false;
  };
  struct DamagedSegment {
    std::string path;
    uint64_t offset = 0;        // first unreadable byte
    uint64_t next_first_seq = 0;  // first seq of the following segment
    int64_t next_first_ts_ns = 0;
  };
  // Called for every valid record in order at Open. Returning a non-ok status aborts Open.
  using Visitor = std::function<Status(const RecordHeader&, const RecordLocation&)>;

  // Opens (creating the directory when missing) and scans every segment.
  static Result<std::unique_ptr<SegmentLog>> Open(const Options& opts, const Visitor& visit);

  // Appends one record; the header's checksums and payload_len are filled
  // here. Not durable until Sync(). With may_start_segment=false the record
  // stays in the current segment even past segment_bytes (used to keep all
  // records of one seq in one segment, so trimming never splits a seq).
  Result<RecordLocation> Append(RecordHeader header, std::span<const uint8_t> payload,
                                bool may_start_segment = true);
  // Makes every appended record durable.
  Status Sync();

  // With zero_fill_spares, call it periodically: when the records appended
  // since the last call average under 64 KiB (larger ones go with O_DIRECT
  // and pay their block conversion once per record anyway) and there are
  // fewer spares than spare_segments, writes one more spare of
  // segment_bytes zeros and syncs it. If the newest segment was not
  // zero-filled, the next record starts a new segment on the spare. Slow (a
  // segment of writes): call it off the write path. True if it made one.
  Result<bool> PrepareSpare();

  // The first half of a shared flush (ADR 0011). When every record since the
  // last Sync lies in settled blocks of the newest segment, writes their dirty
  // pages back and waits for that I/O, without a cache flush: a device cache
  // flush that starts after this returns makes the records durable. The
  // caller issues that flush (an fdatasync of another file on the same ext4
  // device) and then calls MarkDurable. Returns nullopt when the records need
  // metadata made durable too (fresh blocks, a new segment): call Sync().
  Result<std::optional<SettledWriteBack>> WriteBackSettled();
  // The flush after WriteBackSettled succeeded: the log is clean up to `wb`.
  void MarkDurable(const SettledWriteBack& wb);
  // Start writing a buffered append's pages back at once (no wait), so that
  // by the next WriteBackSettled they are usually on the device already. At
  // most one start per 200 µs: a busy log is written back by its flushes, not
  // a page write per record.
  void SetWriteBackOnAppend(bool on) { writeback_on_append_ = on; }

  Status ReadPayload(const RecordLocation& loc, uint64_t offset_in_payload,
                     std::span<uint8_t> out) const;

  // Removes whole segments whose records all have seq <= `seq`, oldest first,
  // never the newest segment (unlinked, or kept as spares for reuse). Returns
  // the segments removed.
  Result<std::vector<std::shared_ptr<Segment>>> TrimThrough(uint64_t seq);
  // Removes the oldest sealed segment. Returns nullptr when only one is left.
  Result<std::shared_ptr<Segment>> TrimOldest();

  // Bytes of records (spares and preallocated space not counted).
  uint64_t TotalBytes() const;
  // Spare segment files kept for reuse.
  size_t SpareCount() const;
  size_t SegmentCount() const;
  // Oldest segment (nullptr when the log is empty).
  std::shared_ptr<Segment> Oldest() const;
  uint64_t LastSeq() const;
  // For readers that follow the log: the segment holding `seq` (the newest
  // with first_seq <= seq), or nullptr when `seq` was trimmed away or the log
  // is empty; and the segment after `seg` (nullptr if `seg` is the newest).
  std::shared_ptr<Segment> SegmentFor(uint64_t seq) const;
  std::shared_ptr<Segment> SegmentAfter(const Segment& seg) const;
  // Valid bytes of `seg` now (appends grow it under the log's lock).
  uint64_t BytesOf(const Segment& seg) const;
  // Damage found by Open (only with tolerate_damage).
  const std::vector<DamagedSegment>& Damage() const { return damage_; }
  const std::string& dir() const { return opts_.dir; }

 private:
  // Writes header + payload (+ trailing pad) as one aligned O_DIRECT write at
  // a 4 KiB boundary, padding up to it first. REQUIRES: mu_.
  Status AppendDirectLocked(Segment* seg, const RecordHeader& h, std::span<const uint8_t> payload,
                            uint64_t* rec_offset, uint64_t* rec_bytes, bool* unsupported);
  explicit SegmentLog(Options opts) : opts_(std::move(opts)) {}
  Status ScanSegment(const std::shared_ptr<Segment>& seg, bool is_last, const Visitor& visit);
  Status StartSegmentLocked(uint64_t first_seq);
  // Every block of `seg` written (a zero-filled spare, or settled to the
  // segment size): no extent left to convert. REQUIRES: mu_.
  bool AllBlocksWrittenLocked(const Segment& seg) const;
  // Writes a spare of zeros (outside mu_) and adds it to spares_.
  Status MakeZeroSpare();
  // Clears the bytes of `seg` from `pos` on (the newest segment after Open).
  Status ClearTail(Segment* seg, uint64_t pos, uint64_t size);
  // Unlinks `seg`'s file, or renames it to a spare. REQUIRES: mu_.
  Status RetireLocked(const std::shared_ptr<Segment>& seg);
  // A spare nobody reads any more, renamed to hold `first_seq`; nullptr if none.
  Result<std::shared_ptr<Segment>> TakeSpareLocked(uint64_t first_seq);
  std::string SegmentPath(uint64_t first_seq) const;
  std::string SparePath(uint64_t n) const;

  Options opts_;
  std::atomic<bool> writeback_on_append_{false};
  mutable std::mutex mu_;
  int64_t last_writeback_ns_ = 0;  // GUARDED_BY(mu_): when an append last started a writeback
  std::map<uint64_t, std::shared_ptr<Segment>> segments_;  // GUARDED_BY(mu_), key = first_seq
  uint64_t total_bytes_ = 0;                               // GUARDED_BY(mu_)
  uint64_t last_seq_ = 0;                                  // GUARDED_BY(mu_)
  bool direct_failed_ = false;  // GUARDED_BY(mu_)
  io::AlignedBuffer direct_buf_;  // GUARDED_BY(mu_): staging for direct appends
  bool dirty_ = false;                                     // GUARDED_BY(mu_)
  std::vector<DamagedSegment> damage_;                     // set by Open
  bool roll_to_spare_ = false;  // GUARDED_BY(mu_): next record starts a segment (PrepareSpare)
  std::atomic<int64_t> zero_fill_retry_ns_{0};  // PrepareSpare: no new attempt before this (after a failure)
  struct Spare {
    std::shared_ptr<Segment> seg;  // its old contents, perhaps still read by a view
    std::string path;              // its name now: spare-N.log
    bool zeroed = false;           // made by MakeZeroSpare (all blocks written zeros)
  };
  std::vector<Spare> spares_;                              // GUARDED_BY(mu_)
  uint64_t next_spare_ = 0;                                // GUARDED_BY(mu_)
  std::mutex sync_mu_;  // serializes fdatasync calls so concurrent flushes coalesce
};

}  // namespace continuum::journal
