#include "continuum/agent/replication_manager.h"

#include <filesystem>

#include "agent/volume_manager_internal.h"

#include "continuum/common/log.h"
#include "continuum/io/file.h"

namespace continuum::agent {
namespace {

// "10.0.0.2:7700" -> "10.0.0.2_7700": a file name for the target's state.
std::string TargetFileName(const std::string& to) {
  std::string out;
  for (char c : to) out.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' ? c : '_');
  return out + ".json";
}

std::string Sanitize(const std::string& s) {
  std::string out;
  for (char c : s) out.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ? c : '-');
  return out;
}

}  // namespace

ReplicationManager::~ReplicationManager() { StopAll(); }

std::string ReplicationManager::StatePath(const std::string& volume, const std::string& to) const {
  return volumes_->state_dir() + "/volumes/" + volume + "/targets/" + TargetFileName(to);
}

void ReplicationManager::ResumeAll() {
  std::error_code ec;
  for (const auto& vdir : std::filesystem::directory_iterator(volumes_->state_dir() + "/volumes", ec)) {
    std::string volume = vdir.path().filename().string();
    for (const auto& f : std::filesystem::directory_iterator(vdir.path() / "targets", ec)) {
      auto text = io::ReadFileToString(f.path().string());
      if (!text.ok()) continue;
      auto j = nlohmann::json::parse(*text, nullptr, false);
      if (j.is_discarded() || !j.contains("address")) continue;
      auto mode = replication::ParseMode(j.value("mode", "async"));
      Status st = StartSender(volume, j["address"].get<std::string>(), mode.ok() ? *mode : replication::Mode::kAsync);
      if (!st.ok()) volumes_->AddEvent(volume, "replication_failed", st.message());
    }
    ec.clear();
  }
}

void ReplicationManager::StopAll() {
  std::map<std::string, std::vector<std::unique_ptr<replication::TargetSender>>> senders;
  {
    std::lock_guard lock(mu_);
    senders.swap(senders_);
  }
  for (auto& [v, list] : senders) {
    auto vol = volumes_->GetVolume(v);
    if (vol.ok()) (*vol)->SetAckWaiter(nullptr);
    for (auto& s : list) s->Stop();
  }
}

Status ReplicationManager::StartSender(const std::string& volume, const std::string& to, replication::Mode mode) {
  CONTINUUM_ASSIGN_OR_RETURN(auto vol, volumes_->GetVolume(volume));
  CONTINUUM_RETURN_IF_ERROR(io::MakeDirs(volumes_->state_dir() + "/volumes/" + volume + "/targets", 0700));
  replication::TargetOptions o;
  o.volume = volume;
  o.address = to;
  o.mode = mode;
  o.tls = tls_;
  o.source_name = name_;
  o.state_path = StatePath(volume, to);
  VolumeManager* vm = volumes_;
  auto sender = replication::TargetSender::Start(vol, o, [vm, volume](const std::string& k, const std::string& m) {
    vm->AddEvent(volume, k, m);
  });
  if (!sender.ok()) return sender.status();
  {
    std::lock_guard lock(mu_);
    senders_[volume].push_back(std::move(sender).value());
  }
  InstallWaiter(volume);
  return Status::Ok();
}

void ReplicationManager::InstallWaiter(const std::string& volume) {
  auto vol = volumes_->GetVolume(volume);
  if (!vol.ok()) return;
  // Sync targets hold the writer until they have the write durable; every
  // sync target must acknowledge (async ones return at once).
  (*vol)->SetAckWaiter([this, volume](uint64_t seq) -> Status {
    std::vector<replication::TargetSender*> list;
    {
      std::lock_guard lock(mu_);
      auto it = senders_.find(volume);
      if (it == senders_.end()) return Status::Ok();
      for (auto& s : it->second) list.push_back(s.get());
    }
    for (auto* s : list) CONTINUUM_RETURN_IF_ERROR(s->WaitDurable(seq));
    return Status::Ok();
  });
}

Result<nlohmann::json> ReplicationManager::Replicate(const std::string& volume, const std::string& to,
                                                     const std::string& mode_text) {
  CONTINUUM_ASSIGN_OR_RETURN(auto mode, replication::ParseMode(mode_text));
  if (to.find(':') == std::string::npos) return InvalidArgument("--to must be HOST:PORT, got '" + to + "'");
  CONTINUUM_ASSIGN_OR_RETURN(auto vol, volumes_->GetVolume(volume));
  {
    std::lock_guard lock(mu_);
    for (auto& s : senders_[volume]) {
      if (s->options().address == to) {
        return AlreadyExists("volume " + volume + " already replicates to " + to +
                             " (unreplicate first to change the mode)");
      }
    }
  }
  // A new target starts from scratch: forget any state of an earlier one.
  std::filesystem::remove(StatePath(volume, to));
  CONTINUUM_RETURN_IF_ERROR(StartSender(volume, to, mode));
  volumes_->AddEvent(volume, "replication_added", "to " + to + " (" + replication::ModeName(mode) + ")");
  return nlohmann::json{{"volume", volume}, {"to", to}, {"mode", replication::ModeName(mode)}};
}

Status ReplicationManager::Unreplicate(const std::string& volume, const std::string& to) {
  std::unique_ptr<replication::TargetSender> victim;
  {
    std::lock_guard lock(mu_);
    auto& list = senders_[volume];
    for (auto it = list.begin(); it != list.end(); ++it) {
      if ((*it)->options().address == to) {
        victim = std::move(*it);
        list.erase(it);
        break;
      }
    }
  }
  if (!victim) return NotFound("volume " + volume + " does not replicate to " + to);
  victim->Stop();
  std::filesystem::remove(StatePath(volume, to));
  volumes_->AddEvent(volume, "replication_removed", "to " + to);
  return Status::Ok();
}

Result<nlohmann::json> ReplicationManager::Targets(const std::string& volume) {
  CONTINUUM_RETURN_IF_ERROR(volumes_->GetVolume(volume).status());
  nlohmann::json out = nlohmann::json::array();
  std::lock_guard lock(mu_);
  for (auto& s : senders_[volume]) out.push_back(s->GetStatus().ToJson());
  return out;
}

Result<replication::ReplicaProvider::Replica> ServerReplicaProvider::Attach(const replication::HelloInfo& h) {
  std::string peer = h.peer.rfind("insecure:", 0) == 0 ? h.source : h.peer;
  std::string name = Sanitize(peer) + "." + Sanitize(h.volume);
  if (h.block_size != 4096) return InvalidArgument("block size " + std::to_string(h.block_size) + " is not supported");
  CONTINUUM_ASSIGN_OR_RETURN(auto ref, volumes_->AttachReplica(name, h.size, peer, h.volume));
  return Replica{name, ref.volume, ref.created};
}

void ServerReplicaProvider::Detach(const std::string& replica) { volumes_->DetachReplica(replica); }

void ServerReplicaProvider::ResyncBegin(const std::string& replica, uint64_t first, uint64_t last) {
  volumes_->ReplicaResync(replica, true, first, last);
}

void ServerReplicaProvider::ResyncDone(const std::string& replica, uint64_t consistent_at) {
  volumes_->ReplicaResync(replica, false, 0, consistent_at);
}

void ServerReplicaProvider::Event(const std::string& replica, const std::string& kind, const std::string& msg) {
  volumes_->AddEvent(replica, kind, msg);
}

}  // namespace continuum::agent
