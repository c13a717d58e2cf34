// TargetSender's differential sync and RPO hooks (docs/format/replication.md,
// "Differential sync"); the stream itself is in target_sender.cc.
#include <algorithm>

#include "continuum/common/time_util.h"
#include "continuum/journal/log_reader.h"
#include "continuum/replication/diff_sync.h"
#include "continuum/replication/frame.h"
#include "continuum/replication/target_sender.h"

namespace continuum::replication {
namespace {

constexpr uint64_t kDiffPending = UINT64_MAX - 1;  // as in target_sender.cc

nlohmann::json ProgressJson(const DiffSyncProgress& p, bool active) {
  return {{"active", active},
          {"compared_bytes", p.compared_bytes},
          {"differing_bytes", p.differing_bytes},
          {"sums_bytes", p.sums_bytes},
          {"request_bytes", p.request_bytes},
          {"fallback", p.fallback}};
}

}  // namespace

bool TargetSender::UseDiffSync(uint64_t durable, bool log_reaches_back) const {
  if (target_fresh_ || !target_can_diff_) return false;  // nothing there to compare with
  // An interrupted window whose start the log still reaches continues as it was.
  std::lock_guard lock(mu_);
  return !(resync_active_ && durable + 1 >= resync_first_ && log_reaches_back);
}

Result<uint64_t> TargetSender::BeginDiffSync(net::Connection& conn, uint64_t durable) {
  uint64_t before = volume_->LastSeq();
  if (durable > before) {
    // Its seqs are not ours (another volume of that name, or a recreated one):
    // the replica would ignore resync records at or below what it holds.
    return FailedPrecondition("replica " + replica_ + " on " + opts_.address + " holds seq " +
                              std::to_string(durable) + ", newer than this volume's newest (" +
                              std::to_string(before) + "): it comes from another volume; delete it on the target "
                              "to start over");
  }
  BeginWholeResync(before, kDiffPending);
  // The window opens before the comparison starts, so every write the
  // comparison could miss is shipped after it (diff_sync.h).
  CONTINUUM_RETURN_IF_ERROR(
      WriteJsonFrame(conn, FrameType::kResyncBegin, {{"first_seq", before + 1}, {"last_seq", before + 1}}));
  Emit("resync_started", "replica " + replica_ + " exists (seq " + std::to_string(durable) +
                             "): comparing checksums, resending only differing blocks");
  auto d = DiffSync::Start(volume_, opts_);
  std::lock_guard lock(mu_);
  diff_ = std::move(d);
  diff_last_ = nullptr;
  return before;
}

void TargetSender::ResumeDiffSync() {
  {
    std::lock_guard lock(mu_);
    if (diff_ || !resync_active_ || resync_last_ != kDiffPending) return;
  }
  Emit("resync_started", "resuming the checksum comparison from the start");
  auto d = DiffSync::Start(volume_, opts_);
  std::lock_guard lock(mu_);
  diff_ = std::move(d);
}

Status TargetSender::PollSession(net::Connection& conn, uint64_t shipped_through, uint64_t consistent_at) {
  std::shared_ptr<DiffSync> d;
  {
    std::lock_guard lock(mu_);
    if (!connected_ && !stop_) {
      return Unavailable("connection to " + opts_.address + " lost" + (last_error_.empty() ? "" : ": " + last_error_));
    }
    d = diff_;
  }
  if (!d) return Status::Ok();
  DiffSyncProgress p = d->Progress();
  if (!p.error.ok()) return Unavailable("differential sync with " + opts_.address + ": " + p.error.message());
  if (!p.finished) return Status::Ok();
  uint64_t at;
  bool close;
  {
    std::lock_guard lock(mu_);
    if (resync_active_ && resync_last_ == kDiffPending) {
      resync_last_ = std::max(p.last_seq, resync_first_ - 1);
      if (unproven_below_ > 0) unproven_until_ = resync_last_;
    }
    // The stream may have closed the window itself on reaching resync_last_.
    if (resync_active_ && shipped_through < resync_last_) return Status::Ok();
    at = std::max(consistent_at, resync_last_);
    close = resync_active_;
  }
  if (close) {
    CONTINUUM_RETURN_IF_ERROR(WriteJsonFrame(conn, FrameType::kResyncDone, {{"consistent_at", at}}));
    {
      std::lock_guard lock(mu_);
      resync_active_ = false;
      resync_done_at_ = at;
    }
    SaveState();
    Emit("resync_done", "replica is crash-consistent from seq " + std::to_string(at));
  }
  Emit("diff_sync_done", "compared " + std::to_string(p.compared_bytes) + " bytes, resent " +
                             std::to_string(p.differing_bytes) + " bytes" + (p.fallback ? " (target cannot compare)" : ""));
  std::lock_guard lock(mu_);
  diff_last_ = ProgressJson(p, false);
  diff_.reset();  // finished: the destructor only joins
  return Status::Ok();
}

void TargetSender::StopDiffSync() {
  std::shared_ptr<DiffSync> d;
  {
    std::lock_guard lock(mu_);
    d.swap(diff_);
    if (d) diff_last_ = ProgressJson(d->Progress(), false);
  }
  d.reset();  // stops and joins outside mu_
}

nlohmann::json TargetSender::DiffSyncJsonLocked() const {
  if (diff_) return ProgressJson(diff_->Progress(), true);
  return diff_last_;
}

double TargetSender::LagSeconds(uint64_t acked, uint64_t last, int64_t oldest_inflight_ts) const {
  if (acked >= last) return 0;
  int64_t ts = oldest_inflight_ts;
  if (ts == 0) {
    // Not shipped yet (disconnected, or the window is full): the timestamp of
    // the record after `acked`, from the write log, cached per seq.
    std::lock_guard lock(lag_mu_);
    if (lag_cache_seq_ != acked + 1) {
      lag_cache_seq_ = acked + 1;
      lag_cache_ts_ = 0;
      auto reader = journal::LogReader::Open(volume_->write_log(), acked);
      if (reader.ok()) {
        auto rec = (*reader)->Next();
        if (rec.ok() && *rec) lag_cache_ts_ = (*rec)->header.ts_ns;
      }
    }
    ts = lag_cache_ts_;
  }
  if (ts == 0) return -1;  // unknown: the log no longer holds it
  return std::max(0.0, static_cast<double>(WallNowNs() - ts) / 1e9);
}

}  // namespace continuum::replication
