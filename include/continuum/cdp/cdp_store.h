#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "continuum/common/result.h"
#include "continuum/journal/segment_log.h"

namespace continuum::cdp {

// What to do when the journal reaches its size limit while every retained
// point is still inside the retention window.
enum class FullPolicy { kTrim, kBlock };

struct Bookmark {
  uint64_t seq = 0;
  int64_t ts_ns = 0;
  std::string label;
  bool consistent = false;
  bool rollback_mark = false;
};

// A restorable point: the volume state after every write with seq <= `seq`.
struct Point {
  uint64_t seq = 0;
  int64_t ts_ns = 0;
};

// Where a block's contents at a past point live.
struct BlockLoc {
  std::shared_ptr<journal::Segment> segment;  // nullptr when `zero`
  uint64_t offset = 0;                        // byte offset of the block in the segment file
  bool zero = false;
};

// Block -> before-image for a view at a point. Updated by CdpStore as newer
// undo records are published, so the map stays right while the mirror moves.
// Thread-safety: guarded by the volume's mirror lock (see Volume).
struct ViewMap {
  uint64_t point_seq = 0;
  std::unordered_map<uint64_t, BlockLoc> blocks;
};

struct CdpEvent {
  std::string kind;     // "journal_trimmed", "retention_shortened", "journal_full"
  std::string message;
};

// The undo journal of one volume plus its in-memory index (docs/format/journal.md).
// Before a write is applied to the mirror, its range's old contents are
// appended here (copy-on-write reverse increment). A view at point P is the
// mirror overlaid, block by block, by the oldest undo record newer than P.
//
// Thread-safety: Append* and EnforceRetention are serialized by the volume
// (its admission lock); Sync and Publish may come from any writer thread. Query calls (Oldest, Latest, Resolve*,
// Bookmarks, OpenViewMap) may come from any thread; they take mu_.
// Publish runs under the volume's mirror lock held shared (writers), view
// reads and OpenViewMap under it exclusively, so a view never sees the mirror
// ahead of its map.
class CdpStore {
 public:
  struct Options {
    std::string dir;
    uint32_t block_size = 4096;
    uint64_t journal_bytes = 1ull << 30;
    int64_t retention_ns = 0;  // 0 = keep as long as the size allows
    FullPolicy full_policy = FullPolicy::kTrim;
    int64_t created_ts_ns = 0;  // time of the volume's initial point (seq 0)
  };

  static Result<std::unique_ptr<CdpStore>> Open(const Options& opts);

  // Appends the before-image of blocks [first_block, first_block + nblocks)
  // for write `seq`; split into zero and data runs. The last record of the
  // seq carries kFlagEndOfSeq: call with end_of_seq=true for the final range.
  Status AppendBefore(uint64_t seq, int64_t ts_ns, uint64_t first_block,
                      std::span<const uint8_t> old_data, bool end_of_seq);
  Status AppendBookmark(uint64_t seq, int64_t ts_ns, const std::string& label, uint32_t flags);
  // Records that `seq` was applied even if it produced no undo record.
  void NoteSeq(uint64_t seq, int64_t ts_ns);
  // Makes the appended records durable. Must precede the mirror writes.
  Status Sync();
  // journal::SegmentLog::SetWriteBackOnAppend: the pages of an append start
  // their write-back at once, so a later Sync mostly only flushes.
  void SetWriteBackOnAppend(bool on);
  // A zero-filled spare segment for the undo journal, ahead of use
  // (journal::SegmentLog::PrepareSpare).
  Result<bool> PrepareSpare();
  // Seeding (cascade, docs/adr/0004-replication.md): the volume's contents
  // were written at `p` without undo history; `p` becomes the oldest and the
  // latest point (durably, base.json). Refuses a store that holds records.
  Status Rebase(const Point& p);
  // Adds the records appended since the last Publish to the index and to
  // every open view map. REQUIRES: mirror lock held (shared is enough).
  void Publish();

  // Trims by retention and size. Returns events for the operator.
  Result<std::vector<CdpEvent>> EnforceRetention(int64_t now_ns);
  // True when the journal is full and the policy forbids trimming: the
  // volume must refuse new writes.
  bool WritesBlocked() const;

  Point Oldest() const;
  Point Latest() const;  // newest published seq
  // The newest point at or before `ts_ns`; kOutOfRange naming the oldest
  // point when `ts_ns` is older.
  Result<Point> ResolveTime(int64_t ts_ns) const;
  Result<Point> ResolveSeq(uint64_t seq) const;
  Result<Point> ResolveBookmark(const std::string& label) const;
  // "seq:N", an RFC 3339 time, or a bookmark label.
  Result<Point> ResolvePoint(const std::string& text) const;
  std::vector<Bookmark> Bookmarks() const;
  bool HasBookmark(const std::string& label) const;

  // A live map for a view at `seq`. Cost is proportional to the changes
  // since `seq`. REQUIRES: mirror lock held exclusively (or no concurrent apply).
  Result<std::shared_ptr<ViewMap>> OpenViewMap(uint64_t seq);
  void CloseViewMap(const std::shared_ptr<ViewMap>& map);

  Status ReadBlock(const BlockLoc& loc, std::span<uint8_t> out) const;
  // Events found while opening (e.g. a damaged segment that cost old points).
  std::vector<CdpEvent> TakeOpenEvents() { return std::move(open_events_); }

  uint64_t JournalBytes() const;
  uint64_t JournalLimit() const { return opts_.journal_bytes; }
  size_t ExtentCount() const;
  void SetRetention(int64_t retention_ns, uint64_t journal_bytes, FullPolicy policy);

 private:
  struct Extent {
    uint64_t seq;
    int64_t ts_ns;
    uint64_t first_block;
    uint32_t nblocks;
    bool zero;
    journal::RecordLocation loc;
  };
  explicit CdpStore(Options opts) : opts_(std::move(opts)) {}
  Status LoadBase();
  Status SaveBase();
  void AddToMapLocked(ViewMap* map, const Extent& e) const;
  Result<std::vector<CdpEvent>> TrimOldestLocked(const char* why);

  Options opts_;
  std::unique_ptr<journal::SegmentLog> log_;
  mutable std::mutex mu_;
  std::deque<Extent> index_;             // GUARDED_BY(mu_), ordered by seq
  std::vector<Extent> unpublished_;      // owned by the apply thread
  std::vector<Bookmark> unpublished_bookmarks_;
  std::vector<Bookmark> bookmarks_;      // GUARDED_BY(mu_), ordered by seq
  std::vector<std::weak_ptr<ViewMap>> views_;  // GUARDED_BY(mu_)
  Point base_;                           // GUARDED_BY(mu_): oldest restorable point
  Point latest_;                         // GUARDED_BY(mu_)
  bool writes_blocked_ = false;          // GUARDED_BY(mu_)
  uint64_t open_seq_ = 0;                // apply thread: seq whose records are being appended
  Point last_unpublished_;               // apply thread
  std::vector<CdpEvent> open_events_;
};

}  // namespace continuum::cdp
