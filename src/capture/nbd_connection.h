#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "capture/nbd_handshake.h"
#include "capture/nbd_protocol.h"
#include "capture/nbd_socket.h"
#include "continuum/common/status.h"

namespace continuum::capture {

struct NbdConnectionOptions {
  // Threads running requests against the target. Replies may then leave out
  // of order, which NBD allows (clients match them by cookie). 0 runs every
  // request on the reader thread, strictly in order.
  int workers = 4;
  // Payload bytes read ahead of execution; past it the reader stops reading,
  // so a pipelining client is slowed by TCP instead of growing our memory.
  uint64_t max_inflight_bytes = 64ull << 20;
  // A client that stalls during the handshake is dropped after this long.
  int handshake_timeout_ms = 30000;
};

// One NBD client from accept to close: the handshake, then the transmission
// phase. A reader thread (the caller of Serve) parses and validates requests
// and reads write payloads; workers call the target and send simple replies.
// Thread-safety: Serve() runs on one thread; Shutdown() may be called from
// any thread; the destructor requires Serve() to have returned.
class NbdConnection {
 public:
  // Takes ownership of the connected socket `fd`.
  NbdConnection(int fd, std::string peer, NbdConnectionOptions options, NbdExportHooks hooks);
  ~NbdConnection();
  NbdConnection(const NbdConnection&) = delete;
  NbdConnection& operator=(const NbdConnection&) = delete;

  // Serves the client until NBD_CMD_DISC, disconnect, a protocol violation or
  // Shutdown(). Ok after a clean NBD_CMD_DISC or Shutdown(); requests already
  // read before DISC are completed first, as the protocol requires.
  Status Serve();
  // Disconnects the client and makes Serve() return soon: running target
  // calls finish, queued requests are dropped unanswered. Idempotent.
  void Shutdown();

  const std::string& peer() const { return socket_.peer(); }

 private:
  struct Job {
    nbd::Request request;
    std::vector<uint8_t> payload;  // WRITE data
  };

  Status ServeUntilDone();
  Status Transmit(const NbdExportRef& ref);
  // Queues `job` for a worker, waiting for in-flight budget. False when the
  // connection is failing or shutting down.
  bool Enqueue(Job job);
  void WorkerLoop();
  // Runs the request against the target and sends its reply.
  void Execute(const Job& job);
  Status RunOnTarget(const Job& job, std::vector<uint8_t>& read_data);
  void SendReply(uint32_t error, uint64_t cookie, std::span<const uint8_t> data = {});
  static uint64_t Cost(const Job& job);

  NbdSocket socket_;
  const NbdConnectionOptions options_;
  const NbdExportHooks hooks_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> failed_{false};  // a reply could not be sent

  // Set before the workers start and cleared after they stop.
  std::shared_ptr<io::BlockTarget> target_;
  std::string export_name_;

  std::mutex mu_;
  std::condition_variable work_cv_;   // queue_ grew or draining_ was set
  std::condition_variable space_cv_;  // inflight_bytes_ shrank or failing
  std::deque<Job> queue_;             // GUARDED_BY(mu_)
  uint64_t inflight_bytes_ = 0;       // GUARDED_BY(mu_): queued plus running
  bool draining_ = false;             // GUARDED_BY(mu_): no more jobs will come
  std::vector<std::thread> workers_;  // owned by the Serve() thread
};

}  // namespace continuum::capture
