#include "continuum/replication/target_sender.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include "continuum/common/json_field.h"
#include "continuum/common/log.h"
#include "continuum/common/time_util.h"
#include "continuum/io/file.h"
#include "continuum/journal/log_reader.h"
#include "continuum/net/tls.h"
#include "continuum/replication/diff_sync.h"
#include "continuum/replication/frame.h"
#include "continuum/replication/heartbeat.h"
#include "continuum/replication/token_bucket.h"

namespace continuum::replication {
namespace {

constexpr size_t kBatchBytes = 4u << 20;
constexpr size_t kBatchRecords = 512;
// resync_last_ of a window whose last record is not known in advance.
constexpr uint64_t kOpenEnded = UINT64_MAX;
// resync_last_ while a differential sync is still comparing (diff_sync.h).
constexpr uint64_t kDiffPending = UINT64_MAX - 1;

bool AllZero(std::span<const uint8_t> d) {
  return std::all_of(d.begin(), d.end(), [](uint8_t b) { return b == 0; });
}

}  // namespace

Result<Mode> ParseMode(const std::string& s) {
  if (s == "sync") return Mode::kSync;
  if (s == "async" || s.empty()) return Mode::kAsync;
  if (s == "adaptive") return Mode::kAdaptive;
  return InvalidArgument("invalid --mode '" + s + "': use sync, async or adaptive");
}

std::string ModeName(Mode m) {
  switch (m) {
    case Mode::kSync: return "sync";
    case Mode::kAsync: return "async";
    case Mode::kAdaptive: return "adaptive";
  }
  return "async";
}

nlohmann::json TargetStatus::ToJson() const {
  return {{"address", address},     {"state", state},         {"mode", mode},
          {"effective_mode", effective_mode}, {"acked_seq", acked_seq}, {"last_seq", last_seq},
          {"lag_bytes", lag_bytes}, {"lag_seconds", lag_seconds}, {"rate", rate_bytes_per_s},
          {"resyncing", resyncing}, {"replica", replica},   {"last_error", last_error},
          {"last_error_at", last_error_ns ? nlohmann::json(FormatRfc3339(last_error_ns)) : nlohmann::json(nullptr)},
          {"compress", compress},   {"bandwidth", bandwidth}, {"bytes_sent", bytes_sent},
          {"wire_bytes", wire_bytes}, {"peer_timeout_ms", peer_timeout_ms}, {"diff_sync", diff_sync}};
}

Result<std::unique_ptr<TargetSender>> TargetSender::Start(std::shared_ptr<volume::Volume> volume,
                                                          TargetOptions opts, EventFn events) {
  std::unique_ptr<TargetSender> s(new TargetSender(std::move(volume), std::move(opts), std::move(events)));
  s->LoadState();
  // Persist the target (address, mode, codec, limit) before its first
  // connection, so a restart resumes it even if it was never reachable.
  s->SaveState();
  // The cursor keeps the write log from being trimmed past what the target has.
  s->cursor_ = s->volume_->AddCursor(s->acked_);
  s->sync_now_ = false;
  s->thread_ = std::thread([raw = s.get()] { raw->Run(); });
  return s;
}

TargetSender::~TargetSender() { Stop(); }

void TargetSender::Stop() {
  stop_ = true;
  {
    std::lock_guard lock(mu_);
    if (conn_) conn_->Shutdown();
    cv_.notify_all();
  }
  Notify();  // writers stop waiting for a stopped target
  if (thread_.joinable()) thread_.join();
  SetState("stopped");
}

void TargetSender::Emit(const std::string& kind, const std::string& msg) {
  Logger("replication")->info("{} -> {}: {}: {}", opts_.volume, opts_.address, kind, msg);
  if (events_) events_(kind, "target " + opts_.address + ": " + msg);
}

void TargetSender::LoadState() {
  auto text = io::ReadFileToString(opts_.state_path);
  if (!text.ok()) return;
  auto j = nlohmann::json::parse(*text, nullptr, false);
  auto acked = JsonField<uint64_t>(j, "acked_seq", 0);
  auto active = JsonField<bool>(j, "resync_active", false);
  auto first = JsonField<uint64_t>(j, "resync_first", 0);
  auto last = JsonField<uint64_t>(j, "resync_last", 0);
  auto done_at = JsonField<uint64_t>(j, "resync_done_at", 0);
  auto replica = JsonField<std::string>(j, "replica", "");
  if (Status st = FirstError({acked.status(), active.status(), first.status(), last.status(), done_at.status(),
                               replica.status()});
      !st.ok()) {
    // Nothing is assumed about the target then: it is compared as a whole.
    Logger("replication")->warn("{}: {}; the target will be compared in full", opts_.state_path,
                                j.is_discarded() ? "not JSON" : st.message());
    return;
  }
  acked_ = *acked;
  resync_active_ = *active;
  resync_first_ = *first;
  resync_last_ = *last;
  resync_done_at_ = *done_at;
  replica_ = *replica;
  target_state_known_ = !replica_.empty();  // talked to it before: its durable seq is ours
}

void TargetSender::SaveState() {
  nlohmann::json j;
  {
    std::lock_guard lock(mu_);
    j = {{"address", opts_.address}, {"mode", ModeName(opts_.mode)}, {"acked_seq", acked_},
         {"resync_active", resync_active_}, {"resync_first", resync_first_}, {"resync_last", resync_last_}, {"resync_done_at", resync_done_at_},
         {"replica", replica_}, {"compress", CodecName(opts_.compress)}, {"bandwidth", opts_.bandwidth},
         {"peer_timeout_ms", opts_.heartbeat.timeout_ms}};
  }
  io::WriteFileAtomic(opts_.state_path, j.dump() + "\n").IgnoreError();
}

void TargetSender::SetState(const std::string& state, const std::string& error) {
  {
    std::lock_guard lock(mu_);
    state_ = state;
    if (!error.empty()) {
      last_error_ = error;
      last_error_ns_ = WallNowNs();
    }
    connected_ = state == "streaming";
    if (!connected_) sync_now_ = false;
    cv_.notify_all();
  }
  Notify();
}

void TargetSender::BeginWholeResync(uint64_t before, uint64_t last) {
  {
    std::lock_guard lock(mu_);
    resync_active_ = true;
    resync_first_ = before + 1;
    resync_last_ = last;
    acked_ = before;  // not held by the target: see Probe
    unproven_below_ = before + 1;
    unproven_until_ = last;
  }
  cursor_->acked = before;
  SaveState();
}

Result<bool> TargetSender::SendBatch(net::Connection& conn, FrameType frame_type, std::span<const uint8_t> batch,
                                     TokenBucket& bucket) {
  std::span<const uint8_t> wire = batch;
  Encoded enc;
  if (opts_.compress != Codec::kNone) {
    CONTINUUM_ASSIGN_OR_RETURN(enc, Encode(opts_.compress, batch));
    if (!enc.bytes.empty()) wire = enc.bytes;
  }
  if (int64_t wait_ns = bucket.Take(wire.size(), MonoNowNs()); wait_ns > 0) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::nanoseconds(wait_ns), [&] { return stop_.load(); });
    if (stop_) return false;
  }
  CONTINUUM_RETURN_IF_ERROR(WriteFrame(conn, frame_type, wire, enc.flags));
  std::lock_guard lock(mu_);
  bytes_sent_ += batch.size();
  wire_bytes_ += wire.size();
  return true;
}

