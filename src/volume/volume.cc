#include "continuum/volume/volume.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>

#include <nlohmann/json.hpp>

#include "continuum/common/json_field.h"
#include "continuum/common/checksum.h"
#include "continuum/common/log.h"
#include "continuum/common/time_util.h"
#include "continuum/io/flush_domain.h"

namespace continuum::volume {
namespace {

constexpr uint64_t kMaxRecordBytes = 4ull << 20;   // larger writes are split

bool IsRanged(journal::WriteKind k) { return k == journal::WriteKind::kWrite || k == journal::WriteKind::kZero; }

}  // namespace

// Adds [b, e) to a set of disjoint ranges (begin -> end), merging what it touches.
void Volume::AddRange(std::map<uint64_t, uint64_t>& set, uint64_t b, uint64_t e) {
  auto it = set.upper_bound(b);
  if (it != set.begin() && std::prev(it)->second >= b) --it;
  while (it != set.end() && it->first <= e) {
    b = std::min(b, it->first);
    e = std::max(e, it->second);
    it = set.erase(it);
  }
  set[b] = e;
}

Result<std::shared_ptr<Volume>> Volume::Open(const VolumeConfig& cfg, const std::string& dir,
                                             EventSink events) {
  if (cfg.block_size == 0 || cfg.size == 0 || cfg.size % cfg.block_size != 0 ||
      (io::AlignedBuffer::kAlign % cfg.block_size != 0 && cfg.block_size % io::AlignedBuffer::kAlign != 0)) {
    return InvalidArgument("volume " + cfg.name + ": size must be a non-zero multiple of " +
                           std::to_string(cfg.block_size));
  }
  std::shared_ptr<Volume> v(new Volume(cfg, dir, std::move(events)));
  if (cfg.open_cursor) v->open_cursor_ = v->AddCursor(*cfg.open_cursor);
  CONTINUUM_RETURN_IF_ERROR(v->Recover());
  v->maint_thread_ = std::thread([raw = v.get()] { raw->MaintenanceLoop(); });
  v->wsync_thread_ = std::thread([raw = v.get()] { raw->WlogSyncLoop(); });
  if (v->write_behind_max_ > 0) v->applier_thread_ = std::thread([raw = v.get()] { raw->ApplierLoop(); });
  return v;
}

Volume::~Volume() { Close().IgnoreError(); }

Status Volume::OpenMirror() {
  // Data goes to the mirror once, with direct I/O: no page-cache copy and no
  // writeback behind the application's back. Filesystems without O_DIRECT
  // (tmpfs) get buffered I/O; Flush's fdatasync keeps it durable either way.
  auto mirror = io::File::Open(cfg_.backing, O_RDWR | O_DIRECT);
  mirror_direct_ = mirror.ok();
  if (!mirror.ok()) mirror = io::File::Open(cfg_.backing, O_RDWR);
  if (!mirror.ok()) {
    return mirror.status().WithContext("volume " + cfg_.name + ": backing is not usable");
  }
  mirror_ = std::move(mirror).value();
  struct stat st;
  if (::fstat(mirror_->fd(), &st) == 0) mirror_is_blockdev_ = S_ISBLK(st.st_mode);
  CONTINUUM_ASSIGN_OR_RETURN(uint64_t backing_size, mirror_->Size());
  if (backing_size < cfg_.size) {
    return FailedPrecondition("volume " + cfg_.name + ": backing " + cfg_.backing + " is " +
                              std::to_string(backing_size) + " bytes but the volume needs " +
                              std::to_string(cfg_.size));
  }
  if (mirror_direct_) {
    // Some filesystems accept O_DIRECT at open and refuse it at the first I/O.
    io::AlignedBuffer probe(io::AlignedBuffer::kAlign);
    if (!mirror_->PRead(0, probe.span(), true).ok()) {
      CONTINUUM_ASSIGN_OR_RETURN(mirror_, io::File::Open(cfg_.backing, O_RDWR));
      mirror_direct_ = false;
    }
  }
  return Status::Ok();
}

Status Volume::Recover() {
  CONTINUUM_RETURN_IF_ERROR(OpenMirror());
  // The checkpoint names the newest write known to be in the mirror on disk.
  std::string ckpt_path = dir_ + "/checkpoint.json";
  if (io::PathExists(ckpt_path)) {
    CONTINUUM_ASSIGN_OR_RETURN(std::string text, io::ReadFileToString(ckpt_path));
    auto j = nlohmann::json::parse(text, nullptr, false);
    auto seq = JsonField<uint64_t>(j, "applied_seq", UINT64_MAX);
    if (!seq.ok() || *seq == UINT64_MAX) {
      return DataLoss("volume " + cfg_.name + ": cannot parse " + ckpt_path +
                      (seq.ok() ? std::string(": it has no applied_seq") : ": " + seq.status().message()));
    }
    checkpoint_seq_ = *seq;
  }
  uint64_t undo_latest = 0;
  int64_t ts = cfg_.created_ts_ns;
  if (cfg_.cdp) {
    auto store = cdp::CdpStore::Open({.dir = dir_ + "/cdp",
                                      .block_size = cfg_.block_size,
                                      .journal_bytes = cfg_.journal_bytes,
                                      .retention_ns = cfg_.retention_ns,
                                      .full_policy = cfg_.full_policy,
                                      .created_ts_ns = cfg_.created_ts_ns});
    if (!store.ok()) return store.status().WithContext("volume " + cfg_.name);
    cdp_ = std::move(store).value();
    for (const auto& e : cdp_->TakeOpenEvents()) Emit(e.kind, e.message);
    undo_latest = cdp_->Latest().seq;
    ts = std::max(ts, cdp_->Latest().ts_ns);
  }
  CONTINUUM_ASSIGN_OR_RETURN(tracker_, ChangeTracker::Open(dir_ + "/cbt", cfg_.size));
  for (const auto& e : tracker_->TakeOpenEvents()) Emit(e.kind, e.message);

  uint64_t wlog_last = 0;
  std::vector<ReplayRecord> replay;
  auto visit = [&](const journal::RecordHeader& h, const journal::RecordLocation& loc) -> Status {
    wlog_last = std::max(wlog_last, h.seq);
    ts = std::max(ts, h.ts_ns);
    if (h.seq <= checkpoint_seq_) return Status::Ok();
    auto kind = static_cast<journal::WriteKind>(h.kind);
    if (IsRanged(kind) && h.offset + h.length > cfg_.size) {
      return DataLoss("write log record seq " + std::to_string(h.seq) + " is out of bounds");
    }
    if (kind == journal::WriteKind::kWrite && !(h.flags & journal::kFlagNoData) && h.payload_len != h.length) {
      return DataLoss("write log record seq " + std::to_string(h.seq) + " has " +
                      std::to_string(h.payload_len) + " bytes of data for a " + std::to_string(h.length) +
                      "-byte range");
    }
    replay.push_back({h, loc});
    return Status::Ok();
  };
  auto wlog = journal::SegmentLog::Open(
      {.dir = dir_ + "/wlog", .magic = journal::kWriteLogMagic, .segment_bytes = 64ull << 20,
       .verify_all_payloads = true, .preallocate = true, .spare_segments = 1, .zero_fill_spares = true},
      visit);
  if (!wlog.ok()) return wlog.status().WithContext("volume " + cfg_.name + ": open write log");
  wlog_ = std::move(wlog).value();
  std::string why_not;
  wlog_shares_flush_ = io::SharesCacheFlush(cfg_.backing, dir_ + "/wlog", &why_not);
  wlog_->SetWriteBackOnAppend(wlog_shares_flush_);
  Logger("volume")->debug("volume {}: write log {} the backing's cache flush{}", cfg_.name,
                          wlog_shares_flush_ ? "shares" : "does not share",
                          wlog_shares_flush_ ? "" : " (" + why_not + ")");
  // A replica holds a seq only once its record (with the data) is in the write
  // log: an undo record alone is a write whose log append failed (a full
  // disk), which the source must send again. (On a source such a seq was
  // never acknowledged and stays used.)
  last_seq_ = std::max({checkpoint_seq_, cfg_.replica ? uint64_t{0} : undo_latest, wlog_last});
  if (cfg_.replica && undo_latest > last_seq_) {
    Logger("volume")->warn("volume {}: seqs {}..{} have before-images but no write-log record; the source sends them "
                           "again", cfg_.name, last_seq_ + 1, undo_latest);
  }
  applied_seq_ = last_seq_;
  last_ts_ns_ = ts;
  // Journal-first writes need the undo journal (the before-image is what
  // makes the early acknowledgement safe to roll back). A replica's records
  // carry their data anyway: its flush (the source's ack) then skips the mirror.
  const char* wb_env = std::getenv("CONTINUUM_CDP_WRITE_BEHIND");
  bool wb_off = wb_env != nullptr && (std::string(wb_env) == "0" || std::string(wb_env) == "off");
  write_behind_max_ = cfg_.cdp && !wb_off ? cfg_.write_behind_max_bytes : 0;
  // An fsync then waits for the undo journal's sync: its pages should be on
  // their way to the device already.
  if (write_behind_max_ > 0) cdp_->SetWriteBackOnAppend(true);
  captured_through_ = last_seq_;
  if (!replay.empty()) {
    Logger("volume")->info("volume {}: replaying {} write-log records after seq {}", cfg_.name, replay.size(),
                           checkpoint_seq_);
    std::vector<ChangedExtent> unapplied;
    CONTINUUM_RETURN_IF_ERROR(Replay(replay, undo_latest, &unapplied));
    if (!unapplied.empty()) {
      // Never acknowledged (an fsync waits for every admitted write), so the
      // mirror's contents stand; but the write may already have gone to
      // replication targets from the memory ring. New RESYNC records send
      // every target the mirror's contents of those ranges.
      uint64_t bytes = 0;
      for (const auto& e : unapplied) bytes += e.length;
      Logger("volume")->warn("volume {}: {} write(s) past the checkpoint ({} bytes) never reached the mirror; "
                             "they were not acknowledged, and replication targets get these ranges again",
                             cfg_.name, unapplied.size(), bytes);
      Emit("unapplied_writes", std::to_string(unapplied.size()) + " write(s) in flight at the last stop never "
                               "reached the mirror; their ranges are resent to replication targets");
      CONTINUUM_RETURN_IF_ERROR(AppendResync(unapplied).status());
      CONTINUUM_RETURN_IF_ERROR(wlog_->Sync());
    }
    // A replica keeps its write log here: a replica that forwards (cascade)
    // resumes its downstream target from these records, and its cursor is
    // only added once replication starts after Open.
    CONTINUUM_RETURN_IF_ERROR(Checkpoint(/*trim=*/!cfg_.replica));
  }
  last_checkpoint_ns_ = MonoNowNs();
  return Status::Ok();
}

Result<bool> Volume::MirrorMatches(const ReplayRecord& r) {
  uint8_t sum[8];
  CONTINUUM_RETURN_IF_ERROR(r.loc.segment->file->PRead(r.loc.payload_offset, {sum, 8}));
  uint64_t want = 0;
  for (int i = 0; i < 8; ++i) want |= static_cast<uint64_t>(sum[i]) << (8 * i);
  io::AlignedBuffer buf(r.header.length);
  CONTINUUM_RETURN_IF_ERROR(ReadMirror(r.header.offset, buf.span()));
  return Checksum64(buf.span()) == want;
}

Status Volume::Replay(const std::vector<ReplayRecord>& records, uint64_t undo_latest,
                      std::vector<ChangedExtent>* unapplied) {
  // Which metadata-only writes can be checked against the mirror: those whose
  // blocks no later record overwrote. (A later overlapping write was admitted
  // only after this one's mirror write succeeded: the range lock orders them,
  // and a failed mirror write fails the volume.)
  std::vector<bool> checkable(records.size(), false);
  // The parts of each data record that no later record may have changed in
  // the mirror: only those are re-applied. (A later write's mirror change
  // came after this record's data was durable in the mirror: the range lock,
  // and for journal-first writes SettleWriteBehind, order them. A later
  // write past the undo journal's durable end never reached the mirror.)
  std::vector<std::vector<ChangedExtent>> uncovered(records.size());
  {
    std::map<uint64_t, uint64_t> changed;  // begin -> end, disjoint: may have changed the mirror
    for (size_t i = records.size(); i-- > 0;) {
      const auto& h = records[i].header;
      auto kind = static_cast<journal::WriteKind>(h.kind);
      if (!IsRanged(kind) || h.length == 0) continue;
      uint64_t b = h.offset, e = h.offset + h.length;
      if (kind == journal::WriteKind::kWrite && !(h.flags & journal::kFlagNoData)) {
        uint64_t pos = b;
        auto it = changed.upper_bound(b);
        if (it != changed.begin() && std::prev(it)->second > b) --it;
        for (; it != changed.end() && it->first < e; ++it) {
          if (it->first > pos) uncovered[i].push_back({pos, it->first - pos});
          pos = std::max(pos, it->second);
        }
        if (pos < e) uncovered[i].push_back({pos, e - pos});
      }
      if (!cdp_ || h.seq <= undo_latest) AddRange(changed, b, e);
    }
  }
  {
    std::map<uint64_t, uint64_t> claimed;  // begin -> end, disjoint
    auto overlaps = [&](uint64_t b, uint64_t e) {
      auto it = claimed.upper_bound(b);
      if (it != claimed.begin() && std::prev(it)->second > b) return true;
      return it != claimed.end() && it->first < e;
    };
    for (size_t i = records.size(); i-- > 0;) {
      const auto& h = records[i].header;
      auto kind = static_cast<journal::WriteKind>(h.kind);
      if (!IsRanged(kind) || h.length == 0) continue;
      uint64_t b = h.offset, e = h.offset + h.length;
      if (kind == journal::WriteKind::kWrite && (h.flags & journal::kFlagNoData)) checkable[i] = !overlaps(b, e);
      AddRange(claimed, b, e);
    }
  }
  // In seq order, one record at a time. Records that carry data (spilled,
  // replicas, or written by an older version) are re-applied: the mirror
  // write is idempotent, and the undo step runs only where the undo journal
  // does not have the record yet. Metadata-only records re-mark the bitmaps;
  // their data reached the mirror unless they were in flight.
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    const auto& h = r.header;
    Op op;
    op.kind = static_cast<journal::WriteKind>(h.kind);
    op.offset = h.offset;
    op.length = h.length;
    op.flags = h.flags;
    bool undo = cdp_ && h.seq > undo_latest;
    if (op.kind == journal::WriteKind::kBookmark) {
      if (undo) {
        std::string label(h.payload_len, '\0');
        CONTINUUM_RETURN_IF_ERROR(r.loc.segment->file->PRead(
            r.loc.payload_offset, {reinterpret_cast<uint8_t*>(label.data()), label.size()}));
        CONTINUUM_RETURN_IF_ERROR(cdp_->AppendBookmark(h.seq, h.ts_ns, label, h.flags));
      }
      continue;
    }
    if (op.kind == journal::WriteKind::kResync || (h.flags & journal::kFlagNoData)) {
      if (undo) cdp_->NoteSeq(h.seq, h.ts_ns);
      if (op.kind == journal::WriteKind::kWrite) tracker_->Mark(h.offset, h.length);
      if (checkable[i] && op.kind == journal::WriteKind::kWrite) {
        CONTINUUM_ASSIGN_OR_RETURN(bool in_mirror, MirrorMatches(r));
        if (!in_mirror) unapplied->push_back({h.offset, h.length});
      }
      continue;
    }
    if (!IsRanged(op.kind)) continue;
    if (op.kind == journal::WriteKind::kWrite) {
      auto buf = std::make_shared<io::AlignedBuffer>(h.length);
      CONTINUUM_RETURN_IF_ERROR(r.loc.segment->file->PRead(r.loc.payload_offset, buf->span()));
      if (!journal::PayloadValid(h, buf->span())) {
        return DataLoss("write log " + r.loc.segment->file->path() + ": record seq " + std::to_string(h.seq) +
                        " fails its checksum");
      }
      op.data = std::move(buf);
    }
    if (undo) CONTINUUM_RETURN_IF_ERROR(CaptureBefore(op, h.seq, h.ts_ns));
    bool whole = op.kind != journal::WriteKind::kWrite ||
                 (uncovered[i].size() == 1 && uncovered[i][0].length == op.length);
    if (whole || undo) {
      CONTINUUM_RETURN_IF_ERROR(ApplyToMirror(op));
      continue;
    }
    for (const auto& piece : uncovered[i]) {
      CONTINUUM_RETURN_IF_ERROR(
          WriteMirror(piece.offset, op.data->span().subspan(piece.offset - op.offset, piece.length)));
    }
    tracker_->Mark(op.offset, op.length);
  }
  return Status::Ok();
}

