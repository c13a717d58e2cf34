#include "continuum/volume/volume.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

#include "continuum/common/log.h"
#include "continuum/common/time_util.h"

namespace continuum::volume {
namespace {

constexpr uint64_t kMaxRecordBytes = 4ull << 20;     // larger writes are split
constexpr uint64_t kMaxZeroRecord = 256ull << 20;    // larger zero ranges are split

}  // namespace

Result<std::shared_ptr<Volume>> Volume::Open(const VolumeConfig& cfg, const std::string& dir,
                                             EventSink events) {
  if (cfg.block_size == 0 || cfg.size == 0 || cfg.size % cfg.block_size != 0) {
    return InvalidArgument("volume " + cfg.name + ": size must be a non-zero multiple of " +
                           std::to_string(cfg.block_size));
  }
  std::shared_ptr<Volume> v(new Volume(cfg, dir, std::move(events)));
  CONTINUUM_RETURN_IF_ERROR(v->Recover());
  v->apply_thread_ = std::thread([raw = v.get()] { raw->ApplyLoop(); });
  return v;
}

Volume::~Volume() { Close().IgnoreError(); }

Status Volume::Recover() {
  auto mirror = io::File::Open(cfg_.backing, O_RDWR);
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

  // The checkpoint names the newest write known to be in the mirror on disk.
  std::string ckpt_path = dir_ + "/checkpoint.json";
  if (io::PathExists(ckpt_path)) {
    CONTINUUM_ASSIGN_OR_RETURN(std::string text, io::ReadFileToString(ckpt_path));
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.contains("applied_seq")) {
      return DataLoss("volume " + cfg_.name + ": cannot parse " + ckpt_path);
    }
    checkpoint_seq_ = j["applied_seq"].get<uint64_t>();
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

  // Replay: every write-log record past the checkpoint goes back into the
  // queue. Records whose undo is already durable skip the undo step (the
  // mirror write is repeated; it is idempotent).
  uint64_t wlog_last = 0;
  auto visit = [&](const journal::RecordHeader& h, const journal::RecordLocation& loc) -> Status {
    wlog_last = std::max(wlog_last, h.seq);
    ts = std::max(ts, h.ts_ns);
    if (h.seq <= checkpoint_seq_) return Status::Ok();
    auto rec = std::make_unique<Record>();
    rec->seq = h.seq;
    rec->ts_ns = h.ts_ns;
    rec->kind = static_cast<journal::WriteKind>(h.kind);
    rec->offset = h.offset;
    rec->length = h.length;
    rec->flags = h.flags;
    rec->data.resize(h.payload_len);
    CONTINUUM_RETURN_IF_ERROR(loc.segment->file->PRead(loc.payload_offset, rec->data));
    if (!journal::PayloadValid(h, rec->data)) {
      return DataLoss("write log " + loc.segment->file->path() + ": record seq " +
                      std::to_string(h.seq) + " fails its checksum");
    }
    if (rec->kind == journal::WriteKind::kWrite || rec->kind == journal::WriteKind::kZero) {
      if (h.offset + h.length > cfg_.size ||
          (rec->kind == journal::WriteKind::kWrite && h.payload_len != h.length)) {
        return DataLoss("write log record seq " + std::to_string(h.seq) + " is out of bounds");
      }
      for (uint64_t b = h.offset / cfg_.block_size; b < (h.offset + h.length) / cfg_.block_size; ++b) {
        const uint8_t* p = rec->kind == journal::WriteKind::kWrite
                               ? rec->data.data() + (b * cfg_.block_size - h.offset)
                               : nullptr;
        pending_blocks_[b] = {rec->seq, p};
      }
      pending_bytes_ += rec->data.size();
    }
    queue_.push_back(std::move(rec));
    return Status::Ok();
  };
  auto wlog = journal::SegmentLog::Open(
      {.dir = dir_ + "/wlog", .magic = journal::kWriteLogMagic, .segment_bytes = 64ull << 20,
       .verify_all_payloads = true},
      visit);
  if (!wlog.ok()) return wlog.status().WithContext("volume " + cfg_.name + ": open write log");
  wlog_ = std::move(wlog).value();
  skip_undo_through_ = undo_latest;
  last_seq_ = std::max({checkpoint_seq_, undo_latest, wlog_last});
  applied_seq_ = queue_.empty() ? last_seq_ : queue_.front()->seq - 1;
  last_ts_ns_ = ts;
  if (!queue_.empty()) {
    Logger("volume")->info("volume {}: replaying {} write-log records after seq {}", cfg_.name,
                           queue_.size(), checkpoint_seq_);
  }
  last_checkpoint_ns_ = MonoNowNs();
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

Result<uint64_t> Volume::Admit(journal::WriteKind kind, uint64_t offset, std::vector<uint8_t> data,
                               uint64_t length, uint32_t flags, uint64_t given_seq, int64_t given_ts) {
  // One admission at a time keeps the write log in seq order; the append
  // itself runs outside mu_ so reads and the apply step are not held up.
  std::lock_guard append(append_mu_);
  auto rec = std::make_unique<Record>();
  {
    std::unique_lock lock(mu_);
    // Backpressure: admitted-but-unapplied data is bounded by the cache size.
    space_cv_.wait(lock, [&] {
      return stopping_ || !apply_error_.ok() || pending_bytes_ == 0 ||
             pending_bytes_ + data.size() <= cfg_.cache_bytes;
    });
    if (stopping_) return Unavailable("volume " + cfg_.name + " is closing");
    CONTINUUM_RETURN_IF_ERROR(CheckWritable());
    if (given_seq != 0) {
      // A replica takes the source's seq and time: points mean the same on
      // both sides whatever the clocks of the two hosts say.
      if (given_seq <= last_seq_) return last_seq_;
      rec->seq = given_seq;
      rec->ts_ns = std::max(given_ts, last_ts_ns_);
    } else {
      rec->seq = last_seq_ + 1;
      // Timestamps never go backwards, so time -> seq lookups stay monotonic.
      rec->ts_ns = std::max(WallNowNs(), last_ts_ns_);
    }
  }
  rec->kind = kind;
  rec->offset = offset;
  rec->length = length;
  rec->flags = flags;
  rec->data = std::move(data);
  journal::RecordHeader h;
  h.kind = static_cast<uint16_t>(kind);
  h.seq = rec->seq;
  h.ts_ns = rec->ts_ns;
  h.offset = offset;
  h.length = length;
  h.flags = flags;
  auto loc = wlog_->Append(h, rec->data);
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
  // Invariant: a record becomes visible to reads, the apply step and
  // replication only once it is in the write log.
  last_seq_ = rec->seq;
  last_ts_ns_ = rec->ts_ns;
  if (kind == journal::WriteKind::kWrite || kind == journal::WriteKind::kZero) {
    for (uint64_t b = offset / cfg_.block_size; b < (offset + length) / cfg_.block_size; ++b) {
      const uint8_t* p = kind == journal::WriteKind::kWrite
                             ? rec->data.data() + (b * cfg_.block_size - offset)
                             : nullptr;
      pending_blocks_[b] = {rec->seq, p};
    }
    pending_bytes_ += rec->data.size();
    ++writes_;
    bytes_written_ += length;
  }
  uint64_t seq = rec->seq;
  queue_.push_back(std::move(rec));
  apply_cv_.notify_one();
  admitted_cv_.notify_all();
  return seq;
}

Status Volume::Read(uint64_t offset, std::span<uint8_t> out) {
  if (offset + out.size() > cfg_.size) {
    return Status(StatusCode::kInvalidArgument, "read past the end of volume " + cfg_.name, EINVAL);
  }
  const uint32_t bs = cfg_.block_size;
  if (offset % bs != 0 || out.size() % bs != 0) {
    uint64_t start = offset / bs * bs;
    uint64_t end = (offset + out.size() + bs - 1) / bs * bs;
    std::vector<uint8_t> buf(end - start);
    CONTINUUM_RETURN_IF_ERROR(Read(start, buf));
    std::memcpy(out.data(), buf.data() + (offset - start), out.size());
    return Status::Ok();
  }
  uint64_t nblocks = out.size() / bs;
  std::vector<bool> from_queue(nblocks, false);
  {
    std::lock_guard lock(mu_);
    if (CopyPendingLocked(offset, out, &from_queue) == nblocks) return Status::Ok();
  }
  // Invariant: a block leaves pending_blocks_ only after its mirror write
  // completed, so a block not found there is current in the mirror.
  uint64_t i = 0;
  while (i < nblocks) {
    if (from_queue[i]) {
      ++i;
      continue;
    }
    uint64_t j = i;
    while (j < nblocks && !from_queue[j]) ++j;
    CONTINUUM_RETURN_IF_ERROR(ReadMirror(offset + i * bs, out.subspan(i * bs, (j - i) * bs)));
    i = j;
  }
  return Status::Ok();
}

size_t Volume::CopyPendingLocked(uint64_t offset, std::span<uint8_t> out, std::vector<bool>* found) const {
  const uint32_t bs = cfg_.block_size;
  size_t copied = 0;
  if (pending_blocks_.empty()) return 0;
  for (uint64_t i = 0; i < out.size() / bs; ++i) {
    auto it = pending_blocks_.find(offset / bs + i);
    if (it == pending_blocks_.end()) continue;
    if (it->second.data) {
      std::memcpy(out.data() + i * bs, it->second.data, bs);
    } else {
      std::memset(out.data() + i * bs, 0, bs);
    }
    if (found) (*found)[i] = true;
    ++copied;
  }
  return copied;
}

Status Volume::ReadMirror(uint64_t offset, std::span<uint8_t> out) const {
  Status st = mirror_->PRead(offset, out, /*zero_fill_past_eof=*/true);
  if (!st.ok()) return st.WithContext("volume " + cfg_.name);
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
    std::vector<uint8_t> copy(data.begin() + done, data.begin() + done + n);
    auto seq = Admit(journal::WriteKind::kWrite, offset + done, std::move(copy), n, 0);
    if (!seq.ok()) return seq.status();
    last = *seq;
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
      CONTINUUM_ASSIGN_OR_RETURN(last, Admit(journal::WriteKind::kResync, e.offset + done, {}, n, 0));
      done += n;
    }
  }
  return last;
}

