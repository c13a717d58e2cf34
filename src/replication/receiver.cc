#include "continuum/replication/receiver.h"

#include <algorithm>
#include <iterator>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "continuum/common/json_field.h"
#include "continuum/common/log.h"
#include "continuum/common/time_util.h"
#include "continuum/replication/codec.h"
#include "continuum/replication/diff_sync.h"
#include "continuum/replication/frame.h"
#include "continuum/replication/heartbeat.h"

namespace continuum::replication {
namespace {

// A field of the JSON in a `what` frame from `conn`'s peer: JsonField, with
// the frame and the peer named in the error.
template <class T>
Result<T> Field(const nlohmann::json& j, std::string_view key, T def, std::string_view what,
                const net::Connection& conn) {
  auto v = JsonField<T>(j, key, std::move(def));
  if (!v.ok()) return InvalidArgument("bad " + std::string(what) + " from " + conn.PeerName() + ": " + v.status().message());
  return v;
}

}  // namespace

// Receives the source's frames on a thread of its own, ahead of the thread
// that applies them: receiving, decrypting, decompressing and parsing the next
// frames overlaps with admitting and flushing this one. At most
// kReadAheadBytes of payload wait. A read or decode error is the last item.
// The destructor shuts the connection down (to wake a read in progress).
class FrameReadAhead {
 public:
  struct Item {
    Status status;  // not ok: the connection's or the frame's error, and the end
    Frame frame;    // record and seed frames: payload decoded, then released
    std::vector<WireRecord> records;  // kRecords, kSeedData
    size_t bytes = 0;                 // decoded payload size
  };

  explicit FrameReadAhead(net::Connection& conn) : conn_(conn), thread_([this] { Loop(); }) {}
  ~FrameReadAhead() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    conn_.Shutdown();
    thread_.join();
  }
  FrameReadAhead(const FrameReadAhead&) = delete;
  FrameReadAhead& operator=(const FrameReadAhead&) = delete;

  Item Next() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !queue_.empty(); });
    Item item = std::move(queue_.front());
    queue_.pop_front();
    bytes_ -= item.bytes;
    cv_.notify_all();
    return item;
  }
  // Whether a frame is read and waiting within `timeout_ms`.
  bool WaitReady(int64_t timeout_ns) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::nanoseconds(timeout_ns), [&] { return !queue_.empty(); });
  }
  // A frame is waiting (read, or arriving on the connection).
  bool Ready() {
    {
      std::lock_guard lock(mu_);
      if (!queue_.empty()) return true;
    }
    return conn_.Readable();
  }

 private:
  static constexpr size_t kReadAheadBytes = 64u << 20;

  void Loop() {
    for (;;) {
      Item item;
      auto fr = ReadFrame(conn_);
      if (!fr.ok()) {
        item.status = fr.status();
      } else {
        item.frame = std::move(*fr);
        item.status = Prepare(&item);
      }
      const bool last = !item.status.ok();
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stop_ || queue_.empty() || bytes_ < kReadAheadBytes; });
        if (stop_) return;
        bytes_ += item.bytes;
        queue_.push_back(std::move(item));
      }
      cv_.notify_all();
      if (last) return;
    }
  }

  static Status Prepare(Item* item) {
    Frame& f = item->frame;
    if (f.type != FrameType::kRecords && f.type != FrameType::kSeedData) return Status::Ok();
    if (f.flags & kFrameCodecMask) {
      CONTINUUM_ASSIGN_OR_RETURN(f.payload, Decode(f.flags, f.payload, kMaxFramePayload));
    }
    CONTINUUM_ASSIGN_OR_RETURN(item->records, ParseRecords(f.payload));
    item->bytes = f.payload.size();
    std::vector<uint8_t>().swap(f.payload);
    return Status::Ok();
  }

  net::Connection& conn_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;  // GUARDED_BY(mu_)
  size_t bytes_ = 0;        // GUARDED_BY(mu_)
  bool stop_ = false;       // GUARDED_BY(mu_)
  std::thread thread_;      // last: starts once the rest is built
};