Status Volume::CheckWritable() const {
  if (!apply_error_.ok()) {
    return Status(StatusCode::kIoError, "volume " + cfg_.name + " is failed: " + apply_error_.message(), EIO);
  }
  if (cdp_ && cdp_->WritesBlocked()) {
    return Status(StatusCode::kResourceExhausted,
                  "volume " + cfg_.name + ": journal is full inside the retention window (policy block)",
                  ENOSPC);
  }
  return Status::Ok();
}

Volume::RangeLock Volume::LockRange(uint64_t begin, uint64_t end) {
  std::unique_lock lock(mu_);
  // Overlapping writes go one after the other, in admission order, so the
  // mirror, the undo journal and the write log agree on what came last.
  range_cv_.wait(lock, [&] {
    return std::none_of(ranges_.begin(), ranges_.end(),
                        [&](const LockedRange& r) { return r.begin < end && begin < r.end; });
  });
  uint64_t id = next_range_id_++;
  ranges_.push_back({id, begin, end});
  return RangeLock(this, id);
}

Volume::RangeLock::~RangeLock() {
  if (!v_) return;
  std::lock_guard lock(v_->mu_);
  std::erase_if(v_->ranges_, [&](const LockedRange& r) { return r.id == id_; });
  v_->range_cv_.notify_all();
}

