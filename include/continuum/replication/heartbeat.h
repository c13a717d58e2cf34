#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <thread>

#include "continuum/net/connection.h"

namespace continuum::replication {

// Liveness of a replication connection (docs/format/replication.md,
// "Heartbeats"). Both ends send a HEARTBEAT frame when they have sent nothing
// for `interval_ms`, and give up on a peer from which nothing has arrived for
// `timeout_ms`, instead of waiting for TCP to notice a dead link.
struct HeartbeatOptions {
  int interval_ms = 1000;
  int timeout_ms = 5000;
};

// Wraps a connection to record when bytes last went out and came in, to
// serialize senders (the stream or session thread and the heartbeat thread),
// and to turn an expiry into one clear error for every later call.
// Does not own `inner`; `inner` must outlive it.
// Thread-safety: as net::Connection, except that SendAll may be called from
// several threads (send_mu_ serializes them).
class MonitoredConnection : public net::Connection {
 public:
  explicit MonitoredConnection(net::Connection& inner);

  Status SendAll(std::span<const uint8_t> data) override;
  // Reads in pieces of at most 16 KiB (one TLS record) so that a large frame
  // arriving slowly still counts as a live peer.
  Status RecvAll(std::span<uint8_t> out) override;
  void Shutdown() override { inner_.Shutdown(); }
  std::string PeerName() const override { return inner_.PeerName(); }
  std::string PeerAddress() const override { return inner_.PeerAddress(); }
  void SetIoTimeout(int ms) override { inner_.SetIoTimeout(ms); }
  bool Readable() override { return inner_.Readable(); }

  // Sends unless another send is in progress (then the peer hears from us anyway).
  // Returns false when it did not send.
  bool TrySendAll(std::span<const uint8_t> data);
  // Declares the peer gone: shuts the connection down; every later (and the
  // currently blocked) call fails with kUnavailable `reason`.
  void Expire(const std::string& reason);
  // The expiry reason, or an empty string.
  std::string expired() const;

  int64_t last_rx_ns() const { return last_rx_ns_.load(); }
  // Since when a RecvAll has been waiting, or 0. Only a peer we are waiting on
  // can be silent: while the owner is busy (applying a batch) nothing is read.
  int64_t recv_waiting_since_ns() const { return recv_since_ns_.load(); }
  int64_t last_tx_ns() const { return last_tx_ns_.load(); }

 private:
  Status Translate(Status st) const;

  net::Connection& inner_;
  std::mutex send_mu_;  // one sender at a time on inner_
  std::atomic<int64_t> last_rx_ns_;
  std::atomic<int64_t> last_tx_ns_;
  std::atomic<int64_t> recv_since_ns_{0};
  mutable std::mutex mu_;
  std::string expired_;  // GUARDED_BY(mu_)
};

// Sends HEARTBEAT frames on `conn` while it is otherwise idle and expires it
// when a read has waited on the peer for longer than the timeout. Runs its own thread from
// construction until Stop() or destruction.
// Thread-safety: Stop may be called from any thread, once the owner is done with `conn`.
class Heartbeat {
 public:
  Heartbeat(MonitoredConnection& conn, HeartbeatOptions opts);
  ~Heartbeat();
  void Stop();

 private:
  void Loop();

  MonitoredConnection& conn_;
  HeartbeatOptions opts_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // GUARDED_BY(mu_)
  std::thread thread_;
};

}  // namespace continuum::replication
