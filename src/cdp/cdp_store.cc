#include "continuum/cdp/cdp_store.h"

#include <algorithm>
#include <cctype>
#include <cstring>

#include <nlohmann/json.hpp>

#include "continuum/common/json_field.h"
#include "continuum/common/log.h"
#include "continuum/common/time_util.h"
#include "continuum/io/file.h"

namespace continuum::cdp {
namespace {

bool AllZero(std::span<const uint8_t> data) {
  // Word-at-a-time scan; blocks are 4 KiB aligned multiples.
  const uint8_t* p = data.data();
  size_t n = data.size();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w != 0) return false;
  }
  for (; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

std::string PointText(const Point& p) {
  return FormatRfc3339(p.ts_ns) + " (seq:" + std::to_string(p.seq) + ")";
}

}  // namespace

Result<std::unique_ptr<CdpStore>> CdpStore::Open(const Options& opts) {
  std::unique_ptr<CdpStore> store(new CdpStore(opts));
  CONTINUUM_RETURN_IF_ERROR(io::MakeDirs(opts.dir, 0700));
  CONTINUUM_RETURN_IF_ERROR(store->LoadBase());
  // Records of one seq become visible only once its end-of-seq record is
  // seen: a crash between appends leaves a partial seq that the apply step
  // writes again in full (with the same before-image, since the mirror was
  // not yet written).
  std::vector<Extent> partial;
  std::vector<Bookmark> partial_bm;
  CdpStore* s = store.get();
  journal::SegmentLog::Options lo{
      .dir = opts.dir + "/undo",
      .magic = journal::kUndoMagic,
      .segment_bytes = std::clamp<uint64_t>(opts.journal_bytes / 8, 1ull << 20, 64ull << 20),
      .tolerate_damage = true,
      // Before-images of large writes skip the page cache (ADR 0005).
      .direct_payload_bytes = 64 * 1024,
      // Small records (zero before-images, bookmarks) need no block
      // allocation in a preallocated segment; data records overwrite written
      // blocks only in a reused one (ADR 0006).
      .preallocate = true,
      .spare_segments = 1,
      // ... and with zero-filled spares, small records overwrite written
      // blocks from the first segment on (ADR 0011).
      .zero_fill_spares = true,
  };
  auto visit = [&](const journal::RecordHeader& h, const journal::RecordLocation& loc) -> Status {
    if (!partial.empty() && partial.back().seq != h.seq) partial.clear();
    if (!partial_bm.empty() && partial_bm.back().seq != h.seq) partial_bm.clear();
    if (h.seq <= s->base_.seq) return Status::Ok();  // trimmed logically, file not yet removed
    auto kind = static_cast<journal::UndoKind>(h.kind);
    if (kind == journal::UndoKind::kBookmark) {
      std::string label(h.payload_len, '\0');
      CONTINUUM_RETURN_IF_ERROR(
          loc.segment->file->PRead(loc.payload_offset, {reinterpret_cast<uint8_t*>(label.data()), label.size()}));
      partial_bm.push_back({h.seq, h.ts_ns, label, (h.flags & journal::kFlagConsistent) != 0,
                            (h.flags & journal::kFlagRollbackMark) != 0});
    } else if (kind == journal::UndoKind::kOldData || kind == journal::UndoKind::kOldZero) {
      partial.push_back({h.seq, h.ts_ns, h.offset / opts.block_size,
                         static_cast<uint32_t>(h.length / opts.block_size),
                         kind == journal::UndoKind::kOldZero, loc});
    } else {
      return DataLoss("undo journal " + loc.segment->file->path() + ": unknown record kind " +
                      std::to_string(h.kind));
    }
    if (h.flags & journal::kFlagEndOfSeq) {
      for (auto& e : partial) s->index_.push_back(std::move(e));
      for (auto& b : partial_bm) s->bookmarks_.push_back(std::move(b));
      partial.clear();
      partial_bm.clear();
      s->latest_ = {h.seq, h.ts_ns};
    }
    return Status::Ok();
  };
  auto log = journal::SegmentLog::Open(lo, visit);
  if (!log.ok()) return log.status().WithContext("open undo journal");
  store->log_ = std::move(log).value();
  // A damaged older segment loses the before-images it held: the points before
  // the next intact segment cannot be rebuilt, so the oldest point moves there.
  for (const auto& d : store->log_->Damage()) {
    if (d.next_first_seq == 0 || d.next_first_seq - 1 <= store->base_.seq) continue;
    Point nb{d.next_first_seq - 1, store->latest_.ts_ns};
    auto it = std::partition_point(store->index_.begin(), store->index_.end(),
                                   [&](const Extent& e) { return e.seq < d.next_first_seq; });
    if (it != store->index_.end()) nb.ts_ns = it->ts_ns;
    store->base_ = nb;
    CONTINUUM_RETURN_IF_ERROR(store->SaveBase());
    store->open_events_.push_back(
        {"journal_damaged", "undo journal " + d.path + " is damaged at offset " + std::to_string(d.offset) +
                                "; points before " + PointText(nb) + " are no longer restorable"});
  }
  while (!store->index_.empty() && store->index_.front().seq <= store->base_.seq) store->index_.pop_front();
  std::erase_if(store->bookmarks_, [&](const Bookmark& b) { return b.seq < store->base_.seq; });
  if (store->latest_.seq < store->base_.seq) store->latest_ = store->base_;
  return store;
}

Status CdpStore::LoadBase() {
  std::string path = opts_.dir + "/base.json";
  base_ = {0, opts_.created_ts_ns};
  if (!io::PathExists(path)) return Status::Ok();
  CONTINUUM_ASSIGN_OR_RETURN(std::string text, io::ReadFileToString(path));
  auto j = nlohmann::json::parse(text, nullptr, false);
  auto seq = JsonField<uint64_t>(j, "seq", UINT64_MAX);
  auto ts = JsonField<int64_t>(j, "ts_ns", INT64_MIN);
  if (!seq.ok() || !ts.ok() || *seq == UINT64_MAX || *ts == INT64_MIN) {
    return DataLoss("cannot parse " + path + ": the oldest restorable point is unknown");
  }
  base_ = {*seq, *ts};
  return Status::Ok();
}

Status CdpStore::SaveBase() {
  nlohmann::json j{{"seq", base_.seq}, {"ts_ns", base_.ts_ns}};
  return io::WriteFileAtomic(opts_.dir + "/base.json", j.dump() + "\n");
}

Status CdpStore::AppendBefore(uint64_t seq, int64_t ts_ns, uint64_t first_block,
                              std::span<const uint8_t> old_data, bool end_of_seq) {
  const uint32_t bs = opts_.block_size;
  size_t nblocks = old_data.size() / bs;
  size_t i = 0;
  while (i < nblocks) {
    bool zero = AllZero(old_data.subspan(i * bs, bs));
    size_t j = i + 1;
    while (j < nblocks && AllZero(old_data.subspan(j * bs, bs)) == zero) ++j;
    journal::RecordHeader h;
    h.kind = static_cast<uint16_t>(zero ? journal::UndoKind::kOldZero : journal::UndoKind::kOldData);
    h.seq = seq;
    h.ts_ns = ts_ns;
    h.offset = (first_block + i) * bs;
    h.length = (j - i) * bs;
    bool last = j == nblocks;
    h.flags = (last && end_of_seq) ? journal::kFlagEndOfSeq : 0;
    std::span<const uint8_t> payload = zero ? std::span<const uint8_t>() : old_data.subspan(i * bs, (j - i) * bs);
    // Invariant: all records of one seq live in one segment, so trimming a
    // segment never leaves half a before-image behind.
    bool may_roll = open_seq_ != seq;
    open_seq_ = seq;
    auto loc = log_->Append(h, payload, may_roll);
    if (!loc.ok()) return loc.status().WithContext("append to undo journal");
    std::lock_guard lock(mu_);  // Publish may run on another writer's thread
    unpublished_.push_back({seq, ts_ns, first_block + i, static_cast<uint32_t>(j - i), zero, *loc});
    i = j;
  }
  return Status::Ok();
}

Status CdpStore::AppendBookmark(uint64_t seq, int64_t ts_ns, const std::string& label,
                                uint32_t flags) {
  journal::RecordHeader h;
  h.kind = static_cast<uint16_t>(journal::UndoKind::kBookmark);
  h.seq = seq;
  h.ts_ns = ts_ns;
  h.flags = flags | journal::kFlagEndOfSeq;
  bool may_roll = open_seq_ != seq;
  open_seq_ = seq;
  auto loc = log_->Append(h, {reinterpret_cast<const uint8_t*>(label.data()), label.size()}, may_roll);
  if (!loc.ok()) return loc.status().WithContext("append bookmark to undo journal");
  std::lock_guard lock(mu_);
  unpublished_bookmarks_.push_back({seq, ts_ns, label, (flags & journal::kFlagConsistent) != 0,
                                    (flags & journal::kFlagRollbackMark) != 0});
  last_unpublished_ = {seq, ts_ns};
  return Status::Ok();
}

Status CdpStore::Sync() { return log_->Sync(); }

void CdpStore::SetWriteBackOnAppend(bool on) { log_->SetWriteBackOnAppend(on); }

Result<bool> CdpStore::PrepareSpare() { return log_->PrepareSpare(); }

Status CdpStore::Rebase(const Point& p) {
  std::lock_guard lock(mu_);
  if (!index_.empty() || !bookmarks_.empty() || !unpublished_.empty() || !unpublished_bookmarks_.empty() ||
      latest_.seq > p.seq) {
    return FailedPrecondition("undo journal " + opts_.dir + " already holds points: cannot seed it at seq:" +
                              std::to_string(p.seq));
  }
  base_ = p;
  latest_ = p;
  last_unpublished_ = p;
  return SaveBase();
}

void CdpStore::Publish() {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<ViewMap>> live;
  for (auto it = views_.begin(); it != views_.end();) {
    if (auto v = it->lock()) {
      live.push_back(std::move(v));
      ++it;
    } else {
      it = views_.erase(it);
    }
  }
  for (auto& e : unpublished_) {
    for (auto& v : live) AddToMapLocked(v.get(), e);
    if (e.seq > latest_.seq) latest_ = {e.seq, e.ts_ns};
    index_.push_back(std::move(e));
  }
  for (auto& b : unpublished_bookmarks_) {
    if (b.seq > latest_.seq) latest_ = {b.seq, b.ts_ns};
    bookmarks_.push_back(std::move(b));
  }
  if (last_unpublished_.seq > latest_.seq) latest_ = last_unpublished_;
  unpublished_.clear();
  unpublished_bookmarks_.clear();
}

void CdpStore::NoteSeq(uint64_t seq, int64_t ts_ns) {
  std::lock_guard lock(mu_);
  last_unpublished_ = {seq, ts_ns};
}

void CdpStore::AddToMapLocked(ViewMap* map, const Extent& e) const {
  if (e.seq <= map->point_seq) return;
  const uint32_t bs = opts_.block_size;
  for (uint32_t i = 0; i < e.nblocks; ++i) {
    BlockLoc loc;
    loc.zero = e.zero;
    if (!e.zero) {
      loc.segment = e.loc.segment;
      loc.offset = e.loc.payload_offset + static_cast<uint64_t>(i) * bs;
    }
    // Maps are filled in seq order, so the first entry for a block is the
    // oldest before-image newer than the point: keep it.
    map->blocks.try_emplace(e.first_block + i, std::move(loc));
  }
}

Result<std::vector<CdpEvent>> CdpStore::TrimOldestLocked(const char* why) {
  std::vector<CdpEvent> events;
  auto oldest = log_->Oldest();
  if (!oldest || log_->SegmentCount() <= 1) return events;
  Point new_base{oldest->last_seq, oldest->last_ts_ns};
  if (new_base.seq > base_.seq) {
    Point old = base_;
    base_ = new_base;
    // Ordering: record the new oldest point before removing the records, so
    // a crash in between never offers a point whose before-images are gone.
    Status st = SaveBase();
    if (!st.ok()) {
      base_ = old;
      return st;
    }
  }
  auto removed = log_->TrimOldest();
  if (!removed.ok()) return removed.status();
  while (!index_.empty() && index_.front().seq <= base_.seq) index_.pop_front();
  bookmarks_.erase(std::remove_if(bookmarks_.begin(), bookmarks_.end(),
                                  [&](const Bookmark& b) { return b.seq < base_.seq; }),
                   bookmarks_.end());
  events.push_back({why, std::string("oldest restorable point is now ") + PointText(base_)});
  return events;
}

Result<std::vector<CdpEvent>> CdpStore::EnforceRetention(int64_t now_ns) {
  std::vector<CdpEvent> events;
  std::lock_guard lock(mu_);
  bool was_blocked = writes_blocked_;
  while (log_->SegmentCount() > 1) {
    auto oldest = log_->Oldest();
    bool expired = opts_.retention_ns > 0 && oldest->last_ts_ns < now_ns - opts_.retention_ns;
    bool over = log_->TotalBytes() > opts_.journal_bytes;
    if (!expired && !over) break;
    const char* why = "journal_trimmed";
    if (!expired && opts_.retention_ns > 0) {
      if (opts_.full_policy == FullPolicy::kBlock) break;
      why = "retention_shortened";
    }
    CONTINUUM_ASSIGN_OR_RETURN(auto evs, TrimOldestLocked(why));
    if (evs.empty()) break;
    for (auto& e : evs) events.push_back(std::move(e));
  }
  writes_blocked_ = opts_.full_policy == FullPolicy::kBlock && opts_.retention_ns > 0 &&
                    log_->TotalBytes() > opts_.journal_bytes;
  if (writes_blocked_ && !was_blocked) {
    events.push_back({"journal_full",
                      "journal is full (" + std::to_string(log_->TotalBytes()) + " of " +
                          std::to_string(opts_.journal_bytes) +
                          " bytes) and every point is inside the retention window: writes are "
                          "refused (policy block); raise --journal-size or shorten --retention"});
  }
  if (!writes_blocked_ && was_blocked) {
    events.push_back({"journal_unblocked", "journal has room again: writes are accepted"});
  }
  return events;
}

bool CdpStore::WritesBlocked() const {
  std::lock_guard lock(mu_);
  return writes_blocked_;
}

Point CdpStore::Oldest() const {
  std::lock_guard lock(mu_);
  return base_;
}

Point CdpStore::Latest() const {
  std::lock_guard lock(mu_);
  return latest_;
}

Result<Point> CdpStore::ResolveTime(int64_t ts_ns) const {
  std::lock_guard lock(mu_);
  if (ts_ns < base_.ts_ns) {
    return OutOfRange("point " + FormatRfc3339(ts_ns) +
                      " is before the oldest restorable point " + PointText(base_));
  }
  // Timestamps are non-decreasing with seq (the pipeline enforces it).
  auto it = std::partition_point(index_.begin(), index_.end(),
                                 [&](const Extent& e) { return e.ts_ns <= ts_ns; });
  Point p = base_;
  if (it != index_.begin()) {
    auto prev = std::prev(it);
    p = {prev->seq, prev->ts_ns};
  }
  for (const auto& b : bookmarks_) {
    if (b.ts_ns <= ts_ns && b.seq > p.seq) p = {b.seq, b.ts_ns};
  }
  return p;
}

Result<Point> CdpStore::ResolveSeq(uint64_t seq) const {
  std::lock_guard lock(mu_);
  if (seq < base_.seq) {
    return OutOfRange("seq:" + std::to_string(seq) + " is before the oldest restorable point " +
                      PointText(base_));
  }
  if (seq > latest_.seq) {
    return OutOfRange("seq:" + std::to_string(seq) + " is newer than the latest point " +
                      PointText(latest_));
  }
  if (seq == base_.seq) return base_;
  auto it = std::partition_point(index_.begin(), index_.end(),
                                 [&](const Extent& e) { return e.seq < seq; });
  if (it != index_.end() && it->seq == seq) return Point{seq, it->ts_ns};
  for (const auto& b : bookmarks_) {
    if (b.seq == seq) return Point{seq, b.ts_ns};
  }
  // A seq without a record of its own (e.g. an empty write): use the time of
  // the newest record before it.
  int64_t ts = base_.ts_ns;
  if (it != index_.begin()) ts = std::prev(it)->ts_ns;
  return Point{seq, ts};
}

Result<Point> CdpStore::ResolveBookmark(const std::string& label) const {
  std::lock_guard lock(mu_);
  for (auto it = bookmarks_.rbegin(); it != bookmarks_.rend(); ++it) {
    if (it->label == label) return Point{it->seq, it->ts_ns};
  }
  return NotFound("no bookmark '" + label + "' (see 'continuum bookmark list')");
}

Result<Point> CdpStore::ResolvePoint(const std::string& text) const {
  if (text.rfind("seq:", 0) == 0) {
    std::string n = text.substr(4);
    if (n.empty() || !std::all_of(n.begin(), n.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
      return InvalidArgument("invalid point '" + text + "': expected seq:N with N a number");
    }
    return ResolveSeq(std::stoull(n));
  }
  if (text == "latest" || text == "now") return Latest();
  bool looks_like_time = text.size() >= 10 && std::isdigit(static_cast<unsigned char>(text[0])) &&
                         text[4] == '-' && text[7] == '-';
  if (looks_like_time) {
    CONTINUUM_ASSIGN_OR_RETURN(int64_t ts, ParseRfc3339(text));
    return ResolveTime(ts);
  }
  auto b = ResolveBookmark(text);
  if (!b.ok() && b.status().code() == StatusCode::kNotFound) {
    return NotFound("point '" + text +
                    "' is not a bookmark, an RFC 3339 time (2026-11-21T10:00:00.123Z) or seq:N");
  }
  return b;
}

std::vector<Bookmark> CdpStore::Bookmarks() const {
  std::lock_guard lock(mu_);
  return bookmarks_;
}

bool CdpStore::HasBookmark(const std::string& label) const {
  std::lock_guard lock(mu_);
  for (const auto& b : bookmarks_) {
    if (b.label == label) return true;
  }
  return false;
}

Result<std::shared_ptr<ViewMap>> CdpStore::OpenViewMap(uint64_t seq) {
  std::lock_guard lock(mu_);
  if (seq < base_.seq) {
    return OutOfRange("seq:" + std::to_string(seq) + " is before the oldest restorable point " +
                      PointText(base_));
  }
  auto map = std::make_shared<ViewMap>();
  map->point_seq = seq;
  auto it = std::partition_point(index_.begin(), index_.end(),
                                 [&](const Extent& e) { return e.seq <= seq; });
  size_t blocks = 0;
  for (auto j = it; j != index_.end(); ++j) blocks += j->nblocks;
  map->blocks.reserve(std::min<size_t>(blocks, 1u << 24));
  for (; it != index_.end(); ++it) AddToMapLocked(map.get(), *it);
  views_.push_back(map);
  return map;
}

void CdpStore::CloseViewMap(const std::shared_ptr<ViewMap>& map) {
  std::lock_guard lock(mu_);
  views_.erase(std::remove_if(views_.begin(), views_.end(),
                              [&](const std::weak_ptr<ViewMap>& w) {
                                auto p = w.lock();
                                return !p || p == map;
                              }),
               views_.end());
}

Status CdpStore::ReadBlock(const BlockLoc& loc, std::span<uint8_t> out) const {
  if (loc.zero) {
    std::fill(out.begin(), out.end(), 0);
    return Status::Ok();
  }
  return loc.segment->file->PRead(loc.offset, out);
}

uint64_t CdpStore::JournalBytes() const { return log_->TotalBytes(); }

size_t CdpStore::ExtentCount() const {
  std::lock_guard lock(mu_);
  return index_.size();
}

void CdpStore::SetRetention(int64_t retention_ns, uint64_t journal_bytes, FullPolicy policy) {
  std::lock_guard lock(mu_);
  opts_.retention_ns = retention_ns;
  opts_.journal_bytes = journal_bytes;
  opts_.full_policy = policy;
}

}  // namespace continuum::cdp