bool Volume::HasCursorsLocked() {
  std::erase_if(cursors_, [](const std::weak_ptr<StreamCursor>& w) { return w.expired(); });
  return !cursors_.empty();
}

void Volume::PurgeRingLocked() {
  if (ring_.empty()) return;
  uint64_t acked = UINT64_MAX;
  for (const auto& w : cursors_) {
    if (auto c = w.lock()) acked = std::min<uint64_t>(acked, c->acked.load());
  }
  while (!ring_.empty() && ring_.begin()->first <= acked) {
    ring_bytes_ -= ring_.begin()->second->size();
    ring_.erase(ring_.begin());
  }
}

std::shared_ptr<const io::AlignedBuffer> Volume::RingData(uint64_t seq) const {
  std::lock_guard lock(mu_);
  auto it = ring_.find(seq);
  return it == ring_.end() ? nullptr : it->second;
}

Result<uint64_t> Volume::Commit(Op op) {
  RangeLock range;
  if (IsRanged(op.kind)) range = LockRange(op.offset, op.offset + op.length);
  // Journal-first (ADR 0012): a small data write is acknowledged from the
  // journals and reaches the mirror on the applier thread. Anything else that
  // changes the mirror directly waits until earlier write-behind writes to
  // its range are there (and durable there).
  bool behind = false;
  if (write_behind_max_ > 0 && IsRanged(op.kind)) {
    behind = WriteBehindFits(op);
    if (!behind) CONTINUUM_RETURN_IF_ERROR(SettleWriteBehind(op.offset, op.offset + op.length));
  }
  // The before-image of a data write is read outside the admission lock, so
  // writers overlap their reads: the range lock keeps it stable, and every
  // earlier write to the range is in the mirror or the write-behind data.
  io::AlignedBuffer before;
  if (cdp_ && op.kind == journal::WriteKind::kWrite && !behind) {
    before.Resize(op.length);
    CONTINUUM_RETURN_IF_ERROR(ReadLogical(op.offset, before.span()));
  }
  CONTINUUM_ASSIGN_OR_RETURN(uint64_t seq, Admit(op, before, behind));
  if (seq == 0) return LastSeq();  // a replica's resend: already admitted
  if (behind) return seq;          // the applier takes it from here
  Status st = ApplyToMirror(op);
  Complete(seq);
  if (!st.ok()) return Fail(st);
  return seq;
}

