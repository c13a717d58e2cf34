#include "continuum/journal/segment_log.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <vector>

#include "continuum/common/checksum.h"
#include "continuum/common/log.h"
#include "continuum/common/time_util.h"
#include "continuum/io/aligned_buffer.h"

namespace continuum::journal {
namespace {

// Page-cache writeback writes whole pages: a block an append touched is
// written in full.
constexpr uint64_t kSettleBlock = 4096;
uint64_t AlignUp(uint64_t v) { return (v + kSettleBlock - 1) / kSettleBlock * kSettleBlock; }
constexpr std::chrono::nanoseconds kWriteBackInterval = std::chrono::microseconds(200);
constexpr uint64_t kSmallRecordBytes = 64 * 1024;  // PrepareSpare: below this average, zero-fill ahead
constexpr uint64_t kZeroChunk = 1 << 20;
constexpr uint64_t kReadAheadBytes = 1 << 20;
constexpr int64_t kZeroFillRetryNs = 60'000'000'000;

bool ParseSegmentName(const char* name, uint64_t* first_seq) {
  size_t len = std::strlen(name);
  if (len != 24 || std::strcmp(name + 20, ".log") != 0) return false;
  uint64_t v = 0;
  for (int i = 0; i < 20; ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    v = v * 10 + static_cast<uint64_t>(name[i] - '0');
  }
  *first_seq = v;
  return true;
}

// "spare-<n>.log"
bool ParseSpareName(const char* name, uint64_t* n) {
  size_t len = std::strlen(name);
  if (len < 11 || std::strncmp(name, "spare-", 6) != 0 || std::strcmp(name + len - 4, ".log") != 0) return false;
  uint64_t v = 0;
  for (size_t i = 6; i < len - 4; ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    v = v * 10 + static_cast<uint64_t>(name[i] - '0');
  }
  *n = v;
  return true;
}

bool AllZero(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) {
    if (b[i] != 0) return false;
  }
  return true;
}

}  // namespace

std::string SegmentLog::SegmentPath(uint64_t first_seq) const {
  char name[32];
  std::snprintf(name, sizeof(name), "%020" PRIu64 ".log", first_seq);
  return opts_.dir + "/" + name;
}

std::string SegmentLog::SparePath(uint64_t n) const { return opts_.dir + "/spare-" + std::to_string(n) + ".log"; }

