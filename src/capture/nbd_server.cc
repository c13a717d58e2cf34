#include "continuum/capture/nbd_server.h"

#include <unistd.h>

#include <fmt/format.h>

#include "capture/nbd_connection.h"
#include "capture/nbd_listener.h"
#include "capture/nbd_protocol.h"
#include "continuum/common/log.h"

namespace continuum::capture {
namespace {

const std::shared_ptr<spdlog::logger>& Log() {
  static const auto logger = Logger("nbd");
  return logger;
}

}  // namespace

Result<std::unique_ptr<NbdServer>> NbdServer::Start(const NbdServerOptions& opts) {
  if (opts.workers_per_connection < 0 || opts.max_connections <= 0 ||
      opts.max_inflight_bytes_per_connection == 0) {
    return InvalidArgument("nbd server options for " + opts.listen + " are out of range");
  }
  CONTINUUM_ASSIGN_OR_RETURN(auto listener, NbdListener::Listen(opts.listen));
  std::unique_ptr<NbdServer> server(new NbdServer(opts, std::move(listener)));
  server->accept_thread_ = std::thread([s = server.get()] { s->AcceptLoop(); });
  Log()->info("nbd server listening on {}", server->Address());
  return server;
}

NbdServer::NbdServer(NbdServerOptions opts, std::unique_ptr<NbdListener> listener)
    : opts_(std::move(opts)), address_(listener->Address()), listener_(std::move(listener)) {}

NbdServer::~NbdServer() { Stop(); }

std::string NbdServer::Address() const { return address_; }

Status NbdServer::AddExport(const std::string& name, std::shared_ptr<io::BlockTarget> target) {
  if (!target) return InvalidArgument("nbd export '" + name + "' has no target");
  if (name.size() > nbd::kMaxStringLength || name.find('\0') != std::string::npos) {
    return InvalidArgument("nbd export name '" + name + "' is longer than 4096 bytes or contains nul");
  }
  std::lock_guard lock(mu_);
  if (stopped_) return FailedPrecondition("nbd server on " + address_ + " is stopped");
  uint64_t size = target->Size();
  bool read_only = target->ReadOnly();
  if (!exports_.emplace(name, std::move(target)).second) {
    return AlreadyExists("nbd export '" + name + "' already exists on " + address_);
  }
  Log()->info("nbd export '{}' added on {}: {} bytes{}", name, address_, size, read_only ? ", read-only" : "");
  return Status::Ok();
}

Status NbdServer::RemoveExport(const std::string& name) {
  std::list<std::unique_ptr<Client>> bound;
  {
    std::lock_guard lock(mu_);
    if (exports_.erase(name) == 0) return NotFound("nbd export '" + name + "' does not exist on " + address_);
    for (auto it = clients_.begin(); it != clients_.end();) {
      auto next = std::next(it);
      if ((*it)->export_name == name) bound.splice(bound.end(), clients_, it);
      it = next;
    }
  }
  // Outside mu_: the connections' threads take it in their export hooks.
  size_t count = bound.size();
  Disconnect(bound);
  Log()->info("nbd export '{}' removed from {}, {} client(s) disconnected", name, address_, count);
  return Status::Ok();
}

std::vector<std::string> NbdServer::ExportNames() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> names;
  for (const auto& [name, target] : exports_) names.push_back(name);
  return names;
}

size_t NbdServer::ConnectionCount() const {
  std::lock_guard lock(mu_);
  size_t count = 0;
  for (const auto& client : clients_) count += client->done ? 0 : 1;
  return count;
}