Result<uint64_t> Volume::Admit(const Op& op, const io::AlignedBuffer& before, bool behind) {
  uint64_t seq;
  int64_t ts;
  {
    std::lock_guard append(append_mu_);
    bool cursors;
    {
      std::lock_guard lock(mu_);
      if (stopping_) return Unavailable("volume " + cfg_.name + " is closing");
      CONTINUUM_RETURN_IF_ERROR(CheckWritable());
      if (op.given_seq != 0) {
        // A replica takes the source's seq and time: points mean the same on
        // both sides whatever the clocks of the two hosts say.
        if (op.given_seq <= last_seq_) return uint64_t{0};
        seq = op.given_seq;
        ts = std::max(op.given_ts, last_ts_ns_);
      } else {
        seq = last_seq_ + 1;
        // Timestamps never go backwards, so time -> seq lookups stay monotonic.
        ts = std::max(WallNowNs(), last_ts_ns_);
      }
      cursors = HasCursorsLocked();
    }
    // The before-image goes to the undo journal before anything names the
    // write; a failure here leaves the journal in an unknown state for this
    // seq, so the volume fails (restart recovers it).
    // A write-behind write's undo record comes later (the applier reads its
    // before-image off the application's path); undo records stay in seq
    // order, so anything else first appends those of earlier ones.
    if (cdp_ && !behind) {
      Status st = CaptureWriteBehindLocked(seq - 1, nullptr);
      if (st.ok()) {
        st = before.size() > 0 ? cdp_->AppendBefore(seq, ts, op.offset / cfg_.block_size, before.span(), true)
                               : CaptureBefore(op, seq, ts);
      }
      if (!st.ok()) return Fail(st);
    }
    journal::RecordHeader h;
    h.kind = static_cast<uint16_t>(op.kind);
    h.seq = seq;
    h.ts_ns = ts;
    h.offset = op.offset;
    h.length = op.length;
    h.flags = op.flags;
    std::span<const uint8_t> payload;
    uint8_t sum[8];
    bool to_ring = false;
    if (op.kind == journal::WriteKind::kWrite) {
      std::lock_guard lock(mu_);
      if (cursors && ring_bytes_ + op.length > cfg_.cache_bytes) PurgeRingLocked();
      if (cursors && ring_bytes_ + op.length <= cfg_.cache_bytes) {
        to_ring = true;
      } else if (cursors && wlog_->TotalBytes() + op.length <= cfg_.spill_bytes) {
        payload = op.data->span();  // the file cache: data in the write log
        ++spilled_records_;
      } else if (cursors) {
        ++unbuffered_records_;
      }
      // A replica logs the data itself (redo): its seqs are the source's, so
      // it cannot mark an interrupted write for resync the way a source can;
      // recovery re-applies it instead.
      if (cfg_.replica && payload.empty()) payload = op.data->span();
      // A write-behind write is durable in the journals alone: the write
      // log carries its data until the mirror has it (recovery re-applies it).
      if (behind) payload = op.data->span();
      if (payload.empty()) {
        uint64_t c = Checksum64(op.data->span());
        for (int i = 0; i < 8; ++i) sum[i] = static_cast<uint8_t>(c >> (8 * i));
        payload = {sum, 8};
        h.flags |= journal::kFlagNoData;
      }
    } else if (op.kind == journal::WriteKind::kBookmark) {
      payload = op.label;
    }
    auto loc = wlog_->Append(h, payload);
    if (!loc.ok() && cdp_) {
      // The undo journal already has this seq: the volume fails (Fail takes mu_).
      return Fail(loc.status().WithContext("volume " + cfg_.name + ": append to write log"));
    }
    std::lock_guard lock(mu_);
    if (!loc.ok()) {
      Status st = loc.status().WithContext("volume " + cfg_.name + ": append to write log");
      if (admit_error_.ok()) {
        // Once per episode: the operator must free space in the state directory.
        Logger("volume")->error("{}", st.message());
        if (events_) events_("write_log_failed", st.message() + "; writes are refused until it succeeds again");
      }
      admit_error_ = st;
      return st;
    }
    if (!admit_error_.ok()) {
      admit_error_ = Status::Ok();
      if (events_) events_("write_log_recovered", "write log accepts writes again");
    }
    // Invariant: a write is visible to replication only once it is in the
    // write log, and its data is in the ring (or the log) by then.
    if (to_ring) {
      ring_[seq] = op.data;
      ring_bytes_ += op.data->size();
    }
    last_seq_ = seq;
    last_ts_ns_ = ts;
    inflight_.insert(seq);
    if (behind) {
      WbInsertLocked(seq, {op.offset, op.length, op.data, false, ts});
      write_behind_bytes_ += op.length;
      write_behind_cv_.notify_all();
    }
    if (IsRanged(op.kind)) {
      ++writes_;
      bytes_written_ += op.length;
    }
    admitted_cv_.notify_all();
  }
  return seq;
}

