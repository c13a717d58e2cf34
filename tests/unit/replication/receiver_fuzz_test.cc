// Fuzzes the replication receiver (src/replication/receiver.cc) the way a
// DR server meets it: over a real TCP connection (insecure mode), applying to
// a real replica volume. Each session is what a source sends (HELLO and
// RECORDS, resync marks, a seed, a verify or a differential sync request),
// then mutated at random: bytes flipped, the stream cut short, JSON fields
// given another type or dropped, record headers resealed with bad ranges,
// frames of unknown types or with codec flags over plain bytes.
//
// What must hold, whatever arrives: the server never crashes or hangs (it
// closes every session once the client half-closes), it answers only with
// well-formed frames, an ERROR frame names what was wrong, the replica never
// fails because of what a peer sent, and a clean session afterwards lands
// byte for byte. CONTINUUM_FUZZ_SESSIONS scales the run (default 400).
#include "continuum/replication/receiver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>

#include "continuum/common/checksum.h"
#include "continuum/common/time_util.h"
#include "continuum/replication/codec.h"
#include "continuum/replication/frame.h"

namespace continuum::replication {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr uint64_t kVolBytes = 8ull << 20;
constexpr uint32_t kBlock = 4096;
constexpr const char* kReplica = "src.v";

// The server's provider, reduced to one replica: a real CDP replica volume.
class FuzzProvider : public ReplicaProvider {
 public:
  explicit FuzzProvider(fs::path dir) : dir_(std::move(dir)) {}
  ~FuzzProvider() override {
    if (vol_) vol_->Close().IgnoreError();
  }

  Result<Replica> Attach(const HelloInfo& h) override {
    if (h.source != "src" || h.volume != "v") return NotFound("no replica for " + h.source + "." + h.volume);
    if (h.size != kVolBytes) return FailedPrecondition("replica " + std::string(kReplica) + " has another size");
    std::lock_guard lock(mu_);
    if (attached_) return FailedPrecondition("replica already has a source connected");
    bool created = false;
    if (!vol_) {
      CONTINUUM_ASSIGN_OR_RETURN(vol_, OpenReplica());
      created = true;
    }
    attached_ = true;
    return Replica{kReplica, vol_, created};
  }
  void Detach(const std::string&) override {
    std::lock_guard lock(mu_);
    attached_ = false;
    detached_cv_.notify_all();
  }
  // The session that attached the replica has ended (the close a client
  // sees comes first: the server applies what it read before it ends).
  bool WaitDetached(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return detached_cv_.wait_for(lock, timeout, [&] { return !attached_; });
  }
  void ResyncBegin(const std::string&, uint64_t, uint64_t) override {}
  void ResyncDone(const std::string&, uint64_t) override {}
  void Event(const std::string&, const std::string&, const std::string&) override {}
  Result<std::vector<uint64_t>> ReplicaChecksums(const HelloInfo& h, uint64_t seq, uint64_t range) override {
    CONTINUUM_ASSIGN_OR_RETURN(auto rep, LiveReplica(h));
    if (seq != rep.volume->LastSeq()) return FailedPrecondition("fuzz provider: only the newest seq");
    std::vector<uint64_t> sums;
    std::vector<uint8_t> buf;
    for (uint64_t off = 0; off < kVolBytes; off += range) {
      buf.resize(std::min(range, kVolBytes - off));
      CONTINUUM_RETURN_IF_ERROR(rep.volume->Read(off, buf));
      sums.push_back(Checksum64(buf));
    }
    return sums;
  }
  Result<Replica> LiveReplica(const HelloInfo& h) override {
    std::lock_guard lock(mu_);
    if (!vol_ || h.size != kVolBytes) return FailedPrecondition("no replica of that size");
    return Replica{kReplica, vol_, false};
  }

  std::shared_ptr<volume::Volume> volume() {
    std::lock_guard lock(mu_);
    return vol_;
  }

 private:
  Result<std::shared_ptr<volume::Volume>> OpenReplica() {
    volume::VolumeConfig cfg;
    cfg.name = kReplica;
    cfg.backing = (dir_ / "replica.img").string();
    cfg.size = kVolBytes;
    cfg.journal_bytes = 32ull << 20;
    cfg.replica = true;
    cfg.created_ts_ns = WallNowNs();
    std::ofstream(cfg.backing).close();
    fs::resize_file(cfg.backing, kVolBytes);
    return volume::Volume::Open(cfg, (dir_ / "state").string(), nullptr);
  }