Result<std::unique_ptr<SegmentLog>> SegmentLog::Open(const Options& opts, const Visitor& visit) {
  CONTINUUM_RETURN_IF_ERROR(io::MakeDirs(opts.dir, 0700));
  std::unique_ptr<SegmentLog> log(new SegmentLog(opts));
  std::vector<uint64_t> firsts, spares;
  DIR* d = ::opendir(opts.dir.c_str());
  if (d == nullptr) return PosixError("open journal directory " + opts.dir, errno);
  while (struct dirent* e = ::readdir(d)) {
    uint64_t first = 0;
    if (ParseSegmentName(e->d_name, &first)) firsts.push_back(first);
    if (ParseSpareName(e->d_name, &first)) spares.push_back(first);
  }
  ::closedir(d);
  std::sort(firsts.begin(), firsts.end());
  for (uint64_t n : spares) {
    log->next_spare_ = std::max(log->next_spare_, n + 1);
    std::string path = log->SparePath(n);
    if (log->spares_.size() < opts.spare_segments) {
      auto f = io::File::Open(path, O_RDWR);
      if (f.ok()) {
        auto seg = std::make_shared<Segment>();
        seg->file = std::move(f).value();
        log->spares_.push_back({std::move(seg), path});
        continue;
      }
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return PosixError("remove spare segment " + path, errno);
  }
  for (size_t i = 0; i < firsts.size(); ++i) {
    auto seg = std::make_shared<Segment>();
    seg->first_seq = firsts[i];
    CONTINUUM_ASSIGN_OR_RETURN(seg->file, io::File::Open(log->SegmentPath(firsts[i]), O_RDWR));
    CONTINUUM_RETURN_IF_ERROR(log->ScanSegment(seg, i + 1 == firsts.size(), visit));
    if (!log->damage_.empty() && log->damage_.back().next_first_seq == 0 &&
        log->damage_.back().path != seg->file->path()) {
      log->damage_.back().next_first_seq = seg->first_seq;
    }
    log->segments_[seg->first_seq] = seg;
    log->total_bytes_ += seg->bytes;
    if (seg->last_seq > log->last_seq_) log->last_seq_ = seg->last_seq;
  }
  return log;
}

bool SegmentLog::AllBlocksWrittenLocked(const Segment& seg) const { return seg.settled >= opts_.segment_bytes; }

Result<bool> SegmentLog::PrepareSpare() {
  if (!opts_.zero_fill_spares) return false;
  {
    std::lock_guard lock(mu_);
    if (segments_.empty()) return false;
    Segment& newest = *segments_.rbegin()->second;
    // Only while small records arrive: records since the last look, so an
    // idle log (or one of large records) never gets a file of zeros.
    const uint64_t records = newest.records - newest.records_seen;
    const uint64_t bytes = newest.bytes - newest.bytes_seen;
    newest.records_seen = newest.records;
    newest.bytes_seen = newest.bytes;
    if (records == 0 || bytes / records >= kSmallRecordBytes) return false;
    if (spares_.size() >= opts_.spare_segments) {
      // A spare of zeros is waiting while the newest segment still converts
      // unwritten extents: move on to the spare at the next record.
      if (!AllBlocksWrittenLocked(newest) && spares_.back().zeroed) roll_to_spare_ = true;
      return false;
    }
  }
  if (MonoNowNs() < zero_fill_retry_ns_) return false;
  Status st = MakeZeroSpare();
  if (!st.ok()) {
    // A full disk: say so once a minute, not at every maintenance pass.
    zero_fill_retry_ns_ = MonoNowNs() + kZeroFillRetryNs;
    return st;
  }
  std::lock_guard lock(mu_);
  if (!segments_.empty() && !AllBlocksWrittenLocked(*segments_.rbegin()->second)) roll_to_spare_ = true;
  return true;
}

Status SegmentLog::MakeZeroSpare() {
  std::string path;
  {
    std::lock_guard lock(mu_);
    path = SparePath(next_spare_++);
  }
  CONTINUUM_ASSIGN_OR_RETURN(auto file, io::File::Open(path, O_RDWR | O_CREAT | O_EXCL, 0600));
  auto fail = [&](const Status& st) {
    ::unlink(path.c_str());
    return st.WithContext("zero-fill journal spare " + path);
  };
  io::AlignedBuffer zeros(kZeroChunk);
  std::memset(zeros.data(), 0, zeros.size());
  for (uint64_t off = 0; off < opts_.segment_bytes; off += kZeroChunk) {
    const uint64_t n = std::min<uint64_t>(kZeroChunk, opts_.segment_bytes - off);
    Status st = file->PWriteDirect(off, std::span<const uint8_t>(zeros.data(), n));
    if (!st.ok()) return fail(st);
  }
  Status st = file->DataSync();
  if (st.ok()) st = io::SyncDir(opts_.dir);
  if (!st.ok()) return fail(st);
  auto seg = std::make_shared<Segment>();
  seg->file = std::move(file);
  std::lock_guard lock(mu_);
  if (spares_.size() >= opts_.spare_segments) {  // a retired segment got there first
    ::unlink(path.c_str());
    return Status::Ok();
  }
  spares_.push_back({std::move(seg), path, /*zeroed=*/true});
  return Status::Ok();
}

Status SegmentLog::ScanSegment(const std::shared_ptr<Segment>& seg, bool is_last,
                               const Visitor& visit) {
  CONTINUUM_ASSIGN_OR_RETURN(uint64_t size, seg->file->Size());
  uint64_t pos = 0;
  std::vector<uint8_t> payload;
  bool verify = is_last || opts_.verify_all_payloads;
  const uint64_t seed = SegmentSeed(seg->first_seq);
  while (pos + sizeof(RecordHeader) <= size) {
    RecordHeader h;
    CONTINUUM_RETURN_IF_ERROR(seg->file->PRead(pos, {reinterpret_cast<uint8_t*>(&h), sizeof(h)}));
    // A seeded header validates only in the segment it was written to, so the
    // old records of a recycled file end the scan like zeros do.
    if (!HeaderValid(h, opts_.magic, seed)) break;
    if (pos + sizeof(h) + h.payload_len > size) break;
    if (h.kind == kPadKind) {
      pos += sizeof(h) + h.payload_len;  // filler before or after a direct write
      continue;
    }
    if (verify) {
      payload.resize(h.payload_len);
      CONTINUUM_RETURN_IF_ERROR(seg->file->PRead(pos + sizeof(h), payload));
      if (!PayloadValid(h, payload)) break;
    }
    RecordLocation loc{seg, pos + sizeof(h)};
    CONTINUUM_RETURN_IF_ERROR(visit(h, loc));
    seg->last_seq = h.seq;
    seg->last_ts_ns = h.ts_ns;
    pos += sizeof(h) + h.payload_len;
  }
  if (pos != size) {
    if (!is_last) {
      if (opts_.tolerate_damage) {
        Logger("journal")->error("journal segment {} is damaged at offset {}; skipping the rest of it",
                                 seg->file->path(), pos);
        damage_.push_back({seg->file->path(), pos, 0, 0});
        seg->bytes = size;  // never appended to again: it is not the newest
        return Status::Ok();
      }
      return DataLoss("journal segment " + seg->file->path() + " is damaged at offset " +
                      std::to_string(pos) + " (not the newest segment, so this is not a torn write)");
    }
    // Invariant: only the newest segment may end in a torn record (older ones
    // were synced and cut to their records before it was created).
    CONTINUUM_RETURN_IF_ERROR(ClearTail(seg.get(), pos, size));
  }
  seg->bytes = pos;
  return Status::Ok();
}

Status SegmentLog::ClearTail(Segment* seg, uint64_t pos, uint64_t size) {
  // Past the last whole record: a torn write, preallocated space (zeros) or a
  // recycled file's old records. Records written after a torn one may be
  // intact there; they were never acknowledged and must never be found after
  // later appends reach them, so the whole tail is cleared, not just skipped.
  RecordHeader h{};
  uint64_t n = std::min<uint64_t>(sizeof(h), size - pos);
  CONTINUUM_RETURN_IF_ERROR(seg->file->PRead(pos, {reinterpret_cast<uint8_t*>(&h), n}));
  if (HeaderValid(h, opts_.magic, SegmentSeed(seg->first_seq))) {
    Logger("journal")->warn("{}: record at offset {} is torn (not acknowledged); clearing the {} bytes after "
                            "the last whole record", seg->file->path(), pos, size - pos);
  } else if (!AllZero(&h, n) && !opts_.preallocate && opts_.spare_segments == 0) {
    Logger("journal")->warn("{}: clearing {} unreadable bytes after the last whole record at offset {}",
                            seg->file->path(), size - pos, pos);
  }
  if (opts_.preallocate || opts_.spare_segments > 0) {
    // Keep the allocation: zero the range (unwritten extents on ext4/xfs).
    Status st = seg->file->Fallocate(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, pos, size - pos);
    if (st.ok()) return seg->file->Sync();
  }
  CONTINUUM_RETURN_IF_ERROR(seg->file->Truncate(pos));
  return seg->file->Sync();
}

Status SegmentLog::RetireLocked(const std::shared_ptr<Segment>& seg) {
  const std::string& path = seg->file->path();
  if (spares_.size() < opts_.spare_segments) {
    std::string spare = SparePath(next_spare_++);
    if (::rename(path.c_str(), spare.c_str()) == 0) {
      // Readers holding `seg` keep reading through its open descriptors; the
      // file is reused only once they let go (TakeSpareLocked).
      spares_.push_back({seg, spare});
      return Status::Ok();
    }
  }
  if (::unlink(path.c_str()) != 0) return PosixError("remove journal segment " + path, errno);
  return Status::Ok();
}

Result<std::shared_ptr<Segment>> SegmentLog::TakeSpareLocked(uint64_t first_seq) {
  for (auto it = spares_.begin(); it != spares_.end(); ++it) {
    if (it->seg.use_count() != 1) continue;  // a view or reader still reads its old records
    std::string spare_path = it->path;
    spares_.erase(it);
    std::string path = SegmentPath(first_seq);
    if (::rename(spare_path.c_str(), path.c_str()) != 0) {
      return PosixError("reuse spare journal segment " + spare_path + " as " + path, errno);
    }
    // A fresh Segment: readers that held the old one saw only its old records.
    auto seg = std::make_shared<Segment>();
    seg->first_seq = first_seq;
    CONTINUUM_ASSIGN_OR_RETURN(seg->file, io::File::Open(path, O_RDWR));
    // Its former records were written and synced, and it was cut to them when
    // it was sealed: those whole blocks need no metadata when overwritten.
    auto size = seg->file->Size();
    if (size.ok()) seg->settled = *size / kSettleBlock * kSettleBlock;
    return seg;
  }
  return std::shared_ptr<Segment>();
}

Status SegmentLog::StartSegmentLocked(uint64_t first_seq) {
  if (!segments_.empty()) {
    Segment& prev = *segments_.rbegin()->second;
    // A preallocated or recycled file is longer than its records: cut it, so
    // only the newest segment can hold bytes past its last record.
    CONTINUUM_ASSIGN_OR_RETURN(uint64_t size, prev.file->Size());
    if (size > prev.bytes) CONTINUUM_RETURN_IF_ERROR(prev.file->Truncate(prev.bytes));
    // Ordering: the previous segment must be durable before a newer one can
    // hold records, so recovery only ever sees a torn tail in the newest.
    CONTINUUM_RETURN_IF_ERROR(prev.file->DataSync());
  }
  CONTINUUM_ASSIGN_OR_RETURN(auto seg, TakeSpareLocked(first_seq));
  if (!seg) {
    seg = std::make_shared<Segment>();
    seg->first_seq = first_seq;
    CONTINUUM_ASSIGN_OR_RETURN(seg->file,
                               io::File::Open(SegmentPath(first_seq), O_RDWR | O_CREAT | O_EXCL, 0600));
  }
  if (opts_.preallocate) {
    // Best effort: a file system without fallocate just appends.
    Status st = seg->file->Fallocate(0, 0, opts_.segment_bytes);
    if (!st.ok() && st.sys_errno() != EOPNOTSUPP) {
      Logger("journal")->debug("{}: preallocation failed: {}", seg->file->path(), st.message());
    }
    seg->preallocated = st.ok();
    if (!st.ok()) seg->settled = 0;
  }
  CONTINUUM_RETURN_IF_ERROR(io::SyncDir(opts_.dir));
  segments_[first_seq] = seg;
  return Status::Ok();
}

Result<RecordLocation> SegmentLog::Append(RecordHeader h, std::span<const uint8_t> payload,
                                          bool may_start_segment) {
  if (payload.size() > kMaxPayload) return InvalidArgument("journal record payload too large");
  h.magic = opts_.magic;
  h.version = kRecordVersionBound;
  h.payload_len = static_cast<uint32_t>(payload.size());
  h.payload_checksum = Checksum64(payload);  // outside the lock: the costly part
  std::lock_guard lock(mu_);
  uint64_t rec_bytes = sizeof(h) + payload.size();
  if (segments_.empty() ||
      (may_start_segment && segments_.rbegin()->second->bytes > 0 &&
       (segments_.rbegin()->second->bytes + rec_bytes > opts_.segment_bytes || roll_to_spare_))) {
    roll_to_spare_ = false;
    CONTINUUM_RETURN_IF_ERROR(StartSegmentLocked(h.seq));
  }
  auto& seg = segments_.rbegin()->second;
  SealHeaderOnly(&h, SegmentSeed(seg->first_seq));
  // Bookkeeping once `written` bytes holding the record at `at` are in place.
  auto appended = [&](uint64_t at, uint64_t written) {
    RecordLocation loc{seg, at + sizeof(h)};
    seg->bytes += written;
    seg->last_seq = h.seq;
    seg->last_ts_ns = h.ts_ns;
    ++seg->records;
    total_bytes_ += written;
    if (h.seq > last_seq_) last_seq_ = h.seq;
    dirty_ = true;
    return loc;
  };
  if (opts_.direct_payload_bytes > 0 && payload.size() >= opts_.direct_payload_bytes && !direct_failed_) {
    uint64_t rec_offset = 0, written = 0;
    bool unsupported = false;
    Status st = AppendDirectLocked(seg.get(), h, payload, &rec_offset, &written, &unsupported);
    if (st.ok()) return appended(rec_offset, written);
    if (!unsupported) return st;
    direct_failed_ = true;  // no O_DIRECT here (tmpfs): buffered from now on
  }
  // A buffered append over written blocks (a recycled or zero-filled
  // segment) must read the page it starts: read the segment ahead of the
  // appends instead, in large asynchronous reads.
  if (seg->bytes + rec_bytes > seg->warmed && seg->bytes < seg->settled) {
    const uint64_t from = std::max(seg->warmed, seg->bytes / kSettleBlock * kSettleBlock);
    const uint64_t len = std::min(kReadAheadBytes, seg->settled - from);
    (void)::posix_fadvise(seg->file->fd(), static_cast<off_t>(from), static_cast<off_t>(len), POSIX_FADV_WILLNEED);
    seg->warmed = from + len;
  }
  // One pwrite for header + payload keeps a record contiguous in the page cache.
  // Header and payload in one pwritev: no copy of the payload here.
  Status st;
  struct iovec iov[2] = {{&h, sizeof(h)}, {const_cast<uint8_t*>(payload.data()), payload.size()}};
  ssize_t n;
  do {
    n = ::pwritev(seg->file->fd(), iov, payload.empty() ? 1 : 2, static_cast<off_t>(seg->bytes));
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    st = PosixError("write " + seg->file->path() + " at offset " + std::to_string(seg->bytes), errno);
  } else if (static_cast<uint64_t>(n) < rec_bytes) {
    // Short write (rare): finish the rest with plain positional writes.
    std::vector<uint8_t> buf(rec_bytes);
    std::memcpy(buf.data(), &h, sizeof(h));
    if (!payload.empty()) std::memcpy(buf.data() + sizeof(h), payload.data(), payload.size());
    st = seg->file->PWrite(seg->bytes + n, std::span<const uint8_t>(buf).subspan(n));
  }
  if (!st.ok()) {
    // Leave bytes unchanged: the next append overwrites the partial record.
    return st;
  }
  const int64_t now = MonoNowNs();
  if (writeback_on_append_ && now - last_writeback_ns_ >= kWriteBackInterval.count()) {
    last_writeback_ns_ = now;
    // Only starts the writes (a page already under writeback is left for the
    // next call); a failure here is caught by the flush that waits.
    (void)::sync_file_range(seg->file->fd(), static_cast<off64_t>(seg->bytes), static_cast<off64_t>(rec_bytes),
                            SYNC_FILE_RANGE_WRITE);
  }
  return appended(seg->bytes, rec_bytes);
}

namespace {

// A pad record of exactly `bytes` (>= sizeof(RecordHeader)) at `out`.
void FillPad(uint8_t* out, uint64_t bytes, uint32_t magic, uint64_t seq, int64_t ts_ns, uint64_t seed) {
  RecordHeader pad;
  pad.magic = magic;
  pad.version = kRecordVersionBound;
  pad.kind = kPadKind;
  pad.seq = seq;
  pad.ts_ns = ts_ns;
  pad.payload_len = static_cast<uint32_t>(bytes - sizeof(RecordHeader));
  std::memset(out + sizeof(pad), 0, pad.payload_len);
  SealHeader(&pad, {out + sizeof(pad), pad.payload_len}, seed);
  std::memcpy(out, &pad, sizeof(pad));
}

// Bytes of a pad that moves `pos` to a 4 KiB boundary (0 when aligned; at
// least one header otherwise).
uint64_t PadTo4K(uint64_t pos) {
  constexpr uint64_t kA = io::AlignedBuffer::kAlign;
  uint64_t gap = (kA - pos % kA) % kA;
  if (gap != 0 && gap < sizeof(RecordHeader)) gap += kA;
  return gap;
}

}  // namespace

Status SegmentLog::AppendDirectLocked(Segment* seg, const RecordHeader& h, std::span<const uint8_t> payload,
                                      uint64_t* rec_offset, uint64_t* rec_bytes, bool* unsupported) {
  if (!seg->direct) {
    auto f = io::File::Open(seg->file->path(), O_WRONLY | O_DIRECT);
    if (!f.ok()) {
      *unsupported = true;
      return f.status();
    }
    seg->direct = std::move(f).value();
  }
  // Lead pad (buffered, small) up to the boundary.
  uint64_t lead = PadTo4K(seg->bytes);
  if (lead > 0) {
    std::vector<uint8_t> pad(lead);
    FillPad(pad.data(), lead, opts_.magic, h.seq, h.ts_ns, SegmentSeed(seg->first_seq));
    CONTINUUM_RETURN_IF_ERROR(seg->file->PWrite(seg->bytes, pad));
  }
  uint64_t start = seg->bytes + lead;
  uint64_t body = sizeof(h) + payload.size();
  uint64_t tail = PadTo4K(body);
  io::AlignedBuffer& buf = direct_buf_;  // under mu_: one direct append at a time
  buf.Resize(body + tail);
  std::memcpy(buf.data(), &h, sizeof(h));
  std::memcpy(buf.data() + sizeof(h), payload.data(), payload.size());
  if (tail > 0) FillPad(buf.data() + body, tail, opts_.magic, h.seq, h.ts_ns, SegmentSeed(seg->first_seq));
  Status st = seg->direct->PWrite(start, buf.span());
  if (!st.ok()) {
    // Some file systems accept O_DIRECT at open and refuse the write.
    if (st.sys_errno() == EINVAL) *unsupported = true;
    return st;
  }
  *rec_offset = start;
  *rec_bytes = lead + body + tail;
  return Status::Ok();
}

Status SegmentLog::Sync() {
  std::lock_guard sync_lock(sync_mu_);
  std::shared_ptr<Segment> seg;
  uint64_t end = 0;
  {
    std::lock_guard lock(mu_);
    if (!dirty_ || segments_.empty()) return Status::Ok();
    dirty_ = false;
    seg = segments_.rbegin()->second;
    end = seg->bytes;
  }
  // Older segments were synced when the newer one was started.
  Status st = seg->file->DataSync();
  std::lock_guard lock(mu_);
  if (!st.ok()) {
    dirty_ = true;
    return st;
  }
  // Every block the appends up to `end` touched was written whole (a page)
  // and is now committed: later appends into them change no metadata.
  if (seg->preallocated) {
    seg->settled = std::max(seg->settled, std::min(AlignUp(end), opts_.segment_bytes));
  }
  return st;
}

Result<std::optional<SettledWriteBack>> SegmentLog::WriteBackSettled() {
  SettledWriteBack wb;
  {
    std::lock_guard lock(mu_);
    if (segments_.empty()) return std::optional<SettledWriteBack>(SettledWriteBack{});
    wb.segment = segments_.rbegin()->second;
    wb.end = wb.segment->bytes;
    if (!dirty_) return std::optional<SettledWriteBack>(wb);
    if (!wb.segment->preallocated || wb.end > wb.segment->settled) return std::optional<SettledWriteBack>();
  }
  // Appends complete under mu_, so every byte below `end` is in the page
  // cache; write the dirty pages back and wait for the writes to complete.
  int rc;
  do {
    rc = ::sync_file_range(wb.segment->file->fd(), 0, static_cast<off64_t>(wb.end),
                           SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return PosixError("write back " + wb.segment->file->path(), errno);
  return std::optional<SettledWriteBack>(wb);
}

void SegmentLog::MarkDurable(const SettledWriteBack& wb) {
  std::lock_guard lock(mu_);
  if (segments_.empty() || segments_.rbegin()->second != wb.segment) return;  // a newer segment is dirty
  if (wb.segment->bytes == wb.end) dirty_ = false;
}

Status SegmentLog::ReadPayload(const RecordLocation& loc, uint64_t offset_in_payload,
                               std::span<uint8_t> out) const {
  return loc.segment->file->PRead(loc.payload_offset + offset_in_payload, out);
}

Result<std::vector<std::shared_ptr<Segment>>> SegmentLog::TrimThrough(uint64_t seq) {
  std::vector<std::shared_ptr<Segment>> removed;
  std::lock_guard lock(mu_);
  while (segments_.size() > 1) {
    auto it = segments_.begin();
    auto next = std::next(it);
    // All records of `it` are < next->first_seq.
    if (next->second->first_seq > seq + 1) break;
    CONTINUUM_RETURN_IF_ERROR(RetireLocked(it->second));
    total_bytes_ -= it->second->bytes;
    removed.push_back(it->second);
    segments_.erase(it);
  }
  return removed;
}

Result<std::shared_ptr<Segment>> SegmentLog::TrimOldest() {
  std::lock_guard lock(mu_);
  if (segments_.size() <= 1) return std::shared_ptr<Segment>();
  auto it = segments_.begin();
  CONTINUUM_RETURN_IF_ERROR(RetireLocked(it->second));
  auto seg = it->second;
  total_bytes_ -= seg->bytes;
  segments_.erase(it);
  return seg;
}

uint64_t SegmentLog::TotalBytes() const {
  std::lock_guard lock(mu_);
  return total_bytes_;
}

size_t SegmentLog::SpareCount() const {
  std::lock_guard lock(mu_);
  return spares_.size();
}

size_t SegmentLog::SegmentCount() const {
  std::lock_guard lock(mu_);
  return segments_.size();
}

std::shared_ptr<Segment> SegmentLog::Oldest() const {
  std::lock_guard lock(mu_);
  if (segments_.empty()) return nullptr;
  return segments_.begin()->second;
}

std::shared_ptr<Segment> SegmentLog::SegmentFor(uint64_t seq) const {
  std::lock_guard lock(mu_);
  auto it = segments_.upper_bound(seq);
  if (it == segments_.begin()) return nullptr;
  return std::prev(it)->second;
}

std::shared_ptr<Segment> SegmentLog::SegmentAfter(const Segment& seg) const {
  std::lock_guard lock(mu_);
  auto it = segments_.upper_bound(seg.first_seq);
  if (it == segments_.end()) return nullptr;
  return it->second;
}

uint64_t SegmentLog::BytesOf(const Segment& seg) const {
  std::lock_guard lock(mu_);
  return seg.bytes;
}

uint64_t SegmentLog::LastSeq() const {
  std::lock_guard lock(mu_);
  return last_seq_;
}

}  // namespace continuum::journal