Status Volume::Fail(const Status& st) {
  std::lock_guard lock(mu_);
  if (apply_error_.ok()) {
    apply_error_ = st;
    Logger("volume")->error("volume {}: {}", cfg_.name, st.message());
    if (events_) {
      events_("apply_failed", st.message() + "; writes are refused until the agent is restarted "
                                             "(acknowledged writes are in the mirror and the logs)");
    }
  }
  applied_cv_.notify_all();
  return Status(StatusCode::kIoError, "volume " + cfg_.name + " is failed: " + apply_error_.message(), EIO);
}

void Volume::Complete(uint64_t seq) {
  std::lock_guard lock(mu_);
  inflight_.erase(seq);
  applied_seq_ = inflight_.empty() ? last_seq_ : *inflight_.begin() - 1;
  applied_cv_.notify_all();
}

Status Volume::CaptureBefore(const Op& op, uint64_t seq, int64_t ts) {
  const uint32_t bs = cfg_.block_size;
  switch (op.kind) {
    case journal::WriteKind::kBookmark:
      return cdp_->AppendBookmark(seq, ts, std::string(op.label.begin(), op.label.end()), op.flags);
    case journal::WriteKind::kResync:
      cdp_->NoteSeq(seq, ts);  // contents unchanged: nothing to undo
      return Status::Ok();
    default:
      break;
  }
  // The range is locked by this write, and every earlier write to it has
  // reached the mirror, so the mirror holds exactly the before-image.
  uint64_t first = op.offset / bs;
  uint64_t nblocks = op.length / bs;
  constexpr uint64_t kPiece = 4ull << 20;  // large zero ranges in 4 MiB pieces
  io::AlignedBuffer& old = before_buf_;  // guarded by append_mu_ (one capture at a time)
  for (uint64_t done = 0; done < nblocks;) {
    uint64_t n = std::min<uint64_t>(kPiece / bs, nblocks - done);
    old.Resize(n * bs);
    CONTINUUM_RETURN_IF_ERROR(ReadMirror((first + done) * bs, old.span()));
    bool last = done + n == nblocks;
    CONTINUUM_RETURN_IF_ERROR(cdp_->AppendBefore(seq, ts, first + done, old.span(), last));
    done += n;
  }
  if (nblocks == 0) cdp_->NoteSeq(seq, ts);
  return Status::Ok();
}