void NbdServer::Stop() {
  std::lock_guard stop_lock(stop_mu_);
  {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  listener_->Wake();
  if (accept_thread_.joinable()) accept_thread_.join();
  listener_.reset();  // new clients now get ECONNREFUSED instead of a hang
  std::list<std::unique_ptr<Client>> all;
  {
    std::lock_guard lock(mu_);
    all.splice(all.end(), clients_);
    exports_.clear();
  }
  size_t count = all.size();
  Disconnect(all);
  Log()->info("nbd server on {} stopped, {} client(s) disconnected", address_, count);
}

void NbdServer::AcceptLoop() {
  while (true) {
    auto accepted = listener_->Accept();
    if (!accepted.ok()) {
      if (accepted.status().code() != StatusCode::kUnavailable) {
        Log()->error("nbd server stops accepting: {}", accepted.status().ToString());
      }
      return;
    }
    ReapFinished();
    std::lock_guard lock(mu_);
    if (stopped_) {
      ::close(accepted->fd);
      return;
    }
    if (clients_.size() >= static_cast<size_t>(opts_.max_connections)) {
      Log()->warn("nbd client {} refused: {} connections already", accepted->peer, clients_.size());
      ::close(accepted->fd);
      continue;
    }
    auto client = std::make_unique<Client>();
    client->id = next_client_id_++;
    NbdExportHooks hooks{
        .find = [this](const std::string& name) { return Find(name); },
        .bind = [this, id = client->id](const std::string& name) { return Bind(id, name); },
        .list = [this] { return ExportNames(); },
    };
    NbdConnectionOptions conn_opts{.workers = opts_.workers_per_connection,
                                   .max_inflight_bytes = opts_.max_inflight_bytes_per_connection,
                                   .handshake_timeout_ms = opts_.handshake_timeout_ms};
    client->connection =
        std::make_unique<NbdConnection>(accepted->fd, accepted->peer, conn_opts, std::move(hooks));
    Log()->debug("nbd client {} connected", accepted->peer);
    Client* raw = client.get();
    // The Client outlives its thread: whoever removes it from clients_
    // (ReapFinished, RemoveExport, Stop) joins the thread first.
    raw->thread = std::thread([raw] {
      Status status = raw->connection->Serve();
      if (status.ok()) {
        Log()->info("nbd client {} disconnected", raw->connection->peer());
      } else if (status.code() == StatusCode::kUnavailable) {
        Log()->info("{}", status.ToString());
      } else {
        Log()->warn("nbd client {} dropped: {}", raw->connection->peer(), status.ToString());
      }
      raw->done = true;
    });
    clients_.push_back(std::move(client));
  }
}

std::optional<NbdExportRef> NbdServer::FindLocked(const std::string& name) const {
  auto it = exports_.find(name);
  if (it == exports_.end() && name.empty() && exports_.size() == 1) it = exports_.begin();
  if (it == exports_.end()) return std::nullopt;
  return NbdExportRef{.name = it->first, .target = it->second};
}

std::optional<NbdExportRef> NbdServer::Find(const std::string& name) const {
  std::lock_guard lock(mu_);
  return FindLocked(name);
}

std::optional<NbdExportRef> NbdServer::Bind(uint64_t client_id, const std::string& name) {
  std::lock_guard lock(mu_);
  auto ref = FindLocked(name);
  if (!ref) return std::nullopt;
  // Recorded under the same lock as the lookup, so RemoveExport() either
  // hides the export from this client or finds the client bound to it.
  for (auto& client : clients_) {
    if (client->id != client_id) continue;
    client->export_name = ref->name;
    return ref;
  }
  return std::nullopt;  // the client is being disconnected by Stop()
}

void NbdServer::ReapFinished() {
  std::list<std::unique_ptr<Client>> finished;
  {
    std::lock_guard lock(mu_);
    for (auto it = clients_.begin(); it != clients_.end();) {
      auto next = std::next(it);
      if ((*it)->done) finished.splice(finished.end(), clients_, it);
      it = next;
    }
  }
  for (auto& client : finished) client->thread.join();
}

void NbdServer::Disconnect(std::list<std::unique_ptr<Client>>& clients) {
  // Shut every connection down before joining any, so they wind down in
  // parallel.
  for (auto& client : clients) client->connection->Shutdown();
  for (auto& client : clients) client->thread.join();
  clients.clear();
}

}  // namespace continuum::capture
