#pragma once

#include <atomic>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "continuum/common/result.h"
#include "continuum/net/listener.h"
#include "continuum/volume/volume.h"

namespace continuum::replication {

struct HelloInfo {
  std::string peer;    // verified certificate name of the source (or its claimed name when insecure)
  std::string source;  // the source's own name
  std::string volume;
  uint64_t size = 0;
  uint32_t block_size = 4096;
};

// What the receiver needs from the replica store (the server's volume manager).
class ReplicaProvider {
 public:
  virtual ~ReplicaProvider() = default;
  struct Replica {
    std::string name;
    std::shared_ptr<volume::Volume> volume;
    bool created = false;
  };
  // Finds or creates the replica for a source volume; refuses a size mismatch.
  virtual Result<Replica> Attach(const HelloInfo& hello) = 0;
  virtual void Detach(const std::string& replica) = 0;
  virtual void ResyncBegin(const std::string& replica, uint64_t first_seq, uint64_t last_seq) = 0;
  virtual void ResyncDone(const std::string& replica, uint64_t consistent_at) = 0;
  virtual void Event(const std::string& replica, const std::string& kind, const std::string& msg) = 0;
  // Online verify: XXH3 per `range_bytes` of the replica of `hello`'s volume
  // as of `seq` (a CDP view, so the stream keeps flowing). Refuses a replica
  // that does not exist, does not hold `seq`, or is inside a resync window.
  virtual Result<std::vector<uint64_t>> ReplicaChecksums(const HelloInfo& hello, uint64_t seq,
                                                         uint64_t range_bytes) {
    return FailedPrecondition("this target does not support verify");
  }
  // Differential sync: the existing replica of `hello`'s volume, to read as it
  // is now while its stream goes on. Refuses a replica that does not exist or
  // has another size.
  virtual Result<Replica> LiveReplica(const HelloInfo& hello) {
    return FailedPrecondition("this target does not support differential sync");
  }
};

class FrameReadAhead;  // receiver.cc
class MonitoredConnection;

// Accepts replication connections and applies their write streams to
// replicas: admit with the source's seq and time, flush (write-log fsync),
// then acknowledge the batch's last seq as durable.
// Thread-safety: Start/Stop from one thread; connections run on their own.
class Receiver {
 public:
  static Result<std::unique_ptr<Receiver>> Start(std::unique_ptr<net::Listener> listener,
                                                 ReplicaProvider* provider);
  ~Receiver();
  void Stop();
  std::string Address() const { return listener_->Address(); }

 private:
  Receiver(std::unique_ptr<net::Listener> l, ReplicaProvider* p) : listener_(std::move(l)), provider_(p) {}
  void AcceptLoop();
  void Serve(net::Connection* conn);
  Status ServeStream(net::Connection* conn, std::string* replica_name);
  // The stream after the handshake: frames from `ahead`, applied to `rep`.
  // `ack_delay_ms` > 0 (an async source): record frames may be held that long
  // and applied together, with one flush and one acknowledgement.
  Status ApplyStream(net::Connection* conn, const ReplicaProvider::Replica& rep, FrameReadAhead& ahead, int ack_delay_ms,
                     MonitoredConnection& monitored);
  Status ServeVerify(net::Connection* conn, const HelloInfo& hello, const nlohmann::json& request);
  Status ServeDiff(net::Connection* conn, const HelloInfo& hello);

  std::unique_ptr<net::Listener> listener_;
  ReplicaProvider* provider_;
  std::thread accept_thread_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  struct Session {
    std::unique_ptr<net::Connection> conn;
    std::thread thread;
    std::atomic<bool> done{false};
    std::string replica;
  };
  std::list<std::unique_ptr<Session>> sessions_;  // GUARDED_BY(mu_)
};

}  // namespace continuum::replication
