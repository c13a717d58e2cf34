#include "continuum/agent/replication_manager.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "agent/volume_manager_internal.h"

#include "continuum/common/json_field.h"
#include "continuum/common/log.h"
#include "continuum/common/time_util.h"
#include "continuum/io/file.h"
#include "continuum/replication/verify.h"
#include "continuum/volume/volume_view.h"

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

// The replica of a source volume: <verified peer name>.<volume>.
std::string ReplicaName(const replication::HelloInfo& h) {
  std::string peer = h.peer.rfind("insecure:", 0) == 0 ? h.source : h.peer;
  return Sanitize(peer) + "." + Sanitize(h.volume);
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
      if (f.path().extension() != ".json") continue;  // e.g. a .tmp left by a crash mid-save
      auto text = io::ReadFileToString(f.path().string());
      if (!text.ok()) continue;
      auto j = nlohmann::json::parse(*text, nullptr, false);
      auto address = JsonField<std::string>(j, "address", "");
      auto mode_name = JsonField<std::string>(j, "mode", "async");
      auto codec_name = JsonField<std::string>(j, "compress", "none");
      auto bandwidth = JsonField<uint64_t>(j, "bandwidth", 0);
      auto peer_timeout = JsonField<int>(j, "peer_timeout_ms", 0);
      Status bad = FirstError({address.status(), mode_name.status(), codec_name.status(), bandwidth.status(),
                               peer_timeout.status()});
      if (bad.ok() && address->empty()) bad = InvalidArgument("it names no target address");
      if (!bad.ok()) {
        volumes_->AddEvent(volume, "replication_failed",
                           "target file " + f.path().string() + " is damaged (" + bad.message() +
                               "); that target is not resumed: run `volume replicate` again");
        continue;
      }
      auto mode = replication::ParseMode(*mode_name);
      auto codec = replication::ParseCodec(*codec_name);
      if (!codec.ok()) volumes_->AddEvent(volume, "replication_failed", codec.status().message() + "; sending uncompressed");
      Status st = StartSender(volume, *address, mode.ok() ? *mode : replication::Mode::kAsync,
                              codec.ok() ? *codec : replication::Codec::kNone, *bandwidth, *peer_timeout);
      if (!st.ok()) volumes_->AddEvent(volume, "replication_failed", st.message());
    }
    ec.clear();
    // The targets hold the write log themselves now (VolumeConfig::open_cursor).
    if (auto vol = volumes_->GetVolume(volume); vol.ok()) (*vol)->ReleaseOpenCursor();
  }
}

std::string ReplicationManager::QuorumPath(const std::string& volume) const {
  return volumes_->state_dir() + "/volumes/" + volume + "/replication.json";
}

std::shared_ptr<replication::SyncQuorum> ReplicationManager::Quorum(const std::string& volume) {
  auto& q = quorums_[volume];
  if (q) return q;
  int quorum = 0;
  if (auto text = io::ReadFileToString(QuorumPath(volume)); text.ok()) {
    auto j = nlohmann::json::parse(*text, nullptr, false);
    auto q = JsonField<int>(j, "quorum", 0);
    if (q.ok()) {
      quorum = *q;
    } else {
      volumes_->AddEvent(volume, "replication_failed", QuorumPath(volume) + " is damaged (" + q.status().message() +
                                                           "); every sync target must acknowledge until it is set again");
    }
  }
  VolumeManager* vm = volumes_;
  q = std::make_shared<replication::SyncQuorum>(
      quorum, [vm, volume](const std::string& k, const std::string& m) { vm->AddEvent(volume, k, m); });
  return q;
}