Status Volume::ApplyToMirror(const Op& op, bool undo_synced) {
  // Ordering: undo durable before the mirror changes. Concurrent writers
  // share one fdatasync (the journal syncs what was appended before it).
  if (cdp_ && !undo_synced) {
    Status st = cdp_->Sync();
    if (!st.ok()) return st.WithContext("volume " + cfg_.name + ": sync undo journal");
  }
  if (IsRanged(op.kind)) {
    std::shared_lock mirror_lock(mirror_mu_);
    if (cdp_) cdp_->Publish();
    if (op.kind == journal::WriteKind::kWrite) {
      CONTINUUM_RETURN_IF_ERROR(WriteMirror(op.offset, op.data->span()));
    } else {
      CONTINUUM_RETURN_IF_ERROR(ZeroMirror(op.offset, op.length));
    }
    // A direct change is acknowledged from the mirror: the next Flush syncs it.
    if (!undo_synced) mirror_dirty_.store(true);
  } else if (cdp_) {
    std::shared_lock mirror_lock(mirror_mu_);
    cdp_->Publish();
  }
  if (IsRanged(op.kind)) tracker_->Mark(op.offset, op.length);
  return Status::Ok();
}

Status Volume::Read(uint64_t offset, std::span<uint8_t> out) {
  if (offset + out.size() > cfg_.size) {
    return Status(StatusCode::kInvalidArgument, "read past the end of volume " + cfg_.name, EINVAL);
  }
  const uint32_t bs = cfg_.block_size;
  if (offset % bs != 0 || out.size() % bs != 0) {
    uint64_t start = offset / bs * bs;
    uint64_t end = (offset + out.size() + bs - 1) / bs * bs;
    io::AlignedBuffer buf(end - start);
    CONTINUUM_RETURN_IF_ERROR(ReadLogical(start, buf.span()));
    std::memcpy(out.data(), buf.data() + (offset - start), out.size());
    return Status::Ok();
  }
  // A write is acknowledged once it reached the mirror or (journal-first)
  // the write-behind data, so the two together are current.
  return ReadLogical(offset, out);
}

Status Volume::ReadMirror(uint64_t offset, std::span<uint8_t> out) const {
  Status st;
  if (!mirror_direct_ || io::AlignedBuffer::IsAligned(out.data(), out.size())) {
    st = mirror_->PRead(offset, out, /*zero_fill_past_eof=*/true);
  } else {
    // Direct I/O needs an aligned buffer: bounce through one per thread.
    thread_local io::AlignedBuffer bounce;
    constexpr size_t kBounce = 1u << 20;
    for (size_t done = 0; done < out.size() && st.ok();) {
      size_t n = std::min(kBounce, out.size() - done);
      bounce.Resize((n + io::AlignedBuffer::kAlign - 1) / io::AlignedBuffer::kAlign * io::AlignedBuffer::kAlign);
      st = mirror_->PRead(offset + done, bounce.span(), true);
      if (st.ok()) std::memcpy(out.data() + done, bounce.data(), n);
      done += n;
    }
  }
  if (!st.ok()) return st.WithContext("volume " + cfg_.name);
  return st;
}

Status Volume::WriteMirror(uint64_t offset, std::span<const uint8_t> data) {
  Status st = mirror_->PWrite(offset, data);
  if (!st.ok()) return st.WithContext("volume " + cfg_.name + ": write mirror");
  return st;
}

Status Volume::Write(uint64_t offset, std::span<const uint8_t> data, bool fua) {
  if (offset + data.size() > cfg_.size) {
    return Status(StatusCode::kInvalidArgument, "write past the end of volume " + cfg_.name, ENOSPC);
  }
  if (data.empty()) return Status::Ok();
  const uint32_t bs = cfg_.block_size;
  if (offset % bs != 0 || data.size() % bs != 0) {
    // Read-modify-write of the covering blocks; serialized so two unaligned
    // writes to one block cannot lose each other's bytes.
    std::lock_guard rmw(rmw_mu_);
    uint64_t start = offset / bs * bs;
    uint64_t end = (offset + data.size() + bs - 1) / bs * bs;
    std::vector<uint8_t> buf(end - start);
    CONTINUUM_RETURN_IF_ERROR(Read(start, buf));
    std::memcpy(buf.data() + (offset - start), data.data(), data.size());
    CONTINUUM_RETURN_IF_ERROR(WriteAligned(start, buf));
  } else {
    CONTINUUM_RETURN_IF_ERROR(WriteAligned(offset, data));
  }
  if (fua) return Flush();
  return Status::Ok();
}

Status Volume::WriteAligned(uint64_t offset, std::span<const uint8_t> data) {
  uint64_t last = 0;
  for (uint64_t done = 0; done < data.size();) {
    uint64_t n = std::min<uint64_t>(kMaxRecordBytes, data.size() - done);
    // The one copy of the data: into an aligned buffer for the direct write,
    // shared with the replication ring.
    auto buf = std::make_shared<io::AlignedBuffer>(n);
    std::memcpy(buf->data(), data.data() + done, n);
    Op op{.kind = journal::WriteKind::kWrite, .offset = offset + done, .length = n, .data = std::move(buf)};
    CONTINUUM_ASSIGN_OR_RETURN(last, Commit(std::move(op)));
    done += n;
  }
  return WaitAck(last);
}

Status Volume::WaitAck(uint64_t seq) {
  std::shared_ptr<AckWaiter> waiter;
  {
    std::lock_guard lock(mu_);
    waiter = ack_waiter_;
  }
  if (!waiter || seq == 0) return Status::Ok();
  return (*waiter)(seq);
}

void Volume::SetAckWaiter(AckWaiter waiter) {
  std::lock_guard lock(mu_);
  ack_waiter_ = waiter ? std::make_shared<AckWaiter>(std::move(waiter)) : nullptr;
}

