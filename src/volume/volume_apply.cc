// The apply step of Volume: moves admitted writes from the queue into the
// undo journal and the mirror, and checkpoints.

#include <fcntl.h>
#include <malloc.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

#include "continuum/common/log.h"
#include "continuum/common/time_util.h"
#include "continuum/volume/volume.h"

namespace continuum::volume {
namespace {
constexpr uint64_t kBatchBytes = 16ull << 20;
constexpr size_t kBatchRecords = 1024;
constexpr int64_t kCheckpointIntervalNs = 1'000'000'000;
constexpr uint64_t kCheckpointWlogBytes = 256ull << 20;
}  // namespace

void Volume::ApplyLoop() {
  for (;;) {
    std::vector<Record*> batch;
    bool stop = false;
    {
      std::unique_lock lock(mu_);
      apply_cv_.wait_for(lock, std::chrono::milliseconds(200),
                         [&] { return stopping_ || !queue_.empty(); });
      stop = stopping_;
      uint64_t bytes = 0;
      // Records stay owned by queue_ until applied; only this thread pops.
      for (auto& rec : queue_) {
        if (batch.size() >= kBatchRecords || (bytes > 0 && bytes + rec->data.size() > kBatchBytes)) break;
        batch.push_back(rec.get());
        bytes += rec->data.size();
      }
      if (!apply_error_.ok()) batch.clear();
    }
    if (!batch.empty()) {
      Status st = ApplyBatch(batch);
      if (!st.ok()) {
        Emit("apply_failed", st.message() + "; writes are refused until the agent is restarted "
                                            "(the write log keeps every acknowledged write)");
        std::lock_guard lock(mu_);
        apply_error_ = st;
        space_cv_.notify_all();
        applied_cv_.notify_all();
        continue;
      }
      {
        std::lock_guard lock(mu_);
        for (Record* rec : batch) {
          if (rec->kind == journal::WriteKind::kWrite || rec->kind == journal::WriteKind::kZero) {
            for (uint64_t b = rec->offset / cfg_.block_size;
                 b < (rec->offset + rec->length) / cfg_.block_size; ++b) {
              auto it = pending_blocks_.find(b);
              if (it != pending_blocks_.end() && it->second.seq == rec->seq) pending_blocks_.erase(it);
            }
            pending_bytes_ -= rec->data.size();
          }
          applied_seq_ = rec->seq;
          queue_.pop_front();  // == rec
        }
        space_cv_.notify_all();
        applied_cv_.notify_all();
      }
    }
    bool idle;
    {
      std::lock_guard lock(mu_);
      idle = queue_.empty();
      if (!apply_error_.ok()) {
        if (stop) return;
        continue;
      }
    }
    int64_t now = MonoNowNs();
    bool journal_over = cdp_ && cdp_->JournalBytes() > cdp_->JournalLimit();
    if (idle && batch.size() > 0) trim_memory_ = true;
    if (idle && trim_memory_ && now - last_checkpoint_ns_ > kCheckpointIntervalNs) {
      // Record buffers freed by the apply step sit in malloc's arenas (and
      // stay locked under mlockall) until trimmed: give them back when idle.
      ::malloc_trim(0);
      trim_memory_ = false;
    }
    if ((idle && stop) || now - last_checkpoint_ns_ > kCheckpointIntervalNs ||
        wlog_->TotalBytes() > kCheckpointWlogBytes || (journal_over && !batch.empty())) {
      Status st = Checkpoint();
      if (!st.ok()) Emit("checkpoint_failed", st.message());
      last_checkpoint_ns_ = now;
    }
    if (stop && idle) return;
  }
}

Status Volume::ApplyBatch(std::vector<Record*>& batch) {
  const uint32_t bs = cfg_.block_size;
  // The write log is not synced here: an undo record that outlives its
  // (unsynced, so never acknowledged) write-log record after a crash only
  // describes a write that may or may not have reached the mirror; views
  // before it stay exact, and recovery numbers new writes after it.
  if (cdp_) {
    // Before-images within a batch must see earlier writes of the same batch,
    // which are not in the mirror yet.
    std::unordered_map<uint64_t, const uint8_t*> overlay;  // nullptr = zeros
    std::vector<uint8_t> old;
    for (Record* rec : batch) {
      if (rec->seq <= skip_undo_through_) continue;
      if (rec->kind == journal::WriteKind::kBookmark) {
        std::string label(rec->data.begin(), rec->data.end());
        CONTINUUM_RETURN_IF_ERROR(cdp_->AppendBookmark(rec->seq, rec->ts_ns, label, rec->flags));
        continue;
      }
      if (rec->kind == journal::WriteKind::kResync) {
        cdp_->NoteSeq(rec->seq, rec->ts_ns);  // contents unchanged: nothing to undo
        continue;
      }
      uint64_t first = rec->offset / bs;
      uint64_t nblocks = rec->length / bs;
      // Large zero ranges are captured in 4 MiB pieces to bound memory.
      constexpr uint64_t kPiece = (4ull << 20);
      for (uint64_t done = 0; done < nblocks;) {
        uint64_t n = std::min<uint64_t>(kPiece / bs, nblocks - done);
        old.resize(n * bs);
        CONTINUUM_RETURN_IF_ERROR(ReadMirror((first + done) * bs, old));
        if (!overlay.empty()) {
          for (uint64_t i = 0; i < n; ++i) {
            auto it = overlay.find(first + done + i);
            if (it == overlay.end()) continue;
            if (it->second) {
              std::memcpy(old.data() + i * bs, it->second, bs);
            } else {
              std::memset(old.data() + i * bs, 0, bs);
            }
          }
        }
        bool last = done + n == nblocks;
        CONTINUUM_RETURN_IF_ERROR(cdp_->AppendBefore(rec->seq, rec->ts_ns, first + done, old, last));
        done += n;
      }
      if (nblocks == 0) cdp_->NoteSeq(rec->seq, rec->ts_ns);
      for (uint64_t i = 0; i < nblocks; ++i) {
        overlay[first + i] =
            rec->kind == journal::WriteKind::kWrite ? rec->data.data() + i * bs : nullptr;
      }
    }
    // Ordering: undo durable before the mirror changes.
    CONTINUUM_RETURN_IF_ERROR(cdp_->Sync());
  }
  std::unique_lock mirror_lock(mirror_mu_);
  if (cdp_) cdp_->Publish();
  for (Record* rec : batch) {
    if (rec->kind == journal::WriteKind::kWrite) {
      Status st = mirror_->PWrite(rec->offset, rec->data);
      if (!st.ok()) return st.WithContext("volume " + cfg_.name + ": write mirror");
    } else if (rec->kind == journal::WriteKind::kZero) {
      CONTINUUM_RETURN_IF_ERROR(ZeroMirror(rec->offset, rec->length));
    }
  }
  mirror_lock.unlock();
  for (Record* rec : batch) {
    if (rec->kind == journal::WriteKind::kWrite || rec->kind == journal::WriteKind::kZero) {
      tracker_->Mark(rec->offset, rec->length);
    }
  }
  return Status::Ok();
}

Status Volume::ZeroMirror(uint64_t offset, uint64_t length) {
  if (mirror_is_blockdev_) {
    uint64_t range[2] = {offset, length};
    if (::ioctl(mirror_->fd(), BLKZEROOUT, range) == 0) return Status::Ok();
  } else {
    // Punching a hole keeps a file-backed mirror sparse.
    if (::fallocate(mirror_->fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    static_cast<off_t>(offset), static_cast<off_t>(length)) == 0) {
      return Status::Ok();
    }
  }
  std::vector<uint8_t> zeros(std::min<uint64_t>(length, 1ull << 20), 0);
  for (uint64_t done = 0; done < length;) {
    uint64_t n = std::min<uint64_t>(zeros.size(), length - done);
    Status st = mirror_->PWrite(offset + done, {zeros.data(), n});
    if (!st.ok()) return st.WithContext("volume " + cfg_.name + ": zero mirror");
    done += n;
  }
  return Status::Ok();
}

Status Volume::Checkpoint() {
  uint64_t applied;
  {
    std::lock_guard lock(mu_);
    applied = applied_seq_;
  }
  if (cdp_) {
    auto events = cdp_->EnforceRetention(WallNowNs());
    if (!events.ok()) {
      Emit("retention_failed", events.status().message());
    } else {
      for (const auto& e : *events) Emit(e.kind, e.message);
    }
  }
  if (applied == checkpoint_seq_) return TrimWriteLog(applied);
  // Ordering: mirror durable -> bitmaps saved (covering `applied`) ->
  // checkpoint names `applied` -> write-log records through it removed.
  Status st = mirror_->DataSync();
  if (!st.ok()) return st.WithContext("volume " + cfg_.name + ": sync mirror");
  CONTINUUM_RETURN_IF_ERROR(tracker_->Save(applied));
  nlohmann::json j{{"applied_seq", applied}, {"ts_ns", WallNowNs()}};
  CONTINUUM_RETURN_IF_ERROR(io::WriteFileAtomic(dir_ + "/checkpoint.json", j.dump() + "\n"));
  checkpoint_seq_ = applied;
  skip_undo_through_ = std::min(skip_undo_through_, applied);
  return TrimWriteLog(applied);
}

Status Volume::TrimWriteLog(uint64_t applied) {
  // Replication targets may still need records the mirror already has.
  uint64_t keep_after = std::min(applied, checkpoint_seq_);
  {
    std::lock_guard lock(mu_);
    std::erase_if(cursors_, [](const std::weak_ptr<StreamCursor>& w) { return w.expired(); });
    for (const auto& w : cursors_) {
      if (auto c = w.lock()) keep_after = std::min<uint64_t>(keep_after, c->acked.load());
    }
  }
  auto trimmed = wlog_->TrimThrough(keep_after);
  if (!trimmed.ok()) return trimmed.status();
  return Status::Ok();
}

}  // namespace continuum::volume