void TargetSender::Run() {
  int backoff_ms = 250;
  bool reported = false;
  while (!stop_) {
    Status st = Session();
    if (stop_) break;
    std::string why = st.ok() ? "" : st.message();
    {
      std::lock_guard lock(mu_);
      if (!target_error_.empty()) why = target_error_;  // the cause, not the broken connection after it
    }
    SetState("disconnected", why);
    if (!reported && !why.empty()) {
      Emit("target_disconnected", why + "; writes are kept and will be sent when it is back");
      reported = true;
    }
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::milliseconds(backoff_ms), [&] { return stop_.load(); });
    // At most a second between attempts: the time from a link coming back to
    // the target catching up is RPO the operator is exposed to, and a refused
    // or unreachable connect costs nothing.
    backoff_ms = std::min(backoff_ms * 2, 1000);
    if (st.ok()) backoff_ms = 250;
  }
}

Status TargetSender::Session() {
  {
    // While reconnecting, keep showing "disconnected" and why.
    std::lock_guard lock(mu_);
    if (state_ != "disconnected") state_ = "connecting";
    target_error_.clear();
  }
  CONTINUUM_ASSIGN_OR_RETURN(auto raw_conn, net::Dial(opts_.address, opts_.tls));
  MonitoredConnection monitored(*raw_conn);  // heartbeats and the peer timeout (heartbeat.h)
  net::Connection* conn = &monitored;
  {
    std::lock_guard lock(mu_);
    conn_ = raw_conn.get();
  }
  struct Reset {
    TargetSender* s;
    ~Reset() {
      std::lock_guard lock(s->mu_);
      s->conn_ = nullptr;
    }
  } reset{this};
  if (stop_) return Status::Ok();
  const auto& cfg = volume_->config();
  CONTINUUM_RETURN_IF_ERROR(WriteJsonFrame(*conn, FrameType::kHello,
                                           {{"version", kProtocolVersion}, {"source", opts_.source_name},
                                            {"volume", opts_.volume}, {"size", cfg.size},
                                            {"block_size", cfg.block_size}, {"last_seq", volume_->LastSeq()},
                                            {"heartbeat_ms", opts_.heartbeat.interval_ms},
                                            {"peer_timeout_ms", opts_.heartbeat.timeout_ms},
                                            {"ack_delay_ms", opts_.mode == Mode::kAsync ? opts_.async_ack_delay_ms : 0}}));
  CONTINUUM_ASSIGN_OR_RETURN(Frame f, ReadFrame(*conn));
  if (f.type == FrameType::kError) return FailedPrecondition("target refused: " + ErrorMessage(f));
  if (f.type != FrameType::kHelloAck) return DataLoss("target " + opts_.address + " did not answer the hello");
  CONTINUUM_ASSIGN_OR_RETURN(auto ack, FrameJson(f));
  auto durable = JsonField<uint64_t>(ack, "durable_seq", 0);
  auto fresh = JsonField<bool>(ack, "new", false);
  auto can_diff = JsonField<bool>(ack, "diff", false);
  auto can_seed = JsonField<bool>(ack, "seed", false);
  auto replica = JsonField<std::string>(ack, "replica", "");
  if (Status st = FirstError({durable.status(), fresh.status(), can_diff.status(), can_seed.status(), replica.status()});
      !st.ok()) {
    return st.WithContext("bad HELLO_ACK from target " + opts_.address);
  }
  target_fresh_ = *fresh;
  target_can_diff_ = *can_diff;
  target_can_seed_ = *can_seed;
  {
    std::lock_guard lock(mu_);
    replica_ = *replica;
    acked_ = *durable;
    if (unproven_below_ > 0 && acked_ >= unproven_until_) unproven_below_ = 0;
    inflight_.clear();
    inflight_bytes_ = 0;
  }
  Emit("target_connected", "replica " + replica_ + " has seq " + std::to_string(*durable));
  std::optional<Heartbeat> heartbeat;  // only with a target that answers them (HELLO_ACK heartbeat_ms)
  if (ack.contains("heartbeat_ms")) heartbeat.emplace(monitored, opts_.heartbeat);
  Status st = StreamLoop(*conn);
  StopDiffSync();
  if (std::string why = monitored.expired(); !why.empty()) return Unavailable(why);
  return st;
}