std::shared_ptr<StreamCursor> Volume::AddCursor(uint64_t acked) {
  auto c = std::make_shared<StreamCursor>();
  c->acked = acked;
  std::lock_guard lock(mu_);
  cursors_.push_back(c);
  return c;
}

void Volume::ReleaseOpenCursor() {
  std::lock_guard lock(mu_);
  open_cursor_.reset();  // its weak entry in cursors_ expires
}

bool Volume::HasCursors() {
  std::lock_guard lock(mu_);
  return HasCursorsLocked();
}

int64_t Volume::LastTimestamp() const {
  std::lock_guard lock(mu_);
  return last_ts_ns_;
}

void Volume::WaitAdmitted(uint64_t seq, int timeout_ms) {
  std::unique_lock lock(mu_);
  admitted_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                        [&] { return last_seq_ > seq || stopping_; });
}

uint64_t Volume::LastSeq() const {
  std::lock_guard lock(mu_);
  return last_seq_;
}

Result<uint64_t> Volume::AppendResync(const std::vector<ChangedExtent>& extents) {
  uint64_t last = 0;
  for (const auto& e : extents) {
    for (uint64_t done = 0; done < e.length;) {
      uint64_t n = std::min<uint64_t>(1ull << 20, e.length - done);
      CONTINUUM_ASSIGN_OR_RETURN(last, Commit({.kind = journal::WriteKind::kResync, .offset = e.offset + done, .length = n}));
      done += n;
    }
  }
  return last;
}

Result<uint64_t> Volume::ReadCurrent(uint64_t offset, std::span<uint8_t> out) {
  const uint32_t bs = cfg_.block_size;
  if (offset % bs != 0 || out.size() % bs != 0 || offset + out.size() > cfg_.size) {
    return InvalidArgument("volume " + cfg_.name + ": unaligned resync read");
  }
  // Holding the range, every admitted write to it is in the mirror or the
  // write-behind data and no new one can start: the contents include every
  // write up to last_seq_.
  RangeLock range = LockRange(offset, offset + out.size());
  uint64_t seq = LastSeq();
  CONTINUUM_RETURN_IF_ERROR(ReadLogical(offset, out));
  return seq;
}

Status Volume::Flush() {
  {
    std::lock_guard lock(mu_);
    // A failed volume must surface at the application's next fsync; a full
    // journal (policy block) does not make earlier writes less durable.
    if (!apply_error_.ok()) return CheckWritable();
    ++flushes_;
  }
  Status st = FlushSteps();
  {
    std::lock_guard lock(mu_);
    ++flush_epoch_;
    write_behind_cv_.notify_all();
  }
  CONTINUUM_RETURN_IF_ERROR(st);
  return WaitAck(LastSeq());
}

Status Volume::FlushSteps() {
  // Journal-first writes are durable once their undo and write-log records
  // are; the mirror needs a sync only for writes that went to it directly.
  // (No order among these syncs: a mirror write never waits for a flush, its
  // undo record was durable before it.)
  const bool mirror = write_behind_max_ == 0 || mirror_dirty_.load();
  // Shared flush (ADR 0011): when the write log's new records sit in blocks
  // that need no metadata, writing their pages back before the mirror's
  // fdatasync is enough: the cache flush that ends it covers both files.
  if (wlog_shares_flush_ && mirror) {
    if (write_behind_max_ > 0) {
      Status ust = cdp_->Sync();
      if (!ust.ok()) return Fail(ust.WithContext("volume " + cfg_.name + ": sync undo journal"));
    }
    auto wb = wlog_->WriteBackSettled();
    if (!wb.ok()) return wb.status().WithContext("volume " + cfg_.name + ": flush write log");
    if (wb->has_value()) {
      Status st = SyncMirror();
      if (!st.ok()) return Fail(st.WithContext("volume " + cfg_.name + ": flush mirror"));
      wlog_->MarkDurable(**wb);
      return Status::Ok();
    }
  }
  // Otherwise the write log syncs on its thread while this one syncs the
  // undo journal and the mirror.
  uint64_t ticket = 0;
  {
    std::lock_guard lock(wsync_mu_);
    if (!wsync_stop_) ticket = ++wsync_requested_;  // else closed: sync inline
    wsync_cv_.notify_all();
  }
  Status ust = write_behind_max_ > 0 ? cdp_->Sync() : Status::Ok();
  Status st = mirror ? SyncMirror() : Status::Ok();
  Status wst;
  if (ticket == 0) {
    wst = wlog_->Sync();
  } else {
    std::unique_lock lock(wsync_mu_);
    wsync_cv_.wait(lock, [&] { return wsync_done_ >= ticket; });
    wst = wsync_status_;
  }
  if (!ust.ok()) return Fail(ust.WithContext("volume " + cfg_.name + ": sync undo journal"));
  if (!st.ok()) return Fail(st.WithContext("volume " + cfg_.name + ": flush mirror"));
  if (!wst.ok()) return wst.WithContext("volume " + cfg_.name + ": flush write log");
  return Status::Ok();
}

void Volume::WlogSyncLoop() {
  std::unique_lock lock(wsync_mu_);
  for (;;) {
    wsync_cv_.wait(lock, [&] { return wsync_stop_ || wsync_requested_ > wsync_done_; });
    if (wsync_requested_ > wsync_done_) {
      // Every request made before this sync starts is covered by it.
      uint64_t target = wsync_requested_;
      lock.unlock();
      Status st = wlog_->Sync();
      lock.lock();
      wsync_status_ = st;
      wsync_done_ = target;
      wsync_cv_.notify_all();
      continue;
    }
    if (wsync_stop_) return;
  }
}