Status ReplicationManager::SetQuorum(const std::string& volume, int quorum) {
  CONTINUUM_RETURN_IF_ERROR(io::MakeDirs(volumes_->state_dir() + "/volumes/" + volume, 0700));
  nlohmann::json j{{"quorum", quorum}};
  CONTINUUM_RETURN_IF_ERROR(io::WriteFileAtomic(QuorumPath(volume), j.dump() + "\n"));
  std::shared_ptr<replication::SyncQuorum> q;
  {
    std::lock_guard lock(mu_);
    q = Quorum(volume);
  }
  volumes_->AddEvent(volume, "quorum_changed",
                     quorum == 0 ? "every connected sync target acknowledges each write"
                                 : std::to_string(quorum) + " sync target(s) acknowledge each write");
  q->SetQuorum(quorum);
  return Status::Ok();
}

void ReplicationManager::StopAll() {
  std::map<std::string, std::vector<std::shared_ptr<replication::TargetSender>>> senders;
  std::map<std::string, std::shared_ptr<replication::SyncQuorum>> quorums;
  {
    std::lock_guard lock(mu_);
    senders.swap(senders_);
    quorums.swap(quorums_);
  }
  for (auto& [v, list] : senders) {
    auto vol = volumes_->GetVolume(v);
    if (vol.ok()) (*vol)->SetAckWaiter(nullptr);
    for (auto& s : list) s->Stop();
  }
}

Status ReplicationManager::StartSender(const std::string& volume, const std::string& to, replication::Mode mode,
                                       replication::Codec compress, uint64_t bandwidth, int peer_timeout_ms) {
  CONTINUUM_ASSIGN_OR_RETURN(auto vol, volumes_->GetVolume(volume));
  CONTINUUM_RETURN_IF_ERROR(io::MakeDirs(volumes_->state_dir() + "/volumes/" + volume + "/targets", 0700));
  replication::TargetOptions o;
  o.volume = volume;
  o.address = to;
  o.mode = mode;
  o.compress = compress;
  o.bandwidth = bandwidth;
  if (peer_timeout_ms > 0) {
    o.heartbeat.timeout_ms = peer_timeout_ms;
    // At least three heartbeats per timeout, so one lost frame is no disconnect.
    o.heartbeat.interval_ms = std::min(o.heartbeat.interval_ms, std::max(peer_timeout_ms / 3, 50));
  }
  o.tls = tls_;
  o.source_name = name_;
  o.state_path = StatePath(volume, to);
  if (vol->config().replica) {
    o.mode = replication::Mode::kAsync;
    o.cascade = true;
    VolumeManager* vm = volumes_;
    o.upstream_window = [vm, volume]() -> std::optional<replication::UpstreamWindow> {
      auto w = vm->ReplicaWindow(volume);
      if (!w) return std::nullopt;
      return replication::UpstreamWindow{.active = w->active, .first = w->first, .consistent_from = w->consistent_from};
    };
  }
  std::shared_ptr<replication::SyncQuorum> quorum;
  {
    std::lock_guard lock(mu_);
    quorum = Quorum(volume);
  }
  // Weak: the quorum holds the sender, the sender must not keep the quorum alive.
  o.on_change = [w = std::weak_ptr<replication::SyncQuorum>(quorum)] {
    if (auto q = w.lock()) q->Changed();
  };
  VolumeManager* vm = volumes_;
  auto started = replication::TargetSender::Start(vol, o, [vm, volume](const std::string& k, const std::string& m) {
    vm->AddEvent(volume, k, m);
  });
  if (!started.ok()) return started.status();
  std::shared_ptr<replication::TargetSender> sender = std::move(started).value();
  {
    std::lock_guard lock(mu_);
    senders_[volume].push_back(sender);
  }
  quorum->Add(sender);
  InstallWaiter(volume);
  return Status::Ok();
}

void ReplicationManager::InstallWaiter(const std::string& volume) {
  auto vol = volumes_->GetVolume(volume);
  if (!vol.ok()) return;
  std::weak_ptr<replication::SyncQuorum> w;
  {
    std::lock_guard lock(mu_);
    w = Quorum(volume);
  }
  // Sync targets hold the writer until the volume's quorum of them has the
  // write durable (async ones never hold it).
  (*vol)->SetAckWaiter([w](uint64_t seq) -> Status {
    auto q = w.lock();
    return q ? q->Wait(seq) : Status::Ok();
  });
}

