#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "continuum/common/result.h"

namespace continuum::replication {

using EventFn = std::function<void(const std::string& kind, const std::string& message)>;

// Where one replication target stands for a writer waiting on a seq.
struct SyncProbe {
  bool member = false;              // configured sync or adaptive: counts toward the quorum
  bool durable = false;             // has the seq durable
  bool waiting = false;             // connected and synchronous right now: a writer may wait for it
  int64_t adaptive_latency_ns = 0;  // > 0: adaptive; drops to async when an ack takes longer
};

// A target as SyncQuorum sees it (TargetSender; fakes in tests).
// Implementations must not call SyncQuorum::Changed while holding a lock
// that Probe or SlowAck takes.
class SyncMember {
 public:
  virtual ~SyncMember() = default;
  virtual SyncProbe Probe(uint64_t seq) const = 0;
  // Adaptive targets only: a writer waited longer than the threshold for
  // `seq`; drop to asynchronous replication (event mode_changed).
  virtual void SlowAck(uint64_t seq) = 0;
};

// "all" or "" -> 0 (every connected sync target), "N" -> N (1..64).
Result<int> ParseQuorum(const std::string& s);

struct QuorumStatus {
  int required = 0;      // configured quorum; 0 = all sync targets
  int sync_targets = 0;  // targets in sync or adaptive mode
  int available = 0;     // of those, connected and synchronous now
  bool degraded = false; // sync targets exist, fewer than `required` available: writes wait for those only
  nlohmann::json ToJson() const;
};

// The acknowledgement rule of one volume's sync replication
// (docs/user-guide/replication.md, "Sync quorum"). A write at `seq` returns
// to the application once
//   - `quorum` sync targets (sync, or adaptive while synchronous) have it
//     durable, or
//   - no connected synchronous target is still missing it: with fewer than
//     `quorum` such targets the volume runs degraded on the ones it has, as a
//     single sync target does when it disconnects (event quorum_lost, then
//     quorum_restored).
// Quorum 0 means every connected sync target, the rule before quorums.
// A target that drops out (peer timeout, link cut) holds writers at most
// until it is declared disconnected; with a quorum met by the others it
// holds nobody.
// Thread-safety: all public methods are thread-safe. Members call Changed()
// from their own threads without holding their locks.
class SyncQuorum {
 public:
  SyncQuorum(int quorum, EventFn events) : quorum_(quorum), events_(std::move(events)) {}

  void SetQuorum(int quorum);
  int quorum() const;
  void Add(std::shared_ptr<SyncMember> member);
  void Remove(const SyncMember* member);
  // A member acknowledged something or changed state: wakes waiting writers
  // and re-evaluates whether the quorum is available (events).
  void Changed();
  // Holds the caller until `seq` is acknowledged by the rule above.
  Status Wait(uint64_t seq);
  QuorumStatus GetStatus() const;

 private:
  std::vector<std::shared_ptr<SyncMember>> Snapshot(uint64_t* gen, int* quorum) const;
  void Evaluate();

  mutable std::mutex mu_;
  std::condition_variable cv_;                        // gen_ changed
  uint64_t gen_ = 0;                                  // GUARDED_BY(mu_)
  int quorum_;                                        // GUARDED_BY(mu_)
  bool lost_ = false;                                 // GUARDED_BY(mu_): quorum_lost reported
  std::vector<std::shared_ptr<SyncMember>> members_;  // GUARDED_BY(mu_)
  std::mutex event_mu_;                               // orders quorum_lost / quorum_restored
  EventFn events_;
};

}  // namespace continuum::replication