Status Volume::Trim(uint64_t offset, uint64_t length) { return WriteZeroes(offset, length, false); }

Status Volume::WriteZeroes(uint64_t offset, uint64_t length, bool fua) {
  if (offset + length > cfg_.size) {
    return Status(StatusCode::kInvalidArgument, "zero range past the end of volume " + cfg_.name, EINVAL);
  }
  const uint32_t bs = cfg_.block_size;
  uint64_t start = (offset + bs - 1) / bs * bs;
  uint64_t end = (offset + length) / bs * bs;
  // Partial blocks at either end become ordinary writes of zeros.
  if (start > end) {
    std::vector<uint8_t> zeros(length, 0);
    return Write(offset, zeros, fua);
  }
  if (start > offset) {
    std::vector<uint8_t> zeros(start - offset, 0);
    CONTINUUM_RETURN_IF_ERROR(Write(offset, zeros, false));
  }
  uint64_t last = 0;
  for (uint64_t pos = start; pos < end;) {
    uint64_t n = std::min<uint64_t>(kMaxZeroRecord, end - pos);
    CONTINUUM_ASSIGN_OR_RETURN(last, Commit({.kind = journal::WriteKind::kZero, .offset = pos, .length = n}));
    pos += n;
  }
  CONTINUUM_RETURN_IF_ERROR(WaitAck(last));
  if (offset + length > end) {
    std::vector<uint8_t> zeros(offset + length - end, 0);
    CONTINUUM_RETURN_IF_ERROR(Write(end, zeros, false));
  }
  if (fua) return Flush();
  return Status::Ok();
}

Result<cdp::Point> Volume::AddBookmark(const std::string& label, uint32_t flags) {
  if (!cdp_) return FailedPrecondition("volume " + cfg_.name + " has no CDP journal");
  Op op{.kind = journal::WriteKind::kBookmark, .label = std::vector<uint8_t>(label.begin(), label.end()),
        .flags = flags};
  CONTINUUM_ASSIGN_OR_RETURN(uint64_t seq, Commit(std::move(op)));
  // Every write before the bookmark is in the mirror and durable with it.
  CONTINUUM_RETURN_IF_ERROR(WaitApplied(seq));
  CONTINUUM_RETURN_IF_ERROR(Flush());
  return cdp_->ResolveSeq(seq);
}

Status Volume::WaitApplied(uint64_t seq) {
  std::unique_lock lock(mu_);
  applied_cv_.wait(lock, [&] { return applied_seq_ >= seq || !apply_error_.ok() || closed_; });
  if (!apply_error_.ok()) return apply_error_;
  if (applied_seq_ < seq) return Unavailable("volume " + cfg_.name + " is closing");
  return Status::Ok();
}

Status Volume::Drain() {
  uint64_t seq;
  {
    std::lock_guard lock(mu_);
    seq = last_seq_;
  }
  return WaitApplied(seq);
}

Status Volume::Close() {
  {
    std::unique_lock lock(mu_);
    if (!maint_thread_.joinable()) return Status::Ok();
    stopping_ = true;
    admitted_cv_.notify_all();
    write_behind_cv_.notify_all();
    // Writes already admitted finish their mirror step (a failed volume's
    // write-behind writes stay in the write log: the next Open re-applies them).
    applied_cv_.wait(lock, [&] { return inflight_.empty() || !apply_error_.ok(); });
    applier_stop_ = true;
    write_behind_cv_.notify_all();
    maint_cv_.notify_all();
  }
  if (applier_thread_.joinable()) applier_thread_.join();
  maint_thread_.join();
  {
    std::lock_guard lock(wsync_mu_);
    wsync_stop_ = true;
    wsync_cv_.notify_all();
  }
  if (wsync_thread_.joinable()) wsync_thread_.join();
  std::lock_guard lock(mu_);
  closed_ = true;
  applied_cv_.notify_all();
  if (!apply_error_.ok()) return apply_error_;
  return Status::Ok();
}

void Volume::Emit(const std::string& kind, const std::string& message) {
  Logger("volume")->info("volume {}: {}: {}", cfg_.name, kind, message);
  if (events_) events_(kind, message);
}

void Volume::SetRetention(int64_t retention_ns, uint64_t journal_bytes, cdp::FullPolicy policy) {
  cfg_.retention_ns = retention_ns;
  cfg_.journal_bytes = journal_bytes;
  cfg_.full_policy = policy;
  if (cdp_) cdp_->SetRetention(retention_ns, journal_bytes, policy);
}

VolumeStats Volume::Stats() const {
  VolumeStats s;
  {
    std::lock_guard lock(mu_);
    s.last_seq = last_seq_;
    s.applied_seq = applied_seq_;
    s.pending_bytes = ring_bytes_;
    s.spilled_records = spilled_records_;
    s.unbuffered_records = unbuffered_records_;
    s.writes = writes_;
    s.bytes_written = bytes_written_;
    s.flushes = flushes_;
    s.write_behind_bytes = write_behind_bytes_;
    if (!apply_error_.ok()) {
      s.error = apply_error_.message();
    } else if (!admit_error_.ok()) {
      s.error = admit_error_.message();
    }
  }
  s.wlog_bytes = wlog_->TotalBytes();
  if (cdp_) {
    s.journal_bytes = cdp_->JournalBytes();
    s.oldest = cdp_->Oldest();
    s.latest = cdp_->Latest();
    s.writes_blocked = cdp_->WritesBlocked();
  }
  return s;
}

}  // namespace continuum::volume
