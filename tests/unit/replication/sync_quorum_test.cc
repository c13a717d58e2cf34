// Covers src/replication/sync_quorum.cc: a write returns once the quorum of
// sync targets has it durable; a lagging or silent target does not hold it
// when the others make the quorum; with fewer than the quorum available the
// write runs degraded on the rest (events); quorum "all" keeps the old rule.
#include "continuum/replication/sync_quorum.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace continuum::replication {
namespace {

using namespace std::chrono_literals;

// A target whose acked seq and connection the test moves by hand.
class FakeMember : public SyncMember {
 public:
  FakeMember(SyncQuorum* q, bool sync = true, int64_t adaptive_ns = 0) : q_(q), sync_(sync), adaptive_ns_(adaptive_ns) {}
  SyncProbe Probe(uint64_t seq) const override {
    std::lock_guard lock(mu_);
    return {.member = sync_, .durable = acked_ >= seq, .waiting = connected_ && sync_now_,
            .adaptive_latency_ns = adaptive_ns_};
  }
  void SlowAck(uint64_t) override {
    {
      std::lock_guard lock(mu_);
      sync_now_ = false;
      ++slow_acks_;
    }
    q_->Changed();
  }
  void Ack(uint64_t seq) {
    {
      std::lock_guard lock(mu_);
      acked_ = seq;
    }
    q_->Changed();
  }
  void Disconnect() {
    {
      std::lock_guard lock(mu_);
      connected_ = false;
    }
    q_->Changed();
  }
  void Connect() {
    {
      std::lock_guard lock(mu_);
      connected_ = true;
      sync_now_ = true;
    }
    q_->Changed();
  }
  int slow_acks() const {
    std::lock_guard lock(mu_);
    return slow_acks_;
  }