  fs::path dir_;
  std::mutex mu_;
  std::shared_ptr<volume::Volume> vol_;
  std::condition_variable detached_cv_;
  bool attached_ = false;
};

// One frame as the server sent it.
struct ReplyFrame {
  FrameType type;
  json body;  // parsed when the payload is JSON
};

struct Reply {
  bool closed = false;     // the server closed the connection in time
  bool malformed = false;  // bytes that are not a well-formed frame
  std::vector<ReplyFrame> frames;
};

// Splits what the server sent into frames, checking every header and payload.
void ParseReply(const std::vector<uint8_t>& in, Reply* r) {
  size_t pos = 0;
  while (pos < in.size()) {
    if (in.size() - pos < 32) {
      r->malformed = true;
      return;
    }
    uint32_t magic, len;
    uint16_t type;
    uint64_t psum, hsum;
    std::memcpy(&magic, &in[pos], 4);
    std::memcpy(&type, &in[pos + 4], 2);
    std::memcpy(&len, &in[pos + 8], 4);
    std::memcpy(&psum, &in[pos + 16], 8);
    std::memcpy(&hsum, &in[pos + 24], 8);
    if (magic != kFrameMagic || hsum != Checksum64(&in[pos], 24) || in.size() - pos - 32 < len ||
        psum != Checksum64(&in[pos + 32], len)) {
      r->malformed = true;
      return;
    }
    ReplyFrame f{static_cast<FrameType>(type), json()};
    auto t = static_cast<FrameType>(type);
    if (t != FrameType::kVerifySums && t != FrameType::kDiffSums) {
      f.body = json::parse(in.begin() + static_cast<std::ptrdiff_t>(pos + 32),
                           in.begin() + static_cast<std::ptrdiff_t>(pos + 32 + len), nullptr, false);
    }
    r->frames.push_back(std::move(f));
    pos += 32 + len;
  }
}

// True when `got` holds an ACK for `seq` or later.
bool Acked(const std::vector<uint8_t>& got, uint64_t seq) {
  Reply r;
  ParseReply(got, &r);
  return std::any_of(r.frames.begin(), r.frames.end(), [&](const ReplyFrame& f) {
    return f.type == FrameType::kAck && f.body.is_object() && f.body.value("durable_seq", uint64_t{0}) >= seq;
  });
}

// Sends `bytes` on a fresh connection; with `want_ack`, waits for the ACK of
// that seq (a source waits for its acks); half-closes, and reads until the
// server closes (or `timeout_ms` passes).
Reply RunSession(uint16_t port, const std::vector<uint8_t>& bytes, int timeout_ms, uint64_t want_ack = 0) {
  Reply r;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ADD_FAILURE() << "connect: " << std::strerror(errno);
    ::close(fd);
    return r;
  }
  std::vector<uint8_t> got;
  // Read while sending: the server may answer (and close) before it has
  // read everything.
  auto drain = [&](int wait_ms) {
    pollfd p{fd, POLLIN, 0};
    while (::poll(&p, 1, wait_ms) > 0) {
      uint8_t buf[65536];
      ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n == 0) return true;
      if (n < 0) return errno != EAGAIN && errno != EINTR;
      got.insert(got.end(), buf, buf + n);
      wait_ms = 0;
    }
    return false;
  };
  bool eof = false;
  for (size_t sent = 0; sent < bytes.size() && !eof;) {
    ssize_t n = ::send(fd, bytes.data() + sent, std::min<size_t>(bytes.size() - sent, 65536),
                       MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) sent += static_cast<size_t>(n);
    if (n < 0 && errno != EAGAIN && errno != EINTR) break;  // the server hung up
    eof = drain(n < 0 ? 10 : 0);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (want_ack > 0 && !eof && !Acked(got, want_ack) && std::chrono::steady_clock::now() < deadline) {
    eof = drain(50);
  }
  ::shutdown(fd, SHUT_WR);
  while (!eof && std::chrono::steady_clock::now() < deadline) eof = drain(50);
  r.closed = eof;
  ::close(fd);
  ParseReply(got, &r);
  return r;
}

// Builds and mutates sessions.
class Fuzzer {
 public:
  explicit Fuzzer(uint64_t seed) : rng_(seed) {}