Result<nlohmann::json> ReplicationManager::Replicate(const std::string& volume, const ReplicateRequest& req) {
  const std::string& to = req.to;
  std::optional<int> quorum;
  if (!req.quorum.empty()) {
    CONTINUUM_ASSIGN_OR_RETURN(quorum, replication::ParseQuorum(req.quorum));
  }
  if (to.empty()) {
    if (!quorum) return InvalidArgument("--to HOST:PORT is required (or --quorum N alone to change the sync quorum)");
    CONTINUUM_RETURN_IF_ERROR(volumes_->GetVolume(volume).status());
    CONTINUUM_RETURN_IF_ERROR(SetQuorum(volume, *quorum));
    return nlohmann::json{{"volume", volume}, {"quorum", *quorum}};
  }
  CONTINUUM_ASSIGN_OR_RETURN(auto mode, replication::ParseMode(req.mode));
  CONTINUUM_ASSIGN_OR_RETURN(auto codec, replication::ParseCodec(req.compress));
  CONTINUUM_ASSIGN_OR_RETURN(uint64_t bandwidth, replication::ParseRate(req.bandwidth));
  if (to.find(':') == std::string::npos) return InvalidArgument("--to must be HOST:PORT, got '" + to + "'");
  CONTINUUM_ASSIGN_OR_RETURN(auto vol, volumes_->GetVolume(volume));
  if (vol->config().replica) {
    // Cascade: the replica's stream is forwarded as received. Only async: a
    // write here is not an application's write, and the source cannot wait
    // for a hop it does not know about.
    if (mode != replication::Mode::kAsync) {
      return InvalidArgument("volume " + volume + " is a replica: forwarding it onward (cascade) is asynchronous "
                             "only; drop --mode " + replication::ModeName(mode));
    }
    if (quorum) return InvalidArgument("volume " + volume + " is a replica: --quorum does not apply to a cascade");
  }
  {
    std::lock_guard lock(mu_);
    for (auto& s : senders_[volume]) {
      if (s->options().address == to) {
        return AlreadyExists("volume " + volume + " already replicates to " + to +
                             " (unreplicate first to change the mode" +
                             (quorum ? "; --quorum without --to changes only the quorum)" : ")"));
      }
    }
  }
  // A new target starts from scratch: forget any state of an earlier one.
  std::filesystem::remove(StatePath(volume, to));
  int peer_timeout_ms = 0;
  if (!req.peer_timeout.empty()) {
    char* end = nullptr;
    double secs = std::strtod(req.peer_timeout.c_str(), &end);
    if (end == req.peer_timeout.c_str() || *end != '\0' || secs < 0.2 || secs > 3600) {
      return InvalidArgument("--peer-timeout must be seconds between 0.2 and 3600, got '" + req.peer_timeout + "'");
    }
    peer_timeout_ms = static_cast<int>(secs * 1000);
  }
  // The quorum first: a sync target must not start under the old rule.
  if (quorum) CONTINUUM_RETURN_IF_ERROR(SetQuorum(volume, *quorum));
  CONTINUUM_RETURN_IF_ERROR(StartSender(volume, to, mode, codec, bandwidth, peer_timeout_ms));
  volumes_->AddEvent(volume, "replication_added",
                     "to " + to + " (" + replication::ModeName(mode) + ", compress " + replication::CodecName(codec) +
                         (bandwidth ? ", limit " + std::to_string(bandwidth) + " bytes/s" : "") + ")");
  nlohmann::json out{{"volume", volume}, {"to", to}, {"mode", replication::ModeName(mode)},
                     {"compress", replication::CodecName(codec)}, {"bandwidth", bandwidth}};
  if (quorum) out["quorum"] = *quorum;
  return out;
}

