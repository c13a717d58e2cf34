// Fuzzes the replication sender (src/replication/target_sender.cc) from the
// other end: a fake target answers a real TargetSender of a real volume with
// broken replies — garbage bytes, HELLO_ACK and ACK fields of other types or
// absurd values, ERROR frames without a message, unknown frame types, a close
// at any point — and the sender's state file starts out damaged.
//
// The source is the production host, so what must hold is strict: the agent
// never crashes, the application's writes to the volume all succeed and read
// back while the target misbehaves, the sender reports what went wrong, and
// Stop returns promptly.
#include "continuum/replication/target_sender.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "continuum/common/time_util.h"
#include "continuum/net/listener.h"
#include "continuum/replication/frame.h"

namespace continuum::replication {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr uint64_t kVolBytes = 8ull << 20;

json WildValue(std::mt19937_64& rng) {
  switch (rng() % 9) {
    case 0: return "12";
    case 1: return -1;
    case 2: return 1e300;
    case 3: return json::array({1});
    case 4: return json::object({{"x", 1}});
    case 5: return nullptr;
    case 6: return true;
    case 7: return UINT64_MAX;
    default: return INT64_MIN;
  }
}

// Accepts the sender's connections and answers each in one randomly chosen
// broken (or, now and then, proper) way.
class FakeTarget {
 public:
  explicit FakeTarget(uint64_t seed) : rng_(seed) {
    net::TlsOptions tls;
    tls.insecure = true;
    tls.io_timeout_ms = 3000;
    auto l = net::Listener::Listen("127.0.0.1:0", tls);
    EXPECT_TRUE(l.ok()) << l.status().ToString();
    listener_ = std::move(l).value();
    thread_ = std::thread([this] { Loop(); });
  }
  ~FakeTarget() {
    closed_ = true;
    listener_->Close();
    thread_.join();
  }
  std::string Address() const { return listener_->Address(); }
  int connections() const { return connections_; }

 private:
  void Loop() {
    for (;;) {
      auto c = listener_->Accept();
      if (!c.ok()) {
        if (closed_) return;
        continue;
      }
      ++connections_;
      Serve(**c);
      (*c)->Shutdown();
    }
  }

  void SendJson(net::Connection& c, FrameType t, const json& j) { WriteJsonFrame(c, t, j).IgnoreError(); }

  void Serve(net::Connection& c) {
    auto hello = ReadFrame(c);
    if (!hello.ok()) return;
    switch (rng_() % 6) {
      case 0: {  // not a frame at all
        std::vector<uint8_t> junk(1 + rng_() % 200);
        for (auto& b : junk) b = static_cast<uint8_t>(rng_());
        c.SendAll(junk).IgnoreError();
        return;
      }
      case 1:  // an error without a (readable) message
        SendJson(c, FrameType::kError, {{"code", WildValue(rng_)}, {"message", WildValue(rng_)}});
        return;
      case 2:  // a frame of another type
        WriteFrame(c, static_cast<FrameType>(1 + rng_() % 40), {}).IgnoreError();
        return;
      case 3:  // close at once
        return;
      default:
        break;
    }
    json ack{{"replica", "src.v"}, {"durable_seq", rng_() % 3 == 0 ? rng_() % 50 : 0},
             {"new", rng_() % 2 == 0}, {"diff", rng_() % 2 == 0}, {"seed", false}};
    if (rng_() % 2 == 0) {
      auto it = ack.begin();
      std::advance(it, static_cast<std::ptrdiff_t>(rng_() % ack.size()));
      *it = WildValue(rng_);
    }
    SendJson(c, FrameType::kHelloAck, ack);
    // Answer what the source streams, badly now and then, then hang up.
    for (int n = static_cast<int>(rng_() % 30); n > 0; --n) {
      auto f = ReadFrame(c);
      if (!f.ok()) return;
      switch (rng_() % 6) {
        case 0: SendJson(c, FrameType::kAck, {{"durable_seq", WildValue(rng_)}}); break;
        case 1: WriteFrame(c, static_cast<FrameType>(1 + rng_() % 40), {}).IgnoreError(); break;
        case 2: SendJson(c, FrameType::kAck, {{"durable_seq", rng_() % 1000}}); break;
        case 3: SendJson(c, FrameType::kError, {{"message", WildValue(rng_)}}); return;
        default: break;  // no answer
      }
    }
  }

