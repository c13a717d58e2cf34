// Cascade: a server forwards a replica onward (docs/adr/0004-replication.md,
// "Cascade"). The replica's write log already holds the source's records with
// their data, so the stream itself is forwarded unchanged; what differs is how
// a new target starts (a seed at a point, no new seqs) and how resync windows
// reach it (the replica's own window, as its source announced it).

#include <algorithm>

#include "continuum/common/log.h"
#include "continuum/common/time_util.h"
#include "continuum/replication/frame.h"
#include "continuum/replication/target_sender.h"
#include "continuum/replication/token_bucket.h"
#include "continuum/volume/volume_view.h"

namespace continuum::replication {
namespace {

constexpr uint64_t kSeedPiece = 1ull << 20;    // one record per MiB
constexpr size_t kSeedFrameBytes = 4u << 20;  // SEED_DATA payload before compression

bool AllZero(std::span<const uint8_t> d) {
  return std::all_of(d.begin(), d.end(), [](uint8_t b) { return b == 0; });
}

}  // namespace

Status TargetSender::SeedTarget(net::Connection& conn) {
  const cdp::Point at = seed_point_;
  const auto& cfg = volume_->config();
  // A view at the point reads the replica exactly as it was at that seq while
  // its own source keeps streaming into it; the write log holds every record
  // after it (our cursor has held it since Start), so the stream resumes there.
  CONTINUUM_ASSIGN_OR_RETURN(auto view, volume_->OpenView(at, ""));
  seeding_ = true;
  struct Done {
    std::atomic<bool>& f;
    ~Done() { f = false; }
  } done{seeding_};
  // The target has no point until the seed completes; mark it as resyncing
  // from the start so views there are refused meanwhile.
  CONTINUUM_RETURN_IF_ERROR(
      WriteJsonFrame(conn, FrameType::kResyncBegin, {{"first_seq", 0}, {"last_seq", at.seq}}));
  CONTINUUM_RETURN_IF_ERROR(WriteJsonFrame(conn, FrameType::kSeedBegin, {{"seq", at.seq}, {"ts_ns", at.ts_ns}}));
  Emit("seed_started", "seeding the target with this replica as of seq " + std::to_string(at.seq));
  TokenBucket bucket(opts_.bandwidth);
  io::AlignedBuffer buf(kSeedPiece);
  std::vector<uint8_t> batch;
  uint64_t zero_bytes = 0;
  auto send = [&]() -> Status {
    if (batch.empty()) return Status::Ok();
    CONTINUUM_ASSIGN_OR_RETURN(bool sent,
                               SendBatch(conn, FrameType::kSeedData, batch, bucket));
    if (!sent) return Unavailable("stopping");
    batch.clear();
    return Status::Ok();
  };
  for (uint64_t off = 0; off < cfg.size;) {
    if (stop_) return Unavailable("stopping");
    {
      std::lock_guard lock(mu_);
      if (!connected_) return Unavailable("connection to " + opts_.address + " lost during the seed");
    }
    uint64_t n = std::min<uint64_t>(kSeedPiece, cfg.size - off);
    std::span<uint8_t> piece = buf.span().subspan(0, n);
    CONTINUUM_RETURN_IF_ERROR(view->Read(off, piece));
    journal::RecordHeader h;
    h.seq = at.seq;
    h.ts_ns = at.ts_ns;
    h.offset = off;
    h.length = n;
    if (AllZero(piece)) {
      // Zeros cost a header: the target punches a hole (or zeroes) there.
      h.kind = static_cast<uint16_t>(journal::WriteKind::kZero);
      AppendRecord(&batch, h, {});
      zero_bytes += n;
    } else {
      h.kind = static_cast<uint16_t>(journal::WriteKind::kWrite);
      AppendRecord(&batch, h, piece);
    }
    if (batch.size() >= kSeedFrameBytes) CONTINUUM_RETURN_IF_ERROR(send());
    off += n;
  }
  CONTINUUM_RETURN_IF_ERROR(send());
  CONTINUUM_RETURN_IF_ERROR(WriteJsonFrame(conn, FrameType::kSeedDone, {{"seq", at.seq}, {"ts_ns", at.ts_ns}}));
  // The target acknowledges the seed's seq (AckLoop); points from it on are
  // as consistent as they are here (ForwardWindow says so next).
  seed_floor_ = at.seq;
  fwd_valid_ = false;
  Emit("seed_done", "sent " + std::to_string(cfg.size - zero_bytes) + " bytes (" + std::to_string(zero_bytes) +
                        " zero) as of seq " + std::to_string(at.seq) + "; streaming from seq " +
                        std::to_string(at.seq + 1));
  return Status::Ok();
}

Status TargetSender::ForwardWindow(net::Connection& conn) {
  if (!opts_.upstream_window) return Status::Ok();
  std::optional<UpstreamWindow> now = opts_.upstream_window();
  if (!now) return Status::Ok();  // unknown right now: keep what the target has
  UpstreamWindow w = *now;
  if (fwd_valid_ && w == fwd_) return Status::Ok();
  const bool never = !w.active && w.first == 0 && w.consistent_from == 0;
  if (!fwd_valid_ && never && seed_floor_ == 0) {
    // This replica never had a window: nothing to tell the target.
    fwd_ = w;
    fwd_valid_ = true;
    return Status::Ok();
  }
  // The target keeps one window like this replica: (first, consistent_from,
  // active). Points in it are refused there exactly as here.
  const bool begin = !fwd_valid_ || w.first != fwd_.first || (w.active && !fwd_.active);
  if (begin) {
    CONTINUUM_RETURN_IF_ERROR(
        WriteJsonFrame(conn, FrameType::kResyncBegin, {{"first_seq", w.first}, {"last_seq", w.first}}));
  }
  if (!w.active && (begin || fwd_.active || w.consistent_from != fwd_.consistent_from)) {
    uint64_t at = std::max(w.consistent_from, seed_floor_);
    CONTINUUM_RETURN_IF_ERROR(WriteJsonFrame(conn, FrameType::kResyncDone, {{"consistent_at", at}}));
  }
  Logger("replication")
      ->info("{} -> {}: forwarded resync window (active {}, first {}, consistent from {})", opts_.volume,
             opts_.address, w.active, w.first, w.consistent_from);
  fwd_ = w;
  fwd_valid_ = true;
  return Status::Ok();
}

}  // namespace continuum::replication