Result<std::unique_ptr<Receiver>> Receiver::Start(std::unique_ptr<net::Listener> listener,
                                                  ReplicaProvider* provider) {
  std::unique_ptr<Receiver> r(new Receiver(std::move(listener), provider));
  r->accept_thread_ = std::thread([raw = r.get()] { raw->AcceptLoop(); });
  return r;
}

Receiver::~Receiver() { Stop(); }

void Receiver::Stop() {
  if (stop_.exchange(true)) return;
  listener_->Close();
  if (accept_thread_.joinable()) accept_thread_.join();
  std::list<std::unique_ptr<Session>> sessions;
  {
    std::lock_guard lock(mu_);
    sessions.swap(sessions_);
  }
  for (auto& s : sessions) s->conn->Shutdown();
  for (auto& s : sessions) {
    if (s->thread.joinable()) s->thread.join();
  }
}

void Receiver::AcceptLoop() {
  auto log = Logger("replication");
  while (!stop_) {
    auto conn = listener_->Accept();
    if (stop_) return;
    if (!conn.ok()) {
      log->warn("replication connection refused: {}", conn.status().message());
      continue;
    }
    std::lock_guard lock(mu_);
    // Reap finished sessions.
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      if ((*it)->done) {
        (*it)->thread.join();
        it = sessions_.erase(it);
      } else {
        ++it;
      }
    }
    auto s = std::make_unique<Session>();
    s->conn = std::move(conn).value();
    Session* raw = s.get();
    s->thread = std::thread([this, raw] {
      Serve(raw->conn.get());
      raw->done = true;
    });
    sessions_.push_back(std::move(s));
  }
}

void Receiver::Serve(net::Connection* conn) {
  std::string replica;
  Status st = ServeStream(conn, &replica);
  if (!st.ok()) {
    Logger("replication")->warn("replication from {} ({}): {}", conn->PeerName(), replica, st.message());
    // Tell the source why, best effort: it logs it and retries later.
    WriteJsonFrame(*conn, FrameType::kError,
                   {{"code", std::string(StatusCodeName(st.code()))}, {"message", st.message()}})
        .IgnoreError();
    if (!replica.empty()) provider_->Event(replica, "replication_error", st.message());
  }
  if (!replica.empty()) provider_->Detach(replica);
  conn->Shutdown();
}

Status Receiver::ServeVerify(net::Connection* conn, const HelloInfo& hello, const nlohmann::json& request) {
  CONTINUUM_ASSIGN_OR_RETURN(uint64_t seq, Field<uint64_t>(request, "seq", 0, "verify request", *conn));
  CONTINUUM_ASSIGN_OR_RETURN(uint64_t range, Field<uint64_t>(request, "range_bytes", 0, "verify request", *conn));
  if (range < 4096 || range > (64ull << 20) || range % 4096 != 0) {
    return InvalidArgument("verify range of " + std::to_string(range) + " bytes is not supported");
  }
  if (hello.size / range >= kMaxFramePayload / sizeof(uint64_t)) {
    return InvalidArgument("verify of " + std::to_string(hello.size) + " bytes needs a larger range size");
  }
  CONTINUUM_ASSIGN_OR_RETURN(auto sums, provider_->ReplicaChecksums(hello, seq, range));
  return WriteFrame(*conn, FrameType::kVerifySums,
                    {reinterpret_cast<const uint8_t*>(sums.data()), sums.size() * sizeof(uint64_t)});
}

Status Receiver::ServeDiff(net::Connection* conn, const HelloInfo& hello) {
  CONTINUUM_ASSIGN_OR_RETURN(auto rep, provider_->LiveReplica(hello));
  CONTINUUM_RETURN_IF_ERROR(WriteJsonFrame(*conn, FrameType::kHelloAck, {{"replica", rep.name}}));
  uint64_t compared = 0;
  for (;;) {
    auto fr = ReadFrame(*conn);
    if (!fr.ok()) {
      if (fr.status().code() != StatusCode::kUnavailable) return fr.status();
      provider_->Event(rep.name, "diff_sync_served", "compared " + std::to_string(compared) + " bytes");
      return Status::Ok();  // the source is done (or went away)
    }
    if (fr->type == FrameType::kHeartbeat) continue;
    if (fr->type != FrameType::kDiffRequest) {
      return InvalidArgument("unexpected frame type " + std::to_string(static_cast<int>(fr->type)) +
                             " in a differential sync");
    }
    CONTINUUM_ASSIGN_OR_RETURN(auto j, FrameJson(*fr));
    CONTINUUM_ASSIGN_OR_RETURN(auto req, ParseDiffRequest(j, hello.size));
    CONTINUUM_ASSIGN_OR_RETURN(auto sums, ServeDiffRequest(*rep.volume, req));
    for (const auto& r : req.ranges) compared += r.length;
    CONTINUUM_RETURN_IF_ERROR(WriteFrame(*conn, FrameType::kDiffSums,
                                         {reinterpret_cast<const uint8_t*>(sums.data()), sums.size() * sizeof(uint64_t)}));
  }
}