Result<uint64_t> Volume::ReadCurrent(uint64_t offset, std::span<uint8_t> out) {
  // Under mu_ no write can be admitted, so the contents and the seq agree:
  // queued writes are read from the queue, the rest from the mirror.
  std::lock_guard lock(mu_);
  const uint32_t bs = cfg_.block_size;
  if (offset % bs != 0 || out.size() % bs != 0 || offset + out.size() > cfg_.size) {
    return InvalidArgument("volume " + cfg_.name + ": unaligned resync read");
  }
  CONTINUUM_RETURN_IF_ERROR(ReadMirror(offset, out));
  CopyPendingLocked(offset, out, nullptr);
  return last_seq_;
}

Status Volume::AdmitReplicated(const journal::RecordHeader& h, std::vector<uint8_t> data) {
  auto kind = static_cast<journal::WriteKind>(h.kind);
  if (kind != journal::WriteKind::kWrite && kind != journal::WriteKind::kZero &&
      kind != journal::WriteKind::kBookmark) {
    return InvalidArgument("volume " + cfg_.name + ": cannot replicate record kind " + std::to_string(h.kind));
  }
  if (kind != journal::WriteKind::kBookmark &&
      (h.offset % cfg_.block_size != 0 || h.length % cfg_.block_size != 0 || h.offset + h.length > cfg_.size ||
       (kind == journal::WriteKind::kWrite && data.size() != h.length))) {
    return InvalidArgument("volume " + cfg_.name + ": replicated record seq " + std::to_string(h.seq) +
                           " has a bad range");
  }
  auto seq = Admit(kind, h.offset, std::move(data), h.length, h.flags, h.seq, h.ts_ns);
  return seq.status();
}