  std::mt19937_64 rng_;
  std::unique_ptr<net::Listener> listener_;
  std::atomic<int> connections_{0};
  std::atomic<bool> closed_{false};
  std::thread thread_;
};

class SenderFuzzTest : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("continuum-sender-fuzz-" + std::to_string(::getpid()) + "-" +
                                        std::to_string(static_cast<int>(GetParam())));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    volume::VolumeConfig cfg;
    cfg.name = "v";
    cfg.backing = (dir_ / "v.img").string();
    cfg.size = kVolBytes;
    cfg.journal_bytes = 32ull << 20;
    cfg.created_ts_ns = WallNowNs();
    std::ofstream(cfg.backing).close();
    fs::resize_file(cfg.backing, kVolBytes);
    auto v = volume::Volume::Open(cfg, (dir_ / "state").string(), nullptr);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    vol_ = *v;
  }
  void TearDown() override {
    if (vol_) vol_->Close().IgnoreError();
    fs::remove_all(dir_);
  }

  fs::path dir_;
  std::shared_ptr<volume::Volume> vol_;
};

TEST_P(SenderFuzzTest, BrokenTargetRepliesNeverCrashOrStopTheApplication) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  FakeTarget target(seed);
  // The cursor file the sender left last time, damaged.
  std::string state = (dir_ / "target.json").string();
  std::ofstream(state) << R"({"acked_seq": "7", "resync_active": 1, "replica": ["x"]})";

  TargetOptions opts;
  opts.volume = "v";
  opts.address = target.Address();
  opts.mode = GetParam();
  opts.tls.insecure = true;
  opts.tls.io_timeout_ms = 3000;
  opts.source_name = "src";
  opts.state_path = state;
  opts.heartbeat = {.interval_ms = 200, .timeout_ms = 1000};
  std::mutex events_mu;
  std::map<std::string, int> events;
  auto sender = TargetSender::Start(vol_, opts, [&](const std::string& kind, const std::string&) {
    std::lock_guard lock(events_mu);
    ++events[kind];
  });
  ASSERT_TRUE(sender.ok()) << sender.status().ToString();

  // The application writes all along; each write must succeed.
  std::mt19937_64 rng(seed);
  std::map<uint64_t, uint8_t> model;  // block -> fill byte
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(6);
  int writes = 0;
  while (std::chrono::steady_clock::now() < until) {
    uint64_t block = rng() % (kVolBytes / 4096);
    uint8_t fill = static_cast<uint8_t>(1 + rng() % 255);
    std::vector<uint8_t> data(4096, fill);
    ASSERT_TRUE(vol_->Write(block * 4096, data, writes % 8 == 0).ok()) << "write " << writes;
    model[block] = fill;
    ++writes;
    auto st = (*sender)->GetStatus();
    ASSERT_FALSE(st.state.empty());
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  auto t0 = std::chrono::steady_clock::now();
  (*sender)->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5)) << "Stop took too long";
  EXPECT_GE(target.connections(), 2) << "the sender should have reconnected after a broken session";
  {
    std::lock_guard lock(events_mu);
    // Whatever the target did, the operator hears of it.
    EXPECT_GT(events["target_error"] + events["target_connected"] + events["target_disconnected"], 0);
  }
  for (const auto& [block, fill] : model) {
    std::vector<uint8_t> got(4096);
    ASSERT_TRUE(vol_->Read(block * 4096, got).ok());
    ASSERT_EQ(got, std::vector<uint8_t>(4096, fill)) << "block " << block;
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, SenderFuzzTest, ::testing::Values(Mode::kAsync, Mode::kSync, Mode::kAdaptive),
                         [](const auto& info) { return std::string(ModeName(info.param)); });

}  // namespace
}  // namespace continuum::replication
