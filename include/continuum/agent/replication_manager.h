#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "continuum/agent/volume_manager.h"
#include "continuum/net/tls_options.h"
#include "continuum/replication/receiver.h"
#include "continuum/replication/sync_quorum.h"
#include "continuum/replication/target_sender.h"

namespace continuum::agent {

// The agent's replication sources: one TargetSender per (volume, target),
// persisted as <state>/volumes/<name>/targets/<host_port>.json so they resume
// after a restart; and the sync/adaptive wait hooked into each volume (one
// SyncQuorum per volume, its quorum in <state>/volumes/<name>/replication.json).
// Thread-safety: all public methods are thread-safe.
class ReplicationManager {
 public:
  ReplicationManager(VolumeManager* volumes, net::TlsOptions tls, std::string name)
      : volumes_(volumes), tls_(std::move(tls)), name_(std::move(name)) {}
  ~ReplicationManager();
  // Restarts the targets recorded in the state directory.
  void ResumeAll();
  void StopAll();

  struct ReplicateRequest {
    std::string to;        // HOST:PORT
    std::string mode;      // sync, async, adaptive
    std::string compress;  // zstd, lz4, none
    std::string bandwidth; // bytes/s with K/M/G suffix; empty or 0 = unlimited
    std::string peer_timeout;  // seconds without a frame from the target before it counts as gone; default 5
    std::string quorum;    // sync targets that must acknowledge a write: N or "all"; empty = unchanged
  };
  // Adds the target `req.to`; with `req.quorum`, also sets the volume's sync
  // quorum (persisted in <state>/volumes/<name>/replication.json). An empty
  // `req.to` with a quorum only changes the quorum.
  Result<nlohmann::json> Replicate(const std::string& volume, const ReplicateRequest& req);
  Status Unreplicate(const std::string& volume, const std::string& to);
  Result<nlohmann::json> Targets(const std::string& volume);
  // Online verify against one target at the seq it has acknowledged: CDP views
  // at that seq on both sides, XXH3 per MiB. With `repair`, appends resync
  // records for exactly the differing ranges (shipped through the stream).
  Result<nlohmann::json> Verify(const std::string& volume, const std::string& to, bool repair);

 private:
  Status StartSender(const std::string& volume, const std::string& to, replication::Mode mode,
                     replication::Codec compress, uint64_t bandwidth, int peer_timeout_ms = 0);
  void InstallWaiter(const std::string& volume);
  std::string StatePath(const std::string& volume, const std::string& to) const;
  std::string QuorumPath(const std::string& volume) const;
  // The volume's quorum object, created (with the persisted quorum) on first use.
  std::shared_ptr<replication::SyncQuorum> Quorum(const std::string& volume);  // REQUIRES: mu_ held
  Status SetQuorum(const std::string& volume, int quorum);

  VolumeManager* volumes_;
  net::TlsOptions tls_;
  std::string name_;
  std::mutex mu_;
  // Shared with each volume's SyncQuorum, which probes them from writer threads.
  std::map<std::string, std::vector<std::shared_ptr<replication::TargetSender>>> senders_;  // GUARDED_BY(mu_)
  std::map<std::string, std::shared_ptr<replication::SyncQuorum>> quorums_;                 // GUARDED_BY(mu_)
};

// Serves replicas on a server: attaches incoming streams to replica volumes
// kept by the VolumeManager.
class ServerReplicaProvider : public replication::ReplicaProvider {
 public:
  explicit ServerReplicaProvider(VolumeManager* volumes) : volumes_(volumes) {}
  Result<Replica> Attach(const replication::HelloInfo& hello) override;
  void Detach(const std::string& replica) override;
  void ResyncBegin(const std::string& replica, uint64_t first_seq, uint64_t last_seq) override;
  void ResyncDone(const std::string& replica, uint64_t consistent_at) override;
  void Event(const std::string& replica, const std::string& kind, const std::string& msg) override;
  Result<std::vector<uint64_t>> ReplicaChecksums(const replication::HelloInfo& hello, uint64_t seq,
                                                 uint64_t range_bytes) override;
  Result<Replica> LiveReplica(const replication::HelloInfo& hello) override;

 private:
  VolumeManager* volumes_;
};

}  // namespace continuum::agent