Status TargetSender::StreamLoop(net::Connection& conn) {
  const auto& cfg = volume_->config();
  uint64_t durable;
  bool fresh_resync = false;
  {
    std::lock_guard lock(mu_);
    durable = acked_;
  }
  auto reader = journal::LogReader::Open(volume_->write_log(), durable);
  // A target whose state we do not know (a new `replicate` to an existing
  // replica) is compared as a whole, even when the log seems to reach back.
  bool need_full = durable == 0 || !reader.ok() || !target_state_known_;
  if (!reader.ok() && reader.status().code() != StatusCode::kOutOfRange) return reader.status();
  seed_point_ = {};
  fwd_valid_ = false;
  if (opts_.cascade) {
    // The seqs are the source's, the same at every site: a target's durable
    // seq means the same here whoever sent it. A target that holds nothing is
    // always seeded (one whose earlier seed was cut short has blocks in its
    // mirror that undo records would take for old contents); one the write
    // log does not reach can only be seeded once it is empty again.
    need_full = false;
    if (!reader.ok() || (durable == 0 && volume_->cdp() && volume_->cdp()->Latest().seq > 0)) {
      if (durable != 0) {
        return FailedPrecondition("replica " + opts_.volume + " here no longer holds seq " +
                                  std::to_string(durable + 1) + " that the target needs; delete the replica on " +
                                  opts_.address + " to seed it again");
      }
      if (!target_can_seed_) return FailedPrecondition("target " + opts_.address + " cannot be seeded (too old)");
      if (!volume_->cdp()) return FailedPrecondition("replica " + opts_.volume + " has no CDP journal to seed from");
      seed_point_ = volume_->cdp()->Latest();
      CONTINUUM_ASSIGN_OR_RETURN(reader, journal::LogReader::Open(volume_->write_log(), seed_point_.seq));
    }
  }
  bool diff_started = false;
  if (need_full && UseDiffSync(durable, reader.ok())) {
    CONTINUUM_ASSIGN_OR_RETURN(uint64_t before, BeginDiffSync(conn, durable));
    CONTINUUM_ASSIGN_OR_RETURN(reader, journal::LogReader::Open(volume_->write_log(), before));
    diff_started = fresh_resync = true;
  }
  if (need_full && !diff_started && !(resync_active_ && durable + 1 >= resync_first_ && reader.ok())) {
    // The target is new, or the write log no longer reaches back to it: send
    // every block as of now (resync records), then keep streaming.
    uint64_t before = volume_->LastSeq();
    CONTINUUM_ASSIGN_OR_RETURN(uint64_t last,
                               volume_->AppendResync({{0, cfg.size}}));
    BeginWholeResync(before, last);
    CONTINUUM_ASSIGN_OR_RETURN(reader, journal::LogReader::Open(volume_->write_log(), before));
    CONTINUUM_RETURN_IF_ERROR(
        WriteJsonFrame(conn, FrameType::kResyncBegin, {{"first_seq", before + 1}, {"last_seq", last}}));
    Emit("resync_started", durable == 0 ? "initial sync of the whole volume"
                                        : "write log no longer holds seq " + std::to_string(durable + 1) +
                                              ": resyncing the whole volume");
    fresh_resync = true;
  }
  {
    // A resync window left open by an earlier session: announce it again (the
    // target may not have seen it), so its points stay marked until it closes.
    std::unique_lock lock(mu_);
    if (opts_.cascade) {
      // No resync windows of our own: the replica's are forwarded.
    } else if (resync_active_ && !fresh_resync) {
      nlohmann::json begin{{"first_seq", resync_first_}, {"last_seq", resync_last_}};
      lock.unlock();
      CONTINUUM_RETURN_IF_ERROR(WriteJsonFrame(conn, FrameType::kResyncBegin, begin));
    } else if (!resync_active_ && resync_done_at_ > 0) {
      // The last RESYNC_DONE may have been lost with the previous connection
      // (it is not acknowledged): repeat it; the target treats it as idempotent.
      nlohmann::json done{{"consistent_at", resync_done_at_}};
      lock.unlock();
      CONTINUUM_RETURN_IF_ERROR(WriteJsonFrame(conn, FrameType::kResyncDone, done));
    }
  }
  ResumeDiffSync();
  target_state_known_ = true;
  cursor_->acked = std::min<uint64_t>(cursor_->acked.load(), durable);
  SetState("streaming");
  {
    std::lock_guard lock(mu_);
    sync_now_ = opts_.mode != Mode::kAsync;
  }
  Notify();
  std::thread acker([this, &conn] { AckLoop(&conn); });
  struct Join {
    std::thread& t;
    net::Connection& c;
    ~Join() {
      c.Shutdown();
      t.join();
    }
  } join{acker, conn};

  if (seed_point_.seq != 0) CONTINUUM_RETURN_IF_ERROR(SeedTarget(conn));
  uint64_t consistent_at = 0;
  TokenBucket bucket(opts_.bandwidth);
  std::vector<uint8_t> batch;
  std::vector<uint8_t> buf;
  std::shared_ptr<const io::AlignedBuffer> ring_data;
  // Async: after a batch that took all there was, the next one waits up to
  // async_coalesce_ms for more (a trickle of small writes then goes as one
  // frame per interval, not one frame and two wake-ups per write on each side).
  int64_t coalesce_until = 0;
  while (!stop_) {
    if (coalesce_until > 0) {
      std::unique_lock lock(mu_);
      int64_t wait_ns = coalesce_until - MonoNowNs();
      if (wait_ns > 0 && !sync_now_) {
        cv_.wait_for(lock, std::chrono::nanoseconds(wait_ns), [&] { return stop_.load() || sync_now_; });
      }
      coalesce_until = 0;
    }
    CONTINUUM_RETURN_IF_ERROR(PollSession(conn, (*reader)->last_seq(), consistent_at));
    if (opts_.cascade) CONTINUUM_RETURN_IF_ERROR(ForwardWindow(conn));
    batch.clear();
    size_t count = 0;
    bool resync_done = false;
    bool dry = false;
    bool last_was_resync = false;
    std::optional<nlohmann::json> begin;  // a window opened in this batch
    std::vector<InFlight> shipped;
    // Only admitted writes: the write log holds a record a moment before the
    // volume admits it (its data enters the ring then). Reading ahead of that
    // found no ring data and resynced the range from the mirror, a window
    // that was not crash-consistent, several times a second under load.
    const uint64_t admitted = volume_->LastSeq();
    while (batch.size() < kBatchBytes && count < kBatchRecords) {
      if ((*reader)->last_seq() >= admitted) {
        dry = true;
        break;
      }
      CONTINUUM_ASSIGN_OR_RETURN(auto rec, (*reader)->Next());
      if (!rec) {
        dry = true;
        break;
      }
      journal::RecordHeader h = rec->header;
      std::span<const uint8_t> data = rec->payload;
      last_was_resync = static_cast<journal::WriteKind>(h.kind) == journal::WriteKind::kResync;
      if (static_cast<journal::WriteKind>(h.kind) == journal::WriteKind::kWrite &&
          (h.flags & journal::kFlagNoData)) {
        // A metadata-only record: the data is in the volume's replication
        // ring, unless it left it (ring full, or a restart): then the range
        // is resynced from the mirror like a resync record.
        ring_data = volume_->RingData(h.seq);
        h.flags &= ~journal::kFlagNoData;
        if (ring_data) {
          data = ring_data->span();
        } else {
          last_was_resync = true;
        }
      }
      if (last_was_resync) {
        std::lock_guard lock(mu_);
        if (!resync_active_) {
          // Resync records outside a full resync (verify --repair, writes that
          // left the write cache): an open-ended window that closes at the end
          // of the run of resync records.
          resync_active_ = true;
          resync_first_ = h.seq;
          resync_last_ = kOpenEnded;
          begin = nlohmann::json{{"first_seq", h.seq}, {"last_seq", h.seq}};
        }
      }
      if (last_was_resync) {
        buf.resize(h.length);
        CONTINUUM_ASSIGN_OR_RETURN(uint64_t c, volume_->ReadCurrent(h.offset, buf));
        consistent_at = std::max(consistent_at, c);
        if (AllZero(buf)) {
          h.kind = static_cast<uint16_t>(journal::WriteKind::kZero);
          data = {};
        } else {
          h.kind = static_cast<uint16_t>(journal::WriteKind::kWrite);
          h.flags |= journal::kFlagResyncData;
          data = buf;
        }
      }
      AppendRecord(&batch, h, data);
      ring_data.reset();
      shipped.push_back({h.seq, h.ts_ns, sizeof(h) + data.size()});
      ++count;
      std::lock_guard lock(mu_);
      if (resync_active_ && h.seq == resync_last_) resync_done = true;
    }
    {
      std::lock_guard lock(mu_);
      if (count > 0 && resync_active_ && resync_last_ == kOpenEnded && (dry || !last_was_resync)) resync_done = true;
    }
    if (count == 0) {
      volume_->WaitAdmitted((*reader)->last_seq(), 100);
      continue;
    }
    {
      // Flow control: at most window_bytes unacknowledged.
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !connected_ || inflight_bytes_ < opts_.window_bytes; });
      if (stop_ || !connected_) return Unavailable("connection to " + opts_.address + " lost");
      for (const auto& s : shipped) {
        inflight_.push_back(s);
        inflight_bytes_ += s.bytes;
      }
    }
    if (begin) {
      SaveState();
      CONTINUUM_RETURN_IF_ERROR(WriteJsonFrame(conn, FrameType::kResyncBegin, *begin));
      Emit("resync_started", "ranges from seq " + begin->at("first_seq").dump() + " (verify repair, or writes that left the write cache)");
    }
    CONTINUUM_ASSIGN_OR_RETURN(bool sent, SendBatch(conn, FrameType::kRecords, batch, bucket));
    if (!sent) return Status::Ok();
    if (dry && opts_.async_coalesce_ms > 0) coalesce_until = MonoNowNs() + int64_t{opts_.async_coalesce_ms} * 1'000'000;
    if (resync_done) {
      uint64_t at = std::max(consistent_at, shipped.back().seq);
      CONTINUUM_RETURN_IF_ERROR(WriteJsonFrame(conn, FrameType::kResyncDone, {{"consistent_at", at}}));
      {
        std::lock_guard lock(mu_);
        resync_active_ = false;
        resync_done_at_ = at;
      }
      SaveState();
      Emit("resync_done", "replica is crash-consistent from seq " + std::to_string(at));
    }
  }
  return Status::Ok();
}

