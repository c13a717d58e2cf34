// Background upkeep of Volume: checkpoints, retention, write-log trimming,
// releasing replication-ring entries every target has acknowledged.

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
constexpr int64_t kCheckpointIntervalNs = 1'000'000'000;
constexpr uint64_t kCheckpointWlogBytes = 256ull << 20;
}  // namespace

void Volume::MaintenanceLoop() {
  for (;;) {
    bool stop;
    {
      std::unique_lock lock(mu_);
      maint_cv_.wait_for(lock, std::chrono::milliseconds(200), [&] { return stopping_; });
      stop = stopping_;
      PurgeRingLocked();
    }
    int64_t now = MonoNowNs();
    uint64_t writes;
    {
      std::lock_guard lock(mu_);
      writes = writes_;
    }
    bool busy = writes != writes_at_last_checkpoint_;
    if (busy) trim_memory_ = true;
    bool journal_over = cdp_ && cdp_->JournalBytes() > cdp_->JournalLimit();
    if (stop || now - last_checkpoint_ns_ > kCheckpointIntervalNs ||
        wlog_->TotalBytes() > kCheckpointWlogBytes || journal_over) {
      Status st = Checkpoint();
      if (!st.ok()) Emit("checkpoint_failed", st.message());
      last_checkpoint_ns_ = now;
      if (!busy && trim_memory_) {
        // Freed write buffers sit in malloc's arenas (and stay locked under
        // mlockall) until trimmed: give them back once writes pause.
        ::malloc_trim(0);
        trim_memory_ = false;
      }
      writes_at_last_checkpoint_ = writes;
    }
    if (stop) return;
    // Zero-filled spares ahead of the next segment (ADR 0011); a failure (a
    // full disk) only costs speed: segments are then allocated as they fill.
    for (Result<bool> made : {PrepareWlogSpare(), PrepareUndoSpare()}) {
      if (!made.ok()) Logger("volume")->warn("volume {}: {}", cfg_.name, made.status().message());
    }
  }
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

Status Volume::Checkpoint(bool trim) {
  std::lock_guard ckpt(checkpoint_mu_);
  uint64_t applied;
  {
    std::lock_guard lock(mu_);
    applied = applied_seq_;
  }
  if (cdp_) {
    // Trimming and appending touch the same journal: not at the same time.
    std::lock_guard append(append_mu_);
    auto events = cdp_->EnforceRetention(WallNowNs());
    if (!events.ok()) {
      Emit("retention_failed", events.status().message());
    } else {
      for (const auto& e : *events) Emit(e.kind, e.message);
    }
  }
  if (applied == checkpoint_seq_) return trim ? TrimWriteLog(applied) : Status::Ok();
  // Ordering: mirror durable -> bitmaps saved (covering `applied`) ->
  // checkpoint names `applied` -> write-log records through it removed.
  Status st = SyncMirror();
  if (!st.ok()) return st.WithContext("volume " + cfg_.name + ": sync mirror");
  CONTINUUM_RETURN_IF_ERROR(tracker_->Save(applied));
  nlohmann::json j{{"applied_seq", applied}, {"ts_ns", WallNowNs()}};
  CONTINUUM_RETURN_IF_ERROR(io::WriteFileAtomic(dir_ + "/checkpoint.json", j.dump() + "\n"));
  checkpoint_seq_ = applied;
  return trim ? TrimWriteLog(applied) : Status::Ok();
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
