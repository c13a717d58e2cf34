// Covers src/replication/heartbeat.cc: idle peers stay connected on
// heartbeats alone; a silent peer (a cut link) is declared gone after the
// timeout, with the reason in every later error.
#include "continuum/replication/heartbeat.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "continuum/common/time_util.h"
#include "continuum/replication/frame.h"

namespace continuum::replication {
namespace {

// Two in-memory endpoints joined like a socket pair. Cut() makes the link a
// black hole: sends succeed and nothing arrives, as with a dropped route.
struct Link {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<uint8_t> q[2];
  bool shut[2] = {false, false};
  bool cut = false;
  void Cut() {
    std::lock_guard lock(mu);
    cut = true;
  }
};

class PipeEnd : public net::Connection {
 public:
  PipeEnd(std::shared_ptr<Link> l, int side) : l_(std::move(l)), side_(side) {}
  Status SendAll(std::span<const uint8_t> data) override {
    std::lock_guard lock(l_->mu);
    if (l_->shut[side_]) return Unavailable("shut down");
    if (!l_->cut) l_->q[1 - side_].insert(l_->q[1 - side_].end(), data.begin(), data.end());
    l_->cv.notify_all();
    return Status::Ok();
  }
  Status RecvAll(std::span<uint8_t> out) override {
    std::unique_lock lock(l_->mu);
    for (auto& b : out) {
      l_->cv.wait(lock, [&] { return l_->shut[side_] || !l_->q[side_].empty(); });
      if (l_->shut[side_]) return Unavailable("shut down");
      b = l_->q[side_].front();
      l_->q[side_].pop_front();
    }
    return Status::Ok();
  }
  void Shutdown() override {
    std::lock_guard lock(l_->mu);
    l_->shut[side_] = true;
    l_->cv.notify_all();
  }
  std::string PeerName() const override { return side_ == 0 ? "dr1" : "prod1"; }
  std::string PeerAddress() const override { return "pipe"; }
  void SetIoTimeout(int) override {}

 private:
  std::shared_ptr<Link> l_;
  int side_;
};

// Reads frames until the connection fails; counts heartbeats.
struct Reader {
  explicit Reader(net::Connection& c) : thread([this, &c] {
    for (;;) {
      auto f = ReadFrame(c);
      if (!f.ok()) {
        std::lock_guard lock(mu);
        error = f.status();
        failed_at_ns = MonoNowNs();
        return;
      }
      if (f->type == FrameType::kHeartbeat) ++heartbeats;
    }
  }) {}
  ~Reader() { thread.join(); }
  std::atomic<int> heartbeats{0};
  std::mutex mu;
  Status error;
  int64_t failed_at_ns = 0;
  std::thread thread;
};

TEST(Heartbeat, IdlePeersStayConnectedAndACutLinkExpiresBothEnds) {
  auto link = std::make_shared<Link>();
  PipeEnd a_raw(link, 0), b_raw(link, 1);
  MonitoredConnection a(a_raw), b(b_raw);
  HeartbeatOptions opts{.interval_ms = 20, .timeout_ms = 200};
  Heartbeat ha(a, opts), hb(b, opts);
  {
    Reader ra(a), rb(b);
    std::this_thread::sleep_for(std::chrono::milliseconds(600));  // three timeouts of idling
    EXPECT_EQ(a.expired(), "");
    EXPECT_EQ(b.expired(), "");
    EXPECT_GT(ra.heartbeats.load(), 10);
    EXPECT_GT(rb.heartbeats.load(), 10);

    int64_t cut_at = MonoNowNs();
    link->Cut();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    for (Reader* r : {&ra, &rb}) {
      std::lock_guard lock(r->mu);
      ASSERT_FALSE(r->error.ok());
      EXPECT_EQ(r->error.code(), StatusCode::kUnavailable);
      EXPECT_NE(r->error.message().find("peer timeout"), std::string::npos) << r->error.message();
      // Noticed after the timeout, well before a TCP timeout would.
      EXPECT_GE(r->failed_at_ns - cut_at, 150'000'000);
      EXPECT_LE(r->failed_at_ns - cut_at, 400'000'000);
    }
  }
  // Every later call reports the same reason.
  uint8_t x = 0;
  Status st = a.SendAll({&x, 1});
  EXPECT_NE(st.message().find("peer timeout"), std::string::npos) << st.message();
}

TEST(Heartbeat, DataCountsAsLifeAndSuppressesHeartbeats) {
  auto link = std::make_shared<Link>();
  PipeEnd a_raw(link, 0), b_raw(link, 1);
  MonitoredConnection a(a_raw), b(b_raw);
  Heartbeat hb(b, {.interval_ms = 20, .timeout_ms = 150});  // only b watches
  Reader rb(b);
  // a sends a frame every 10 ms (busier than the interval): b never expires.
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(WriteJsonFrame(a, FrameType::kAck, {{"durable_seq", i}}).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(b.expired(), "");
  hb.Stop();
  a.Shutdown();
  b.Shutdown();
}

TEST(MonitoredConnection, TrySendAllSkipsWhileAnotherSendIsInProgress) {
  auto link = std::make_shared<Link>();
  PipeEnd a_raw(link, 0);
  MonitoredConnection a(a_raw);
  uint8_t x = 1;
  EXPECT_TRUE(a.TrySendAll({&x, 1}));
  int64_t before = a.last_tx_ns();
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_TRUE(a.TrySendAll({&x, 1}));
  EXPECT_GT(a.last_tx_ns(), before);
}

}  // namespace
}  // namespace continuum::replication