void TargetSender::AckLoop(net::Connection* conn) {
  while (!stop_) {
    auto f = ReadFrame(*conn);
    if (!f.ok()) {
      SetState("disconnected", f.status().message());
      conn->Shutdown();
      return;
    }
    auto j = FrameJson(*f);
    if (f->type == FrameType::kError) {
      std::string msg = ErrorMessage(*f);
      Emit("target_error", msg);
      {
        std::lock_guard lock(mu_);
        target_error_ = msg;
      }
      SetState("disconnected", msg);
      conn->Shutdown();
      return;
    }
    if (f->type != FrameType::kAck || !j.ok()) continue;
    auto acked = JsonField<uint64_t>(*j, "durable_seq", 0);
    if (!acked.ok()) {
      SetState("disconnected", "bad ACK from target: " + acked.status().message());
      conn->Shutdown();
      return;
    }
    uint64_t seq = *acked;
    int64_t now = MonoNowNs();
    bool save = false;
    {
      std::lock_guard lock(mu_);
      uint64_t bytes = 0;
      while (!inflight_.empty() && inflight_.front().seq <= seq) {
        bytes += inflight_.front().bytes;
        inflight_bytes_ -= inflight_.front().bytes;
        inflight_.pop_front();
      }
      if (seq > acked_) acked_ = seq;
      if (unproven_below_ > 0 && acked_ >= unproven_until_) unproven_below_ = 0;
      rate_ = 0.8 * rate_ + 0.2 * static_cast<double>(bytes) * 10;  // rough, smoothed
      if (opts_.mode == Mode::kAdaptive && !sync_now_ && inflight_.empty() && acked_ >= volume_->LastSeq()) {
        sync_now_ = true;
        save = true;
      }
      cv_.notify_all();
    }
    cursor_->acked = seq;
    if (opts_.mode != Mode::kAsync) Notify();  // writers waiting on a sync quorum
    if (save) Emit("mode_changed", "caught up: back to synchronous replication");
    if (now - last_save_ns_ > 200'000'000) {
      last_save_ns_ = now;
      SaveState();
    }
  }
}