Status Receiver::ServeStream(net::Connection* raw_conn, std::string* replica_name) {
  // Every frame goes through the monitor: it notices a silent source (with
  // heartbeats on) and serializes our ACKs with our heartbeats.
  MonitoredConnection monitored(*raw_conn);
  net::Connection* conn = &monitored;
  CONTINUUM_ASSIGN_OR_RETURN(Frame f, ReadFrame(*conn));
  if (f.type != FrameType::kHello && f.type != FrameType::kVerify && f.type != FrameType::kDiff) {
    return InvalidArgument("expected a hello from " + conn->PeerName());
  }
  CONTINUUM_ASSIGN_OR_RETURN(auto j, FrameJson(f));
  HelloInfo hello;
  hello.peer = conn->PeerName();
  CONTINUUM_ASSIGN_OR_RETURN(hello.source, Field<std::string>(j, "source", "", "hello", *conn));
  CONTINUUM_ASSIGN_OR_RETURN(hello.volume, Field<std::string>(j, "volume", "", "hello", *conn));
  CONTINUUM_ASSIGN_OR_RETURN(hello.size, Field<uint64_t>(j, "size", 0, "hello", *conn));
  CONTINUUM_ASSIGN_OR_RETURN(hello.block_size, Field<uint32_t>(j, "block_size", 0, "hello", *conn));
  if (hello.source.empty() || hello.volume.empty() || hello.size == 0 || hello.block_size == 0) {
    return InvalidArgument("bad hello from " + conn->PeerName() + ": it needs source, volume, size and block_size");
  }
  CONTINUUM_ASSIGN_OR_RETURN(int version, Field<int>(j, "version", 0, "hello", *conn));
  if (version != kProtocolVersion) {
    return FailedPrecondition("protocol version " + std::to_string(version) + " is not supported");
  }
  if (f.type == FrameType::kVerify) return ServeVerify(conn, hello, j);
  if (f.type == FrameType::kDiff) return ServeDiff(conn, hello);
  CONTINUUM_ASSIGN_OR_RETURN(auto rep, provider_->Attach(hello));
  *replica_name = rep.name;
  auto vol = rep.volume;
  CONTINUUM_RETURN_IF_ERROR(vol->Flush());
  uint64_t durable = vol->LastSeq();
  // Heartbeats only with a source that announced them (an older one would
  // refuse the frame); the source chooses interval and timeout for both ends.
  std::optional<Heartbeat> heartbeat;
  HeartbeatOptions hb;
  CONTINUUM_ASSIGN_OR_RETURN(hb.interval_ms, Field<int>(j, "heartbeat_ms", 0, "hello", *conn));
  CONTINUUM_ASSIGN_OR_RETURN(hb.timeout_ms, Field<int>(j, "peer_timeout_ms", 0, "hello", *conn));
  CONTINUUM_ASSIGN_OR_RETURN(int ack_delay_ms, Field<int>(j, "ack_delay_ms", 0, "hello", *conn));
  nlohmann::json hello_ack{{"replica", rep.name}, {"durable_seq", durable}, {"new", rep.created}, {"diff", true},
                             {"seed", true}};
  if (hb.interval_ms > 0 && hb.timeout_ms > 0) hello_ack["heartbeat_ms"] = hb.interval_ms;
  CONTINUUM_RETURN_IF_ERROR(WriteJsonFrame(*conn, FrameType::kHelloAck, hello_ack));
  if (hb.interval_ms > 0 && hb.timeout_ms > 0) heartbeat.emplace(monitored, hb);
  provider_->Event(rep.name, "source_connected", "from " + conn->PeerName() + " at seq " + std::to_string(durable));
  FrameReadAhead ahead(*conn);
  ack_delay_ms = std::clamp(ack_delay_ms, 0, 1000);
  Status st = ApplyStream(conn, rep, ahead, ack_delay_ms, monitored);
  if (!st.ok()) {
    // Tell the source why before `ahead` shuts the connection down (Serve
    // tries again; that one fails quietly).
    WriteJsonFrame(*conn, FrameType::kError,
                   {{"code", std::string(StatusCodeName(st.code()))}, {"message", st.message()}})
        .IgnoreError();
  }
  return st;
}

