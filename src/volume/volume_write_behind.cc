// Journal-first CDP writes (docs/adr/0012-journal-first-cdp-writes.md):
// the write-behind data and its overlay on reads, settling before direct
// mirror changes, and the applier that captures before-images and writes
// the mirror in seq order.

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>

#include "continuum/volume/volume.h"

namespace continuum::volume {

void Volume::WbInsertLocked(uint64_t seq, WriteBehind w) {
  wb_by_offset_.emplace(w.offset, seq);
  wb_max_len_ = std::max(wb_max_len_, w.length);
  write_behind_[seq] = std::move(w);
}

std::map<uint64_t, Volume::WriteBehind>::iterator Volume::WbEraseLocked(
    std::map<uint64_t, WriteBehind>::iterator it) {
  auto [b, e] = wb_by_offset_.equal_range(it->second.offset);
  for (auto x = b; x != e; ++x) {
    if (x->second == it->first) {
      wb_by_offset_.erase(x);
      break;
    }
  }
  return write_behind_.erase(it);
}

std::vector<uint64_t> Volume::WbOverlapsLocked(uint64_t b, uint64_t e, uint64_t below_seq) const {
  std::vector<uint64_t> seqs;
  // An entry that starts more than wb_max_len_ before b ends before it.
  auto it = wb_by_offset_.lower_bound(b > wb_max_len_ ? b - wb_max_len_ : 0);
  for (; it != wb_by_offset_.end() && it->first < e; ++it) {
    if (it->second >= below_seq) continue;
    const WriteBehind& w = write_behind_.at(it->second);
    if (b < w.offset + w.length) seqs.push_back(it->second);
  }
  std::sort(seqs.begin(), seqs.end());
  return seqs;
}

Status Volume::ReadLogical(uint64_t offset, std::span<uint8_t> out, uint64_t below_seq) {
  std::vector<WriteBehind> over;
  const uint64_t end = offset + out.size();
  if (write_behind_max_ > 0) {
    std::lock_guard lock(mu_);
    for (uint64_t seq : WbOverlapsLocked(offset, end, below_seq)) over.push_back(write_behind_.at(seq));
  }
  // The mirror is read only for what the entries leave uncovered.
  std::map<uint64_t, uint64_t> covered;  // begin -> end, disjoint
  for (const auto& w : over) {
    AddRange(covered, std::max(offset, w.offset), std::min(end, w.offset + w.length));
  }
  bool all = covered.size() == 1 && covered.begin()->first == offset && covered.begin()->second == end;
  if (!all) CONTINUUM_RETURN_IF_ERROR(ReadMirror(offset, out));
  // In seq order, so the newest write to a block wins. An entry the applier
  // wrote meanwhile is in the mirror too: overlaying it changes nothing.
  for (const auto& w : over) {
    uint64_t b = std::max(offset, w.offset);
    uint64_t e = std::min(offset + out.size(), w.offset + w.length);
    std::memcpy(out.data() + (b - offset), w.data->data() + (b - w.offset), e - b);
  }
  return Status::Ok();
}

bool Volume::WriteBehindFits(const Op& op) {
  if (write_behind_max_ == 0 || op.kind != journal::WriteKind::kWrite || op.length > write_behind_max_) return false;
  std::lock_guard lock(mu_);
  return write_behind_bytes_ + op.length <= cfg_.write_behind_bytes;
}

void Volume::DropKeptLocked(uint64_t b, uint64_t e, uint64_t below_seq) {
  for (uint64_t seq : WbOverlapsLocked(b, e, below_seq)) {
    auto it = write_behind_.find(seq);
    if (!it->second.applied) continue;
    recent_bytes_ -= it->second.length;
    WbEraseLocked(it);
  }
}

bool Volume::WriteBehindOverlapsLocked(uint64_t b, uint64_t e, bool unsynced) const {
  if (unsynced) {
    return std::any_of(unsynced_.begin(), unsynced_.end(),
                       [&](const auto& u) { return u.second.first < e && b < u.second.second; });
  }
  for (uint64_t seq : WbOverlapsLocked(b, e, UINT64_MAX)) {
    if (!write_behind_.at(seq).applied) return true;
  }
  return false;
}

Status Volume::SettleWriteBehind(uint64_t b, uint64_t e) {
  bool sync;
  {
    std::unique_lock lock(mu_);
    write_behind_cv_.notify_all();  // no need to wait for a flush
    applied_cv_.wait(lock, [&] { return !WriteBehindOverlapsLocked(b, e, false) || !apply_error_.ok(); });
    if (!apply_error_.ok()) return CheckWritable();
    sync = WriteBehindOverlapsLocked(b, e, true);
    // Kept copies of applied entries would hide the change about to come.
    DropKeptLocked(b, e, UINT64_MAX);
  }
  // Recovery re-applies a write-behind record only where no later write may
  // have changed the mirror; so before one does, the earlier data must be
  // durable in the mirror.
  if (!sync) return Status::Ok();
  Status st = SyncMirror();
  if (!st.ok()) return Fail(st.WithContext("volume " + cfg_.name + ": sync mirror"));
  return Status::Ok();
}

Status Volume::SyncMirror() {
  uint64_t upto = 0;
  {
    std::lock_guard lock(mu_);
    if (!unsynced_.empty()) upto = unsynced_.rbegin()->first;
  }
  mirror_dirty_.store(false);
  Status st = mirror_->DataSync();
  if (!st.ok()) {
    mirror_dirty_.store(true);
    return st;
  }
  std::lock_guard lock(mu_);
  unsynced_.erase(unsynced_.begin(), unsynced_.upper_bound(upto));
  return st;
}

Status Volume::CaptureWriteBehindLocked(uint64_t upto, std::map<uint64_t, io::AlignedBuffer>* pre) {
  for (;;) {
    uint64_t seq;
    WriteBehind w;
    {
      std::lock_guard lock(mu_);
      auto it = write_behind_.upper_bound(captured_through_.load());
      if (it == write_behind_.end() || it->first > upto) return Status::Ok();
      seq = it->first;
      w = it->second;
    }
    // Every older write is in the mirror or older entries, and no newer one
    // reached the mirror (it would need this record first): this is the
    // range as of just before `seq`.
    io::AlignedBuffer before;
    if (pre != nullptr && pre->count(seq) != 0) {
      before = std::move((*pre)[seq]);
    } else {
      before.Resize(w.length);
      CONTINUUM_RETURN_IF_ERROR(ReadLogical(w.offset, before.span(), seq));
    }
    CONTINUUM_RETURN_IF_ERROR(cdp_->AppendBefore(seq, w.ts_ns, w.offset / cfg_.block_size, before.span(), true));
    captured_through_ = seq;
  }
}

void Volume::ApplierLoop() {
  // Write-behind writes reach the mirror in seq order, in batches: one undo
  // sync (usually already done by the application's fsync) covers a batch.
  constexpr uint64_t kBatchBytes = 8ull << 20;
  constexpr auto kWaitForFlush = std::chrono::milliseconds(2);
  std::unique_lock lock(mu_);
  auto untaken = [&] { return write_behind_.upper_bound(write_behind_taken_) != write_behind_.end(); };
  for (;;) {
    write_behind_cv_.wait(lock, [&] { return applier_stop_ || (untaken() && apply_error_.ok()); });
    if (applier_stop_ && (!untaken() || !apply_error_.ok())) return;
    // An fsync is usually on its way: its undo sync then serves this batch.
    if (!stopping_ && write_behind_bytes_ < cfg_.write_behind_bytes / 2) {
      uint64_t epoch = flush_epoch_;
      write_behind_cv_.wait_for(lock, kWaitForFlush, [&] {
        return flush_epoch_ != epoch || stopping_ || write_behind_bytes_ >= cfg_.write_behind_bytes / 2;
      });
    }
    std::vector<std::pair<uint64_t, WriteBehind>> batch;
    uint64_t bytes = 0;
    for (auto it = write_behind_.upper_bound(write_behind_taken_); it != write_behind_.end() && bytes < kBatchBytes;
         ++it) {
      batch.emplace_back(it->first, it->second);
      bytes += it->second.length;
    }
    if (batch.empty()) continue;
    write_behind_taken_ = batch.back().first;
    lock.unlock();
    // Before-images are read here, outside the admission lock; the undo
    // records are appended in seq order under it.
    std::map<uint64_t, io::AlignedBuffer> pre;
    Status st;
    for (const auto& [seq, w] : batch) {
      if (seq <= captured_through_.load()) continue;
      io::AlignedBuffer& b = pre[seq];
      b.Resize(w.length);
      st = ReadLogical(w.offset, b.span(), seq);
      if (!st.ok()) break;
    }
    if (st.ok()) {
      std::lock_guard append(append_mu_);
      st = CaptureWriteBehindLocked(batch.back().first, &pre);
    }
    if (st.ok()) st = cdp_->Sync();
    if (!st.ok()) st = st.WithContext("volume " + cfg_.name + ": sync undo journal");
    for (auto& [seq, w] : batch) {
      if (st.ok()) {
        Op op{.kind = journal::WriteKind::kWrite, .offset = w.offset, .length = w.length, .data = w.data};
        st = ApplyToMirror(op, /*undo_synced=*/true);
      }
      if (!st.ok()) break;  // the rest stays write-behind: reads see it, recovery re-applies it
      std::lock_guard done(mu_);
      unsynced_[seq] = {w.offset, w.offset + w.length};
      write_behind_bytes_ -= w.length;
      if (auto it = write_behind_.find(seq); it != write_behind_.end()) {
        it->second.applied = true;
        recent_bytes_ += w.length;
        // Kept entries never overlap: an older one under this one would show
        // through if this one is dropped first (SettleWriteBehind).
        DropKeptLocked(w.offset, w.offset + w.length, seq);
      }
      // Applied entries are the oldest: the map's front.
      while (recent_bytes_ > kRecentBytes && !write_behind_.empty() && write_behind_.begin()->second.applied) {
        recent_bytes_ -= write_behind_.begin()->second.length;
        WbEraseLocked(write_behind_.begin());
      }
      inflight_.erase(seq);
      applied_seq_ = inflight_.empty() ? last_seq_ : *inflight_.begin() - 1;
      applied_cv_.notify_all();
    }
    if (!st.ok()) Fail(st).IgnoreError();
    lock.lock();
  }
}

}  // namespace continuum::volume