Status ReplicationManager::Unreplicate(const std::string& volume, const std::string& to) {
  std::shared_ptr<replication::TargetSender> victim;
  std::shared_ptr<replication::SyncQuorum> quorum;
  {
    std::lock_guard lock(mu_);
    quorum = Quorum(volume);
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
  quorum->Remove(victim.get());  // writers stop waiting for it
  victim->Stop();
  std::filesystem::remove(StatePath(volume, to));
  volumes_->AddEvent(volume, "replication_removed", "to " + to);
  return Status::Ok();
}

Result<nlohmann::json> ReplicationManager::Targets(const std::string& volume) {
  CONTINUUM_RETURN_IF_ERROR(volumes_->GetVolume(volume).status());
  std::vector<std::shared_ptr<replication::TargetSender>> list;
  std::shared_ptr<replication::SyncQuorum> quorum;
  {
    std::lock_guard lock(mu_);
    list = senders_[volume];
    quorum = Quorum(volume);
  }
  // The volume's sync quorum, repeated in every entry (the list stays a list).
  nlohmann::json q = quorum->GetStatus().ToJson();
  nlohmann::json out = nlohmann::json::array();
  for (auto& s : list) {
    nlohmann::json t = s->GetStatus().ToJson();
    t["quorum"] = q;
    out.push_back(std::move(t));
  }
  return out;
}

Result<nlohmann::json> ReplicationManager::Verify(const std::string& volume, const std::string& to, bool repair) {
  CONTINUUM_ASSIGN_OR_RETURN(auto vol, volumes_->GetVolume(volume));
  replication::TargetOptions opts;
  replication::TargetStatus st;
  {
    std::lock_guard lock(mu_);
    replication::TargetSender* found = nullptr;
    for (auto& s : senders_[volume]) {
      if (s->options().address == to) found = s.get();
    }
    if (!found) return NotFound("volume " + volume + " does not replicate to " + to);
    opts = found->options();
    st = found->GetStatus();
  }
  if (!vol->cdp()) {
    return FailedPrecondition("volume " + volume + " has no CDP journal: verify compares views at one seq on both sides");
  }
  if (repair && vol->config().replica) {
    // A repair appends resync records: seqs that belong to this replica's source.
    return FailedPrecondition("volume " + volume + " is a replica: verify --repair is not available on a cascade "
                              "hop (delete the replica on " + to + " to seed it again)");
  }
  if (st.state != "streaming") {
    return FailedPrecondition("target " + to + " is " + st.state + (st.last_error.empty() ? "" : " (" + st.last_error + ")") +
                              "; verify needs a connected target");
  }
  if (st.resyncing) return FailedPrecondition("target " + to + " is resyncing; verify once it has caught up");
  if (st.acked_seq == 0) return FailedPrecondition("target " + to + " holds nothing yet");
  // Both sides at the same seq: the newest one the target holds durably. The
  // primary's view at it is built from its undo journal, the replica's from its own.
  uint64_t seq = st.acked_seq;
  int64_t start = MonoNowNs();
  CONTINUUM_ASSIGN_OR_RETURN(auto point, vol->ResolvePoint("seq:" + std::to_string(seq)));
  CONTINUUM_ASSIGN_OR_RETURN(auto view, vol->OpenView(point, ""));
  const auto& cfg = vol->config();
  replication::VerifyRequest req{.volume = volume, .size = cfg.size, .block_size = cfg.block_size, .seq = seq};
  CONTINUUM_ASSIGN_OR_RETURN(auto local, replication::RangeChecksums(*view, req.range_bytes));
  view.reset();
  CONTINUUM_ASSIGN_OR_RETURN(auto remote, replication::FetchReplicaChecksums(opts, req));
  auto diff = replication::DiffRanges(local, remote, req.range_bytes, cfg.size);
  uint64_t diff_bytes = 0;
  nlohmann::json ranges = nlohmann::json::array();
  for (const auto& e : diff) {
    diff_bytes += e.length;
    ranges.push_back({{"offset", e.offset}, {"length", e.length}});
  }
  nlohmann::json out{{"volume", volume}, {"to", to}, {"replica", st.replica}, {"seq", seq},
                     {"range_bytes", req.range_bytes}, {"ranges_checked", local.size()},
                     {"differing", ranges}, {"differing_bytes", diff_bytes}, {"repaired", false}};
  if (diff.empty()) {
    volumes_->AddEvent(volume, "verify_ok", "replica at " + to + " equals the primary at seq " + std::to_string(seq));
  } else {
    volumes_->AddEvent(volume, "verify_mismatch", std::to_string(diff.size()) + " range(s), " +
                                                      std::to_string(diff_bytes) + " bytes differ at " + to +
                                                      " (seq " + std::to_string(seq) + ")");
  }
  if (repair && !diff.empty()) {
    // Resync records ship the ranges' current contents through the ordered
    // stream, so later writes still land after them on the replica.
    CONTINUUM_ASSIGN_OR_RETURN(uint64_t last, vol->AppendResync(diff));
    out["repaired"] = true;
    out["repair_last_seq"] = last;
    volumes_->AddEvent(volume, "verify_repair", "resending " + std::to_string(diff_bytes) + " bytes to " + to +
                                                    " (through seq " + std::to_string(last) + ")");
  }
  out["seconds"] = static_cast<double>(MonoNowNs() - start) / 1e9;
  return out;
}

Result<replication::ReplicaProvider::Replica> ServerReplicaProvider::Attach(const replication::HelloInfo& h) {
  std::string name = ReplicaName(h);
  if (h.block_size != 4096) return InvalidArgument("block size " + std::to_string(h.block_size) + " is not supported");
  std::string peer = h.peer.rfind("insecure:", 0) == 0 ? h.source : h.peer;
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

Result<std::vector<uint64_t>> ServerReplicaProvider::ReplicaChecksums(const replication::HelloInfo& h, uint64_t seq,
                                                                      uint64_t range_bytes) {
  std::string name = ReplicaName(h);
  CONTINUUM_ASSIGN_OR_RETURN(auto desc, volumes_->Describe(name));
  if (!desc.contains("replica")) return FailedPrecondition("volume " + name + " here is not a replica");
  if (desc.value("size", 0ull) != h.size) return FailedPrecondition("replica " + name + " has a different size");
  const auto& r = desc["replica"];
  // Inside a resync window the replica is legitimately ahead of the source's
  // image at that seq; comparing there would report false differences.
  if (r.value("resyncing", false) || seq < r.value("consistent_from", 0ull)) {
    return FailedPrecondition("replica " + name + " is not crash-consistent at seq " + std::to_string(seq) +
                              " (resync window); verify again once it has caught up");
  }
  CONTINUUM_ASSIGN_OR_RETURN(auto vol, volumes_->GetVolume(name));
  if (vol->LastSeq() < seq) {
    return FailedPrecondition("replica " + name + " holds seq " + std::to_string(vol->LastSeq()) + ", not " +
                              std::to_string(seq));
  }
  CONTINUUM_ASSIGN_OR_RETURN(auto point, vol->ResolvePoint("seq:" + std::to_string(seq)));
  CONTINUUM_ASSIGN_OR_RETURN(auto view, vol->OpenView(point, ""));
  auto sums = replication::RangeChecksums(*view, range_bytes);
  volumes_->AddEvent(name, "verify_served", "checksums at seq " + std::to_string(seq));
  return sums;
}

Result<replication::ReplicaProvider::Replica> ServerReplicaProvider::LiveReplica(const replication::HelloInfo& h) {
  std::string name = ReplicaName(h);
  CONTINUUM_ASSIGN_OR_RETURN(auto desc, volumes_->Describe(name));
  if (!desc.contains("replica")) return FailedPrecondition("volume " + name + " here is not a replica");
  if (desc.value("size", 0ull) != h.size) return FailedPrecondition("replica " + name + " has a different size");
  CONTINUUM_ASSIGN_OR_RETURN(auto vol, volumes_->GetVolume(name));
  volumes_->AddEvent(name, "diff_sync_started", "comparing checksums with the source " + h.source);
  return Replica{name, vol, false};
}

}  // namespace continuum::agent
