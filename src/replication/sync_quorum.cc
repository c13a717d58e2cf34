#include "continuum/replication/sync_quorum.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

namespace continuum::replication {
namespace {

constexpr int kMaxQuorum = 64;
// Writers re-check at least this often, so a state change a member did not
// announce costs latency, never a hang.
constexpr auto kRecheck = std::chrono::seconds(1);

}  // namespace

Result<int> ParseQuorum(const std::string& s) {
  if (s.empty() || s == "all") return 0;
  char* end = nullptr;
  long n = std::strtol(s.c_str(), &end, 10);
  if (end == s.c_str() || *end != '\0' || n < 1 || n > kMaxQuorum) {
    return InvalidArgument("invalid --quorum '" + s + "': use a number of sync targets from 1 to " +
                           std::to_string(kMaxQuorum) + ", or 'all'");
  }
  return static_cast<int>(n);
}

nlohmann::json QuorumStatus::ToJson() const {
  return {{"required", required == 0 ? sync_targets : required},
          {"all", required == 0},
          {"sync_targets", sync_targets},
          {"available", available},
          {"degraded", degraded}};
}

void SyncQuorum::SetQuorum(int quorum) {
  {
    std::lock_guard lock(mu_);
    quorum_ = quorum;
    ++gen_;
    cv_.notify_all();
  }
  Evaluate();
}

int SyncQuorum::quorum() const {
  std::lock_guard lock(mu_);
  return quorum_;
}

void SyncQuorum::Add(std::shared_ptr<SyncMember> member) {
  {
    std::lock_guard lock(mu_);
    members_.push_back(std::move(member));
    ++gen_;
    cv_.notify_all();
  }
  Evaluate();
}

void SyncQuorum::Remove(const SyncMember* member) {
  {
    std::lock_guard lock(mu_);
    std::erase_if(members_, [member](const auto& m) { return m.get() == member; });
    ++gen_;
    cv_.notify_all();
  }
  Evaluate();
}

void SyncQuorum::Changed() {
  {
    std::lock_guard lock(mu_);
    ++gen_;
    cv_.notify_all();
  }
  Evaluate();
}

std::vector<std::shared_ptr<SyncMember>> SyncQuorum::Snapshot(uint64_t* gen, int* quorum) const {
  std::lock_guard lock(mu_);
  *gen = gen_;
  *quorum = quorum_;
  return members_;
}

Status SyncQuorum::Wait(uint64_t seq) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    uint64_t gen;
    int quorum;
    // Probed outside mu_: members take their own locks.
    auto members = Snapshot(&gen, &quorum);
    const int64_t waited_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
    int durable = 0, pending = 0;
    int64_t next_deadline_ns = -1;  // time left until the first adaptive member is too slow
    std::vector<SyncMember*> slow;
    for (const auto& m : members) {
      SyncProbe p = m->Probe(seq);
      if (!p.member) continue;
      if (p.durable) {
        ++durable;
        continue;
      }
      if (!p.waiting) continue;
      if (p.adaptive_latency_ns > 0) {
        if (waited_ns >= p.adaptive_latency_ns) {
          slow.push_back(m.get());
          continue;
        }
        int64_t left = p.adaptive_latency_ns - waited_ns;
        next_deadline_ns = next_deadline_ns < 0 ? left : std::min(next_deadline_ns, left);
      }
      ++pending;
    }
    if (quorum > 0 && durable >= quorum) return Status::Ok();
    // Every synchronous target that could still acknowledge has: fewer than
    // the quorum are available, and the write runs degraded on those
    // (Evaluate reports it).
    if (pending == 0 && slow.empty()) return Status::Ok();
    if (!slow.empty()) {
      // An adaptive target slower than its threshold, and the quorum not met
      // without it: it drops to async, then the rule is applied again.
      for (auto* m : slow) m->SlowAck(seq);
      continue;
    }
    std::unique_lock lock(mu_);
    auto wake = [&] { return gen_ != gen; };
    if (next_deadline_ns >= 0) {
      cv_.wait_for(lock, std::min<std::chrono::nanoseconds>(std::chrono::nanoseconds(next_deadline_ns), kRecheck), wake);
    } else {
      cv_.wait_for(lock, kRecheck, wake);
    }
  }
}

QuorumStatus SyncQuorum::GetStatus() const {
  uint64_t gen;
  QuorumStatus s;
  auto members = Snapshot(&gen, &s.required);
  for (const auto& m : members) {
    SyncProbe p = m->Probe(UINT64_MAX);  // a seq after every window: is it available at all
    if (!p.member) continue;
    ++s.sync_targets;
    if (p.waiting) ++s.available;
  }
  // Without sync targets there is no sync replication to degrade.
  s.degraded = s.required > 0 && s.sync_targets > 0 && s.available < s.required;
  return s;
}

void SyncQuorum::Evaluate() {
  // One evaluation at a time, so quorum_lost and quorum_restored alternate
  // in the event log in the order they happened.
  std::lock_guard order(event_mu_);
  QuorumStatus s = GetStatus();
  bool report;
  {
    std::lock_guard lock(mu_);
    report = s.degraded != lost_;
    lost_ = s.degraded;
  }
  if (!report || !events_) return;
  std::string counts = std::to_string(s.available) + " of " + std::to_string(s.sync_targets) +
                       " sync target(s) connected and synchronous";
  if (!s.degraded) {
    events_("quorum_restored", s.required == 0 ? counts + "; quorum is now all: writes wait for every connected sync target"
                                               : counts + ", quorum " + std::to_string(s.required) +
                                                     ": writes wait for the quorum again");
    return;
  }
  events_("quorum_lost", counts + ", fewer than the quorum of " + std::to_string(s.required) + ": " +
                             (s.available == 0 ? std::string("writes return after the local write (no RPO 0 anywhere)")
                                               : "writes wait only for those (RPO 0 on them alone)") +
                             " until the quorum is back");
}

}  // namespace continuum::replication