SyncProbe TargetSender::Probe(uint64_t seq) const {
  std::lock_guard lock(mu_);
  // Seqs before a full or differential resync window are not proven durable
  // there until its last record is acknowledged (unproven_below_): the target
  // neither counts for them nor holds writers waiting on them, as if it were
  // disconnected for those writes.
  const bool unproven = seq < unproven_below_;
  return SyncProbe{.member = opts_.mode != Mode::kAsync,
                   .durable = acked_ >= seq && !unproven,
                   .waiting = connected_ && sync_now_ && !stop_ && !unproven,
                   .adaptive_latency_ns = opts_.mode == Mode::kAdaptive ? opts_.adaptive_latency_ns : 0};
}

void TargetSender::SlowAck(uint64_t seq) {
  {
    std::lock_guard lock(mu_);
    if (opts_.mode != Mode::kAdaptive || !sync_now_ || acked_ >= seq) return;
    sync_now_ = false;
    cv_.notify_all();
  }
  Emit("mode_changed", "acknowledgement slower than the adaptive threshold: now asynchronous");
  Notify();
}

TargetStatus TargetSender::GetStatus() const {
  TargetStatus s;
  std::unique_lock lock(mu_);
  s.address = opts_.address;
  s.state = state_;
  s.mode = ModeName(opts_.mode);
  s.effective_mode = (connected_ && sync_now_) ? "sync" : "async";
  s.acked_seq = acked_;
  s.last_seq = volume_->LastSeq();
  s.lag_bytes = inflight_bytes_;
  const int64_t oldest_inflight_ts = inflight_.empty() ? 0 : inflight_.front().ts_ns;
  s.rate_bytes_per_s = rate_;
  s.resyncing = resync_active_ || seeding_;
  s.replica = replica_;
  s.last_error = last_error_;
  s.last_error_ns = last_error_ns_;
  s.compress = CodecName(opts_.compress);
  s.bandwidth = opts_.bandwidth;
  s.bytes_sent = bytes_sent_;
  s.wire_bytes = wire_bytes_;
  s.peer_timeout_ms = opts_.heartbeat.timeout_ms;
  s.diff_sync = DiffSyncJsonLocked();
  lock.unlock();
  s.lag_seconds = LagSeconds(s.acked_seq, s.last_seq, oldest_inflight_ts);
  return s;
}

}  // namespace continuum::replication