Status Receiver::ApplyStream(net::Connection* conn, const ReplicaProvider::Replica& rep, FrameReadAhead& ahead, int ack_delay_ms,
                             MonitoredConnection& monitored) {
  auto vol = rep.volume;
  // Record frames are acknowledged after a flush of the replica. While more
  // frames are already waiting (a stream catching up), one flush covers
  // several of them, up to kFlushBytes or kFlushNs; a source waiting for its
  // ack (sync mode) sends nothing more, so it gets it at once.
  constexpr uint64_t kFlushBytes = 32ull << 20;
  constexpr int64_t kFlushNs = 50'000'000;
  uint64_t unflushed_seq = 0, unflushed_bytes = 0;
  int64_t unflushed_since = 0;
  // An async source's frames, held for one batch (ack_delay_ms).
  const int64_t hold_ns = int64_t{ack_delay_ms} * 1'000'000;
  std::vector<WireRecord> held;
  auto admit_held = [&]() -> Status {
    if (held.empty()) return Status::Ok();
    CONTINUUM_RETURN_IF_ERROR(vol->AdmitReplicatedBatch(held));
    unflushed_seq = std::max(unflushed_seq, held.back().header.seq);
    held.clear();
    return Status::Ok();
  };
  auto flush_and_ack = [&]() -> Status {
    CONTINUUM_RETURN_IF_ERROR(admit_held());
    if (unflushed_seq == 0) return Status::Ok();
    // Durable before acknowledged: the source may free what we ack.
    CONTINUUM_RETURN_IF_ERROR(vol->Flush());
    CONTINUUM_RETURN_IF_ERROR(WriteJsonFrame(*conn, FrameType::kAck, {{"durable_seq", unflushed_seq}}));
    unflushed_seq = unflushed_bytes = 0;
    return Status::Ok();
  };
  for (;;) {
    FrameReadAhead::Item item = ahead.Next();
    if (!item.status.ok()) {
      // Whatever was admitted and not acknowledged is sent again (a resend is ignored).
      if (std::string why = monitored.expired(); !why.empty()) {
        provider_->Event(rep.name, "source_lost", why);
        return Status::Ok();
      }
      if (item.status.code() == StatusCode::kUnavailable) return Status::Ok();  // source went away
      return item.status;
    }
    Frame* fr = &item.frame;
    // Anything but more records: acknowledge what was admitted first.
    if (fr->type != FrameType::kRecords) CONTINUUM_RETURN_IF_ERROR(flush_and_ack());
    switch (fr->type) {
      case FrameType::kHeartbeat:
        break;
      case FrameType::kRecords: {
        std::vector<WireRecord>& recs = item.records;
        if (recs.empty()) break;
        if (unflushed_seq == 0 && held.empty()) unflushed_since = MonoNowNs();
        unflushed_bytes += item.bytes;
        if (hold_ns > 0) {
          // Async: apply the frames of up to ack_delay_ms together (one
          // undo sync, one flush); the source does not wait for the ack.
          std::move(recs.begin(), recs.end(), std::back_inserter(held));
          int64_t age = MonoNowNs() - unflushed_since;
          if (unflushed_bytes >= kFlushBytes || age >= hold_ns || !ahead.WaitReady(hold_ns - age)) {
            CONTINUUM_RETURN_IF_ERROR(flush_and_ack());
          }
          break;
        }
        CONTINUUM_RETURN_IF_ERROR(vol->AdmitReplicatedBatch(recs));
        unflushed_seq = std::max(unflushed_seq, recs.back().header.seq);
        if (!ahead.Ready() || unflushed_bytes >= kFlushBytes || MonoNowNs() - unflushed_since >= kFlushNs) {
          CONTINUUM_RETURN_IF_ERROR(flush_and_ack());
        }
        break;
      }
      case FrameType::kSeedBegin: {
        CONTINUUM_ASSIGN_OR_RETURN(auto sj, FrameJson(*fr));
        CONTINUUM_ASSIGN_OR_RETURN(uint64_t seq, Field<uint64_t>(sj, "seq", 0, "SEED_BEGIN", *conn));
        if (vol->LastSeq() != 0) {
          return FailedPrecondition("replica " + rep.name + " already holds seq " + std::to_string(vol->LastSeq()) +
                                    "; delete it on this server to seed it again");
        }
        provider_->Event(rep.name, "seed_started", "as of seq " + std::to_string(seq) +
                                                       " (no point is available until it completes)");
        break;
      }
      case FrameType::kSeedData: {
        for (auto& r : item.records) {
          auto kind = static_cast<journal::WriteKind>(r.header.kind);
          if (kind != journal::WriteKind::kWrite && kind != journal::WriteKind::kZero) {
            return InvalidArgument("seed record of kind " + std::to_string(r.header.kind) + " from " +
                                   conn->PeerName());
          }
          if (kind == journal::WriteKind::kWrite && r.data.size() != r.header.length) {
            return InvalidArgument("seed record at " + std::to_string(r.header.offset) + " from " +
                                   conn->PeerName() + " has a bad length");
          }
          CONTINUUM_RETURN_IF_ERROR(vol->WriteSeed(r.header.offset, r.header.length,
                                                   kind == journal::WriteKind::kZero
                                                       ? std::span<const uint8_t>()
                                                       : std::span<const uint8_t>(r.data)));
        }
        break;
      }
      case FrameType::kSeedDone: {
        CONTINUUM_ASSIGN_OR_RETURN(auto sj, FrameJson(*fr));
        CONTINUUM_ASSIGN_OR_RETURN(uint64_t seq, Field<uint64_t>(sj, "seq", 0, "SEED_DONE", *conn));
        CONTINUUM_ASSIGN_OR_RETURN(int64_t ts_ns, Field<int64_t>(sj, "ts_ns", 0, "SEED_DONE", *conn));
        if (seq == 0) return InvalidArgument("seed from " + conn->PeerName() + " ends at seq 0");
        CONTINUUM_RETURN_IF_ERROR(vol->EndSeed(seq, ts_ns));
        CONTINUUM_RETURN_IF_ERROR(vol->Flush());
        provider_->Event(rep.name, "seed_done", "replica holds seq " + std::to_string(seq));
        CONTINUUM_RETURN_IF_ERROR(WriteJsonFrame(*conn, FrameType::kAck, {{"durable_seq", seq}}));
        break;
      }
      case FrameType::kResyncBegin: {
        CONTINUUM_ASSIGN_OR_RETURN(auto rj, FrameJson(*fr));
        CONTINUUM_ASSIGN_OR_RETURN(uint64_t first, Field<uint64_t>(rj, "first_seq", 0, "RESYNC_BEGIN", *conn));
        CONTINUUM_ASSIGN_OR_RETURN(uint64_t last, Field<uint64_t>(rj, "last_seq", 0, "RESYNC_BEGIN", *conn));
        provider_->ResyncBegin(rep.name, first, last);
        break;
      }
      case FrameType::kResyncDone: {
        CONTINUUM_ASSIGN_OR_RETURN(auto rj, FrameJson(*fr));
        CONTINUUM_ASSIGN_OR_RETURN(uint64_t at, Field<uint64_t>(rj, "consistent_at", 0, "RESYNC_DONE", *conn));
        provider_->ResyncDone(rep.name, at);
        break;
      }
      case FrameType::kError: {
        return Unavailable("source reported: " + ErrorMessage(*fr));
      }
      default:
        return InvalidArgument("unexpected frame type " + std::to_string(static_cast<int>(fr->type)));
    }
  }
}

}  // namespace continuum::replication