  uint64_t Pick(uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_); }
  bool Chance(int pct) { return static_cast<int>(Pick(100)) < pct; }

  // A JSON value of a random type (for a field that expects something else).
  json WildValue() {
    switch (Pick(10)) {
      case 0: return "12";
      case 1: return -1;
      case 2: return 1e300;
      case 3: return json::array({1, 2});
      case 4: return json::object({{"x", 1}});
      case 5: return nullptr;
      case 6: return true;
      case 7: return UINT64_MAX;
      case 8: return INT64_MIN;
      default: return 0;
    }
  }

  // Drops a field or gives it a wild value.
  void MutateJson(json* j) {
    if (!j->is_object() || j->empty()) return;
    auto it = j->begin();
    std::advance(it, static_cast<std::ptrdiff_t>(Pick(j->size())));
    if (Chance(25)) {
      j->erase(it);
    } else {
      *it = WildValue();
    }
  }

  std::vector<uint8_t> JsonFrame(FrameType t, json j, bool mutate) {
    if (mutate) MutateJson(&j);
    std::string s = mutate && Chance(10) ? std::string("[") : j.dump();  // now and then not JSON at all
    return EncodeFrame(t, {reinterpret_cast<const uint8_t*>(s.data()), s.size()});
  }

  // A write record; with `mutate`, a header field gets a bad value and the
  // record is resealed, so only the receiver's own checks can catch it.
  void AddRecord(std::vector<uint8_t>* batch, uint64_t seq, bool mutate) {
    journal::RecordHeader h;
    uint64_t blocks = 1 + Pick(16);
    h.kind = static_cast<uint16_t>(Chance(15) ? journal::WriteKind::kZero : journal::WriteKind::kWrite);
    h.seq = seq;
    h.ts_ns = WallNowNs();
    h.offset = Pick(kVolBytes / kBlock - blocks + 1) * kBlock;
    h.length = blocks * kBlock;
    std::vector<uint8_t> data;
    if (h.kind == static_cast<uint16_t>(journal::WriteKind::kWrite)) {
      data.resize(h.length);
      for (auto& b : data) b = static_cast<uint8_t>(rng_());
    }
    if (mutate) {
      switch (Pick(9)) {
        case 0: h.offset = UINT64_MAX - kBlock + 1; h.length = 2 * kBlock; break;  // wraps around
        case 1: h.offset = kVolBytes; break;
        case 2: h.offset += 1; break;
        case 3: h.length = h.length ? h.length - 1 : 1; break;
        case 4: h.kind = static_cast<uint16_t>(Pick(7)); break;
        case 5: h.length = UINT64_MAX; break;
        case 6: h.seq = Pick(2) ? 0 : UINT64_MAX; break;
        case 7: data.resize(Pick(kBlock)); break;  // payload shorter than the range
        default: h.flags = static_cast<uint32_t>(rng_()); break;
      }
    }
    AppendRecord(batch, h, data);
  }

  std::vector<uint8_t> RecordsFrame(uint64_t* seq, bool mutate) {
    std::vector<uint8_t> batch;
    size_t n = 1 + Pick(4);
    size_t bad = mutate ? Pick(n) : n;
    for (size_t i = 0; i < n; ++i) AddRecord(&batch, ++*seq, i == bad);
    uint16_t flags = mutate && Chance(20) ? static_cast<uint16_t>(1 + Pick(3)) : 0;  // codec over raw bytes
    return EncodeFrame(FrameType::kRecords, batch, flags);
  }

  json Hello(uint64_t last_seq) {
    return {{"version", kProtocolVersion}, {"source", "src"}, {"volume", "v"}, {"size", kVolBytes},
            {"block_size", kBlock}, {"last_seq", last_seq}, {"heartbeat_ms", 0}, {"peer_timeout_ms", 0},
            {"ack_delay_ms", Chance(50) ? 20 : 0}};
  }

  // A session: one kind of exchange, perhaps with one structured mutation,
  // then perhaps flipped bytes or a cut. *last_seq: the seq of its last record.
  std::vector<uint8_t> Session(uint64_t replica_seq, bool mutate, uint64_t* last_seq) {
    std::vector<std::vector<uint8_t>> frames;
    uint64_t seq = replica_seq;
    const uint64_t kind = Pick(10);
    // Which frame gets the structured mutation (if any).
    const size_t nframes = 2 + Pick(5);
    const size_t target = mutate && Chance(70) ? Pick(nframes) : SIZE_MAX;
    auto add_json = [&](FrameType t, json j) { frames.push_back(JsonFrame(t, std::move(j), frames.size() == target)); };
    if (kind == 0) {  // online verify
      add_json(FrameType::kVerify, [&] {
        json j = Hello(seq);
        j["seq"] = seq;
        j["range_bytes"] = uint64_t{1} << (12 + Pick(10));
        return j;
      }());
    } else if (kind == 1) {  // differential sync
      add_json(FrameType::kDiff, Hello(seq));
      for (size_t i = 1; i < nframes; ++i) {
        add_json(FrameType::kDiffRequest,
                 {{"range_bytes", 4096}, {"ranges", {{Pick(kVolBytes / kBlock) * kBlock, 4096 * (1 + Pick(8))}}}});
      }
    } else {
      add_json(FrameType::kHello, Hello(seq));
      for (size_t i = 1; i < nframes; ++i) {
        const uint64_t what = Pick(mutate ? 12 : 10);  // a clean session neither seeds nor gives up
        if (what < 7) {
          frames.push_back(RecordsFrame(&seq, frames.size() == target));
        } else if (what == 7) {
          add_json(FrameType::kResyncBegin, {{"first_seq", seq + 1}, {"last_seq", seq + 4}});
        } else if (what == 8) {
          add_json(FrameType::kResyncDone, {{"consistent_at", seq}});
        } else if (what == 9) {
          frames.push_back(EncodeFrame(FrameType::kHeartbeat, {}));
        } else if (what == 10) {  // a seed (refused unless the replica is empty)
          add_json(FrameType::kSeedBegin, {{"seq", seq + 10}, {"ts_ns", WallNowNs()}});
          std::vector<uint8_t> batch;
          AddRecord(&batch, seq + 10, frames.size() == target);
          frames.push_back(EncodeFrame(FrameType::kSeedData, batch));
          add_json(FrameType::kSeedDone, {{"seq", seq + 10}, {"ts_ns", WallNowNs()}});
          seq += 10;
        } else {
          add_json(FrameType::kError, {{"code", "internal"}, {"message", "source gives up"}});
        }
      }
      if (mutate && Chance(15)) {  // a type nobody knows, well formed
        frames.insert(frames.begin() + 1, EncodeFrame(static_cast<FrameType>(17 + Pick(1000)), {}));
      }
    }
    *last_seq = seq;
    std::vector<uint8_t> out;
    for (auto& f : frames) out.insert(out.end(), f.begin(), f.end());
    if (mutate && target == SIZE_MAX) {
      if (Chance(50)) {
        for (uint64_t n = 1 + Pick(8); n > 0; --n) out[Pick(out.size())] ^= static_cast<uint8_t>(1 + Pick(255));
      } else if (Chance(50)) {
        out.resize(Pick(out.size()));
      } else {
        // A header that promises a huge payload (valid checksum).
        std::vector<uint8_t> big = EncodeFrame(FrameType::kRecords, {});
        uint32_t len = Chance(50) ? kMaxFramePayload + 1 : kMaxFramePayload;
        std::memcpy(&big[8], &len, 4);
        uint64_t hs = Checksum64(big.data(), 24);
        std::memcpy(&big[24], &hs, 8);
        out.insert(out.begin() + static_cast<std::ptrdiff_t>(frames[0].size()), big.begin(), big.end());
      }
    }
    return out;
  }

 private:
  std::mt19937_64 rng_;
};

class ReceiverFuzzTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("continuum-receiver-fuzz-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    provider_ = std::make_unique<FuzzProvider>(dir_);
    net::TlsOptions tls;
    tls.insecure = true;
    tls.io_timeout_ms = 5000;
    auto l = net::Listener::Listen("127.0.0.1:0", tls);
    ASSERT_TRUE(l.ok()) << l.status().ToString();
    std::string addr = (*l)->Address();
    port_ = static_cast<uint16_t>(std::stoi(addr.substr(addr.rfind(':') + 1)));
    auto r = Receiver::Start(std::move(l).value(), provider_.get());
    ASSERT_TRUE(r.ok());
    receiver_ = std::move(r).value();
  }
  void TearDown() override {
    if (receiver_) receiver_->Stop();
    receiver_.reset();
    provider_.reset();
    fs::remove_all(dir_);
  }

  fs::path dir_;
  std::unique_ptr<FuzzProvider> provider_;
  std::unique_ptr<Receiver> receiver_;
  uint16_t port_ = 0;
};

TEST_F(ReceiverFuzzTest, MutatedSessionsNeverCrashHangOrFailTheReplica) {
  int sessions = 400;
  if (const char* e = std::getenv("CONTINUUM_FUZZ_SESSIONS")) sessions = std::atoi(e);
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Fuzzer fz(seed);
  int clean_acked = 0, refused = 0;
  for (int i = 0; i < sessions; ++i) {
    auto vol = provider_->volume();
    const uint64_t replica_seq = vol ? vol->LastSeq() : 0;
    const bool mutate = i % 4 != 0;
    uint64_t last_seq = 0;
    std::vector<uint8_t> bytes = fz.Session(replica_seq, mutate, &last_seq);
    // A clean stream session must be acknowledged up to its last record.
    const bool stream = !mutate && last_seq > replica_seq && bytes.size() > 4 &&
                        static_cast<FrameType>(bytes[4] | bytes[5] << 8) == FrameType::kHello;
    Reply r = RunSession(port_, bytes, 10000, stream ? last_seq : 0);
    ASSERT_TRUE(r.closed) << "session " << i << ": the server did not close the connection within 10 s";
    ASSERT_FALSE(r.malformed) << "session " << i << ": the server sent bytes that are not a frame";
    ASSERT_TRUE(provider_->WaitDetached(std::chrono::seconds(10)))
        << "session " << i << ": the server's session did not end within 10 s of the close";
    for (const auto& f : r.frames) {
      if (f.type != FrameType::kError) continue;
      ++refused;
      ASSERT_TRUE(f.body.is_object() && f.body.contains("message") && f.body["message"].is_string() &&
                  !f.body["message"].get<std::string>().empty())
          << "session " << i << ": an ERROR frame without a message: " << f.body.dump();
    }
    if (stream) {
      ASSERT_FALSE(r.frames.empty()) << "session " << i;
      ASSERT_EQ(r.frames.back().type, FrameType::kAck) << "session " << i << ": " << r.frames.back().body.dump();
      ASSERT_EQ(r.frames.back().body.value("durable_seq", uint64_t{0}), last_seq) << "session " << i;
      ++clean_acked;
    }
    if ((vol = provider_->volume())) {
      ASSERT_EQ(vol->Stats().error, "") << "session " << i << ": peer input failed the replica";
      ASSERT_GE(vol->LastSeq(), replica_seq) << "session " << i;
    }
  }
  EXPECT_GT(refused, sessions / 4) << "the mutations should be refused often";
  EXPECT_GT(clean_acked, 0) << "no clean session was acknowledged";

  // A clean session afterwards lands byte for byte.
  auto vol = provider_->volume();
  ASSERT_NE(vol, nullptr);
  uint64_t seq = vol->LastSeq();
  std::vector<uint8_t> data(64 * 1024);
  for (size_t k = 0; k < data.size(); ++k) data[k] = static_cast<uint8_t>(k * 7 + 3);
  json hello{{"version", kProtocolVersion}, {"source", "src"}, {"volume", "v"}, {"size", kVolBytes},
             {"block_size", kBlock}, {"last_seq", seq + 1}};
  std::string hs = hello.dump();
  std::vector<uint8_t> bytes = EncodeFrame(FrameType::kHello, {reinterpret_cast<const uint8_t*>(hs.data()), hs.size()});
  std::vector<uint8_t> batch;
  journal::RecordHeader h;
  h.kind = static_cast<uint16_t>(journal::WriteKind::kWrite);
  h.seq = seq + 1;
  h.ts_ns = WallNowNs();
  h.offset = 1 << 20;
  h.length = data.size();
  AppendRecord(&batch, h, data);
  auto rf = EncodeFrame(FrameType::kRecords, batch);
  bytes.insert(bytes.end(), rf.begin(), rf.end());
  Reply r = RunSession(port_, bytes, 10000, seq + 1);
  ASSERT_TRUE(r.closed);
  ASSERT_FALSE(r.frames.empty());
  EXPECT_EQ(r.frames.back().type, FrameType::kAck) << r.frames.back().body.dump();
  EXPECT_EQ(vol->LastSeq(), seq + 1);
  std::vector<uint8_t> got(data.size());
  ASSERT_TRUE(vol->Read(1 << 20, got).ok());
  EXPECT_EQ(got, data);
}

}  // namespace
}  // namespace continuum::replication
