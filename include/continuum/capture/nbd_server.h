#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "continuum/common/result.h"
#include "continuum/common/status.h"
#include "continuum/io/block_target.h"

namespace continuum::capture {

class NbdConnection;
class NbdListener;
struct NbdExportRef;

struct NbdServerOptions {
  // "unix:/path/sock", or "HOST:PORT" / "[V6ADDR]:PORT" for TCP; port 0 picks
  // an ephemeral port (see NbdServer::Address()). There is no TLS and no
  // authentication: bind TCP to loopback or a trusted network only.
  std::string listen;
  // Threads per connection that run requests against the target (0: run them
  // on the connection's reader thread, strictly in order).
  int workers_per_connection = 4;
  // Write/read payload a connection buffers ahead of the target.
  uint64_t max_inflight_bytes_per_connection = 64ull << 20;
  // Connections beyond this are accepted and closed at once.
  int max_connections = 256;
  // Clients that do not finish the handshake in this time are dropped.
  int handshake_timeout_ms = 30000;
};

// An NBD server (fixed newstyle handshake, simple replies) exporting
// BlockTargets to QEMU, the kernel nbd client and libnbd tools. The protocol
// subset is described in docs/format/nbd.md.
//
// One thread accepts; each connection has a reader thread and a small worker
// pool, so pipelined requests overlap and a client may open many connections
// to one export (NBD_FLAG_CAN_MULTI_CONN is advertised: BlockTarget::Flush
// covers writes from every connection).
//
// Thread-safety: all methods may be called from any thread.
class NbdServer {
 public:
  // Binds and starts accepting. An existing unix socket file is replaced
  // only if no server answers on it.
  static Result<std::unique_ptr<NbdServer>> Start(const NbdServerOptions& opts);
  ~NbdServer();  // Stop()
  NbdServer(const NbdServer&) = delete;
  NbdServer& operator=(const NbdServer&) = delete;

  // The bound address: "127.0.0.1:40123", "[::1]:40123" or "unix:/path".
  std::string Address() const;

  // Exports `target` under `name` (at most 4096 bytes, no NUL). A client
  // asking for the empty name gets the only export when there is exactly one.
  // kAlreadyExists when the name is taken.
  Status AddExport(const std::string& name, std::shared_ptr<io::BlockTarget> target);
  // Removes the export and disconnects its clients. When it returns no
  // request of that export is running and the server holds no reference to
  // its target; requests the clients had not been answered for are dropped
  // (the client sees a disconnect and must retry, as with a crash).
  Status RemoveExport(const std::string& name);
  std::vector<std::string> ExportNames() const;
  // Connected clients, in handshake or transmission.
  size_t ConnectionCount() const;

  // Closes the listener, disconnects every client and joins all threads.
  // Idempotent; later AddExport() calls fail.
  void Stop();

 private:
  struct Client {
    uint64_t id = 0;
    std::unique_ptr<NbdConnection> connection;
    std::thread thread;
    std::optional<std::string> export_name;  // set once bound (GUARDED_BY(mu_))
    std::atomic<bool> done{false};
  };

  NbdServer(NbdServerOptions opts, std::unique_ptr<NbdListener> listener);
  void AcceptLoop();
  // Resolves `name` (the empty name to the only export). REQUIRES: mu_ held.
  std::optional<NbdExportRef> FindLocked(const std::string& name) const;
  std::optional<NbdExportRef> Find(const std::string& name) const;
  std::optional<NbdExportRef> Bind(uint64_t client_id, const std::string& name);
  // Joins and forgets clients whose thread finished.
  void ReapFinished();
  static void Disconnect(std::list<std::unique_ptr<Client>>& clients);

  const NbdServerOptions opts_;
  const std::string address_;
  std::unique_ptr<NbdListener> listener_;  // reset by Stop() after the accept thread ends
  std::thread accept_thread_;

  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<io::BlockTarget>> exports_;  // GUARDED_BY(mu_)
  std::list<std::unique_ptr<Client>> clients_;                       // GUARDED_BY(mu_)
  uint64_t next_client_id_ = 1;                                      // GUARDED_BY(mu_)
  bool stopped_ = false;                                             // GUARDED_BY(mu_)
  std::mutex stop_mu_;  // serializes Stop() so a second caller waits for the first
};

}  // namespace continuum::capture