Status Volume::Flush() {
  {
    std::lock_guard lock(mu_);
    // A failed apply step must surface at the application's next fsync; a
    // full journal (policy block) does not make earlier writes less durable.
    if (!apply_error_.ok()) return CheckWritable();
    ++flushes_;
  }
  // The write log is the redo log: once it is durable, every admitted write
  // survives a crash (recovery re-applies it).
  Status st = wlog_->Sync();
  if (!st.ok()) return st.WithContext("volume " + cfg_.name + ": flush write log");
  return WaitAck(LastSeq());
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
    auto seq = Admit(journal::WriteKind::kZero, pos, {}, n, 0);
    if (!seq.ok()) return seq.status();
    last = *seq;
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
  std::vector<uint8_t> payload(label.begin(), label.end());
  CONTINUUM_ASSIGN_OR_RETURN(uint64_t seq,
                             Admit(journal::WriteKind::kBookmark, 0, std::move(payload), 0, flags));
  CONTINUUM_RETURN_IF_ERROR(Flush());
  CONTINUUM_RETURN_IF_ERROR(WaitApplied(seq));
  return cdp_->ResolveSeq(seq);
}

Status Volume::WaitApplied(uint64_t seq) {
  std::unique_lock lock(mu_);
  applied_cv_.wait(lock, [&] { return applied_seq_ >= seq || !apply_error_.ok() || stopping_; });
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
    std::lock_guard lock(mu_);
    if (!apply_thread_.joinable()) return Status::Ok();
    stopping_ = true;
    apply_cv_.notify_all();
    admitted_cv_.notify_all();
    space_cv_.notify_all();
    applied_cv_.notify_all();
  }
  apply_thread_.join();
  std::lock_guard lock(mu_);
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
    s.pending_bytes = pending_bytes_;
    s.writes = writes_;
    s.bytes_written = bytes_written_;
    s.flushes = flushes_;
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