 private:
  SyncQuorum* q_;
  mutable std::mutex mu_;
  bool sync_;
  int64_t adaptive_ns_;
  bool connected_ = true;
  bool sync_now_ = true;
  uint64_t acked_ = 0;
  int slow_acks_ = 0;
};

struct Events {
  std::mutex mu;
  std::vector<std::string> kinds;
  EventFn Fn() {
    return [this](const std::string& k, const std::string&) {
      std::lock_guard lock(mu);
      kinds.push_back(k);
    };
  }
  std::vector<std::string> Get() {
    std::lock_guard lock(mu);
    return kinds;
  }
};

struct Fixture {
  Events events;
  SyncQuorum q{0, events.Fn()};
  std::vector<std::shared_ptr<FakeMember>> m;
  // Targets first, then the quorum: adding sync targets one by one under a
  // quorum of 2 reports quorum_lost then quorum_restored (tested below).
  Fixture(int quorum, int sync_members, int async_members = 0) {
    for (int i = 0; i < sync_members + async_members; ++i) {
      m.push_back(std::make_shared<FakeMember>(&q, i < sync_members));
      q.Add(m.back());
    }
    q.SetQuorum(quorum);
  }
  std::future<Status> Write(uint64_t seq) {
    return std::async(std::launch::async, [this, seq] { return q.Wait(seq); });
  }
};

bool Done(std::future<Status>& f, std::chrono::milliseconds wait = 50ms) {
  return f.wait_for(wait) == std::future_status::ready;
}

TEST(ParseQuorumTest, AcceptsCountsAndAll) {
  EXPECT_EQ(*ParseQuorum("all"), 0);
  EXPECT_EQ(*ParseQuorum(""), 0);
  EXPECT_EQ(*ParseQuorum("2"), 2);
  EXPECT_FALSE(ParseQuorum("0").ok());
  EXPECT_FALSE(ParseQuorum("two").ok());
  EXPECT_FALSE(ParseQuorum("2x").ok());
  EXPECT_FALSE(ParseQuorum("65").ok());
  EXPECT_NE(ParseQuorum("-1").status().message().find("--quorum"), std::string::npos);
}

TEST(SyncQuorumTest, ReturnsOnceTheQuorumHasTheWrite) {
  Fixture f(2, 3);
  auto w = f.Write(5);
  EXPECT_FALSE(Done(w));
  f.m[0]->Ack(5);
  EXPECT_FALSE(Done(w)) << "one of three is not a quorum of two";
  f.m[2]->Ack(5);
  ASSERT_TRUE(Done(w, 2000ms));
  EXPECT_TRUE(w.get().ok());
  // The third, still connected but behind, held nobody.
  EXPECT_TRUE(f.events.Get().empty());
}

TEST(SyncQuorumTest, AllMeansEveryConnectedSyncTarget) {
  Fixture f(0, 2, 1);  // the async one never holds a write
  auto w = f.Write(3);
  f.m[0]->Ack(3);
  EXPECT_FALSE(Done(w));
  f.m[1]->Ack(3);
  ASSERT_TRUE(Done(w, 2000ms));
  // A disconnected sync target no longer holds writes (the rule before quorums).
  f.m[1]->Disconnect();
  auto w2 = f.Write(4);
  f.m[0]->Ack(4);
  ASSERT_TRUE(Done(w2, 2000ms));
  EXPECT_TRUE(f.events.Get().empty()) << "no quorum events without a quorum";
}

TEST(SyncQuorumTest, FewerThanTheQuorumConnectedRunsDegradedWithEvents) {
  Fixture f(2, 3);
  f.m[2]->Disconnect();  // one of three gone: the quorum still holds
  auto w = f.Write(7);
  f.m[0]->Ack(7);
  f.m[1]->Ack(7);
  ASSERT_TRUE(Done(w, 2000ms));
  EXPECT_TRUE(f.events.Get().empty());
  EXPECT_FALSE(f.q.GetStatus().degraded);

  // A second one goes while a write waits: the write is held until that
  // target is declared gone, then waits only for the remaining one.
  auto w2 = f.Write(8);
  f.m[0]->Ack(8);
  EXPECT_FALSE(Done(w2)) << "held while the second target is still connected";
  f.m[1]->Disconnect();
  ASSERT_TRUE(Done(w2, 2000ms));
  EXPECT_EQ(f.events.Get(), std::vector<std::string>{"quorum_lost"});
  QuorumStatus st = f.q.GetStatus();
  EXPECT_TRUE(st.degraded);
  EXPECT_EQ(st.available, 1);
  EXPECT_EQ(st.sync_targets, 3);
  // Still RPO 0 on the one left: a write waits for it.
  auto w3 = f.Write(9);
  EXPECT_FALSE(Done(w3));
  f.m[0]->Ack(9);
  ASSERT_TRUE(Done(w3, 2000ms));

  f.m[1]->Connect();
  f.m[1]->Ack(9);
  EXPECT_EQ(f.events.Get(), (std::vector<std::string>{"quorum_lost", "quorum_restored"}));
  EXPECT_FALSE(f.q.GetStatus().degraded);
}

TEST(SyncQuorumTest, TooFewSyncTargetsForTheQuorumIsReported) {
  Events events;
  SyncQuorum q(2, events.Fn());
  EXPECT_FALSE(q.GetStatus().degraded) << "no sync targets: nothing to degrade";
  auto a = std::make_shared<FakeMember>(&q);
  q.Add(a);
  EXPECT_TRUE(q.GetStatus().degraded);
  // With one sync target and quorum 2, a write waits for that one.
  auto w = std::async(std::launch::async, [&] { return q.Wait(1); });
  EXPECT_FALSE(Done(w));
  a->Ack(1);
  ASSERT_TRUE(Done(w, 2000ms));
  q.Add(std::make_shared<FakeMember>(&q));
  EXPECT_EQ(events.Get(), (std::vector<std::string>{"quorum_lost", "quorum_restored"}));
  EXPECT_EQ(q.GetStatus().ToJson(), (nlohmann::json{{"required", 2}, {"all", false}, {"sync_targets", 2},
                                                    {"available", 2}, {"degraded", false}}));
}

TEST(SyncQuorumTest, DurableOnATargetThatLeftStillCounts) {
  Fixture f(2, 2);
  auto w = f.Write(4);
  f.m[0]->Ack(4);
  f.m[0]->Disconnect();  // it has the write; it counts toward the quorum
  EXPECT_FALSE(Done(w));
  f.m[1]->Ack(4);
  ASSERT_TRUE(Done(w, 2000ms));
}

TEST(SyncQuorumTest, SlowAdaptiveTargetDropsToAsyncOnlyWhenNeeded) {
  Events events;
  SyncQuorum q(1, events.Fn());
  auto fast = std::make_shared<FakeMember>(&q, true, 0);
  auto adaptive = std::make_shared<FakeMember>(&q, true, 50'000'000);
  q.Add(fast);
  q.Add(adaptive);
  // The sync target makes the quorum of one: the slow adaptive one is left alone.
  auto w = std::async(std::launch::async, [&] { return q.Wait(1); });
  fast->Ack(1);
  ASSERT_EQ(w.wait_for(2s), std::future_status::ready);
  EXPECT_EQ(adaptive->slow_acks(), 0);
  // Without the sync one, the adaptive one is waited for up to its threshold.
  fast->Disconnect();
  auto start = std::chrono::steady_clock::now();
  auto w2 = std::async(std::launch::async, [&] { return q.Wait(2); });
  ASSERT_EQ(w2.wait_for(2s), std::future_status::ready);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 45ms);
  EXPECT_EQ(adaptive->slow_acks(), 1);
}

TEST(SyncQuorumTest, RemovedTargetReleasesWriters) {
  Fixture f(0, 2);
  auto w = f.Write(2);
  f.m[0]->Ack(2);
  EXPECT_FALSE(Done(w));
  f.q.Remove(f.m[1].get());
  ASSERT_TRUE(Done(w, 2000ms));
}

}  // namespace
}  // namespace continuum::replication
