#include "continuum/agent/volume_manager.h"

#include <dirent.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>

#include "agent/volume_manager_internal.h"
#include "continuum/common/json_field.h"
#include "continuum/common/log.h"
#include "continuum/common/time_util.h"
#include "continuum/common/units.h"
#include "continuum/io/file.h"
#include "continuum/io/freeze.h"

namespace continuum::agent {

std::string FullPolicyName(cdp::FullPolicy p) { return p == cdp::FullPolicy::kBlock ? "block" : "trim"; }

nlohmann::json PointJson(const cdp::Point& p) {
  return {{"seq", p.seq}, {"time", FormatRfc3339(p.ts_ns)}, {"ts_ns", p.ts_ns}};
}

std::string FuseVolumeFile(const std::string& name) { return "vol-" + name; }
std::string FuseViewFile(const std::string& id) { return "view-" + id; }

Status ValidateVolumeName(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 64 && std::isalnum(static_cast<unsigned char>(name[0]));
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') ok = false;
  }
  if (!ok) {
    return InvalidArgument("invalid volume name '" + name +
                           "': use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit");
  }
  return Status::Ok();
}

Status ValidateLabel(const std::string& label) {
  if (label.empty() || label.size() > volume::Volume::kMaxLabelBytes) {
    return InvalidArgument("bookmark label must be 1-" + std::to_string(volume::Volume::kMaxLabelBytes) + " characters");
  }
  if (label.rfind("seq:", 0) == 0 || label == "latest" || label == "now" ||
      (label.size() >= 10 && std::isdigit(static_cast<unsigned char>(label[0])) && label[4] == '-' &&
       label[7] == '-')) {
    return InvalidArgument("bookmark label '" + label +
                           "' would be read as a time or seq:N; choose another label");
  }
  for (char c : label) {
    if (static_cast<unsigned char>(c) < 0x20) return InvalidArgument("bookmark label has a control character");
  }
  return Status::Ok();
}

std::string VolumeManager::VolumeDir(const std::string& name) const {
  return opts_.state_dir + "/volumes/" + name;
}

Result<std::unique_ptr<VolumeManager>> VolumeManager::Start(const ManagerOptions& opts, EventLog* events) {
  std::unique_ptr<VolumeManager> m(new VolumeManager(opts, events));
  CONTINUUM_RETURN_IF_ERROR(io::MakeDirs(opts.state_dir + "/volumes", 0700));
  CONTINUUM_RETURN_IF_ERROR(io::MakeDirs(opts.state_dir + "/views", 0700));
  // Loop devices left by a crashed agent still point at its (dead) FUSE files;
  // release them before the stale mount is replaced and their paths change.
  m->CleanStaleLoops(opts.state_dir + "/dev/");
  auto fuse = capture::FuseExporter::Start(opts.state_dir + "/dev", opts.fuse);
  if (!fuse.ok()) return fuse.status().WithContext("start device exporter");
  m->fuse_ = std::move(fuse).value();
  CONTINUUM_RETURN_IF_ERROR(m->LoadAll());
  m->scheduler_ = std::thread([raw = m.get()] { raw->SchedulerLoop(); });
  return m;
}

VolumeManager::~VolumeManager() { Shutdown(); }

void VolumeManager::CleanStaleLoops(const std::string& fuse_dir) {
  std::vector<std::string> devs;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/sys/block", ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind("loop", 0) != 0) continue;
    std::ifstream in(e.path().string() + "/loop/backing_file");
    std::string b;
    if (!std::getline(in, b)) continue;
    while (!b.empty() && b.back() == '\n') b.pop_back();
    if (b.rfind(fuse_dir, 0) == 0) devs.push_back("/dev/" + n);
  }
  const std::string fuse_path = fuse_dir;
  for (const auto& d : devs) {
    Status st = io::DetachLoopDevice(d, std::chrono::milliseconds(500));
    if (st.ok()) {
      Logger("agent")->info("released stale loop device {} of {}", d, fuse_path);
    } else {
      // Still mounted or open: let the kernel release it on the last close.
      int fd = ::open(d.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd >= 0) {
        (void)!::ioctl(fd, LOOP_CLR_FD, 0);
        ::close(fd);
      }
      events_->Add("", "stale_device", "stale loop device " + d + " of " + fuse_path +
                                           " is still in use; it is released when its user closes it (unmount it)");
    }
  }
}

Status VolumeManager::LoadAll() {
  std::string dir = opts_.state_dir + "/volumes";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return PosixError("open " + dir, errno);
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != ".." && io::PathExists(dir + "/" + n + "/volume.json")) names.push_back(n);
  }
  ::closedir(d);
  for (const auto& name : names) {
    auto m = std::make_shared<Managed>();
    auto text = io::ReadFileToString(VolumeDir(name) + "/volume.json");
    nlohmann::json j = text.ok() ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
    if (!text.ok() || j.is_discarded()) {
      events_->Add(name, "volume_failed", "cannot read volume record " + VolumeDir(name) + "/volume.json");
      continue;
    }
    try {
      m->cfg.name = j.at("name").get<std::string>();
      m->cfg.backing = j.at("backing").get<std::string>();
      m->cfg.size = j.at("size").get<uint64_t>();
      m->cfg.block_size = j.value("block_size", 4096u);
      m->cfg.cdp = j.value("cdp", true);
      m->cfg.journal_bytes = j.at("journal_bytes").get<uint64_t>();
      m->cfg.retention_ns = j.at("retention_ns").get<int64_t>();
      m->cfg.full_policy = j.value("full_policy", "trim") == "block" ? cdp::FullPolicy::kBlock : cdp::FullPolicy::kTrim;
      m->cfg.cache_bytes = j.value("cache_bytes", opts_.default_cache_bytes);
      m->cfg.spill_bytes = j.value("spill_bytes", opts_.default_spill_bytes);
      m->cfg.created_ts_ns = j.at("created_ts_ns").get<int64_t>();
      m->desired_up = j.value("desired_up", false);
      m->next_schedule_id = j.value("next_schedule_id", 1ull);
      m->exports = j.value("exports", std::vector<std::string>{});
      if (j.contains("replica")) {
        const auto& r = j["replica"];
        m->replica = true;
        m->cfg.replica = true;
        m->source = r.value("source", "");
        m->source_volume = r.value("volume", "");
        m->resync_active = r.value("resync_active", false);
        m->resync_first = r.value("resync_first", 0ull);
        m->consistent_from = r.value("consistent_from", 0ull);
      }
      for (const auto& s : j.value("schedules", nlohmann::json::array())) {
        m->schedules.push_back({s.at("id").get<uint64_t>(), s.value("every_ns", 0ll), s.value("daily", ""),
                                s.value("consistent", false), s.value("last_run_ns", 0ll)});
      }
    } catch (const nlohmann::json::exception& e) {
      events_->Add(name, "volume_failed", std::string("volume record is damaged: ") + e.what());
      continue;
    }
    Status st = OpenVolume(m.get());
    {
      std::lock_guard lock(mu_);
      volumes_[name] = m;
    }
    if (!st.ok()) continue;
    if (m->desired_up) {
      std::lock_guard op(m->op_mu);
      auto dev = UpLocked(m.get());
      if (dev.ok()) {
        events_->Add(name, "volume_up", "restored after restart at " + *dev);
      } else {
        m->error = dev.status().message();
        events_->Add(name, "volume_failed", "could not bring up after restart: " + dev.status().message());
      }
    }
    for (const auto& addr : std::vector<std::string>(m->exports)) {
      auto r = Export(name, addr);
      if (!r.ok()) events_->Add(name, "export_failed", r.status().message());
    }
  }
  return Status::Ok();
}

Status VolumeManager::OpenVolume(Managed* m) {
  std::string name = m->cfg.name;
  volume::VolumeConfig cfg = m->cfg;
  if (m->replica) {
    // A replica this host forwards (cascade): keep its write log for the
    // targets until ReplicationManager::ResumeAll has their cursors.
    std::error_code ec;
    for (const auto& t : std::filesystem::directory_iterator(VolumeDir(name) + "/targets", ec)) {
      if (t.path().extension() != ".json") continue;
      auto text = io::ReadFileToString(t.path().string());
      if (!text.ok()) continue;
      auto j = nlohmann::json::parse(*text, nullptr, false);
      // A damaged file keeps the whole log (its sender then compares in full).
      auto acked = JsonField<uint64_t>(j, "acked_seq", 0);
      uint64_t keep = j.is_discarded() || !acked.ok() ? 0 : *acked;
      cfg.open_cursor = std::min(cfg.open_cursor.value_or(keep), keep);
    }
  }
  auto v = volume::Volume::Open(cfg, VolumeDir(name),
                                [this, name](const std::string& kind, const std::string& msg) {
                                  events_->Add(name, kind, msg);
                                });
  if (!v.ok()) {
    m->error = v.status().message();
    events_->Add(name, "volume_failed", v.status().message());
    return v.status();
  }
  m->volume = std::move(v).value();
  m->error.clear();
  return Status::Ok();
}

Status VolumeManager::SaveRecord(const Managed& m) {
  nlohmann::json schedules = nlohmann::json::array();
  for (const auto& s : m.schedules) {
    schedules.push_back({{"id", s.id}, {"every_ns", s.every_ns}, {"daily", s.daily},
                         {"consistent", s.consistent}, {"last_run_ns", s.last_run_ns}});
  }
  nlohmann::json j{{"format", 1},
                   {"name", m.cfg.name},
                   {"backing", m.cfg.backing},
                   {"size", m.cfg.size},
                   {"block_size", m.cfg.block_size},
                   {"cdp", m.cfg.cdp},
                   {"journal_bytes", m.cfg.journal_bytes},
                   {"retention_ns", m.cfg.retention_ns},
                   {"full_policy", FullPolicyName(m.cfg.full_policy)},
                   {"cache_bytes", m.cfg.cache_bytes},
                   {"spill_bytes", m.cfg.spill_bytes},
                   {"created_ts_ns", m.cfg.created_ts_ns},
                   {"desired_up", m.desired_up},
                   {"schedules", schedules},
                   {"next_schedule_id", m.next_schedule_id},
                   {"exports", m.exports}};
  if (m.replica) {
    j["replica"] = {{"source", m.source}, {"volume", m.source_volume}, {"resync_active", m.resync_active},
                    {"resync_first", m.resync_first}, {"consistent_from", m.consistent_from}};
  }
  return io::WriteFileAtomic(VolumeDir(m.cfg.name) + "/volume.json", j.dump(2) + "\n");
}

Result<std::shared_ptr<VolumeManager::Managed>> VolumeManager::Find(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = volumes_.find(name);
  if (it == volumes_.end()) {
    return NotFound("no volume '" + name + "' (see 'continuum volume status')");
  }
  return it->second;
}

Result<std::shared_ptr<volume::Volume>> VolumeManager::Healthy(Managed* m) {
  if (!m->volume) {
    return FailedPrecondition("volume " + m->cfg.name + " is not available: " + m->error);
  }
  return m->volume;
}

Result<nlohmann::json> VolumeManager::Create(const CreateVolumeRequest& req) {
  return CreateInternal(req, false, nullptr);
}

Result<nlohmann::json> VolumeManager::CreateInternal(const CreateVolumeRequest& req, bool allow_state_dir,
                                                     const std::function<void(Managed*)>& init) {
  CONTINUUM_RETURN_IF_ERROR(ValidateVolumeName(req.name));
  if (req.backing.empty()) return InvalidArgument("--backing is required");
  std::string backing = std::filesystem::absolute(req.backing).lexically_normal().string();
  {
    std::lock_guard lock(mu_);
    if (volumes_.count(req.name)) return AlreadyExists("volume '" + req.name + "' already exists");
    for (const auto& [n, m] : volumes_) {
      if (m->cfg.backing == backing) {
        return AlreadyExists("backing " + backing + " is already used by volume '" + n + "'");
      }
    }
  }
  if (!allow_state_dir && (backing.rfind(opts_.state_dir + "/", 0) == 0 || backing.rfind(fuse_->mountpoint(), 0) == 0)) {
    return InvalidArgument("backing " + backing + " is inside the agent's state directory");
  }
  uint64_t size = req.size;
  struct stat st;
  bool created_file = false;
  if (::stat(backing.c_str(), &st) == 0) {
    if (S_ISBLK(st.st_mode)) {
      // O_EXCL on a block device fails if it is mounted or held by another user.
      int fd = ::open(backing.c_str(), O_RDWR | O_EXCL | O_CLOEXEC);
      if (fd < 0) return PosixError("backing device " + backing + " is busy or not writable", errno);
      off_t end = ::lseek(fd, 0, SEEK_END);
      ::close(fd);
      if (size == 0) size = static_cast<uint64_t>(end);
      if (size > static_cast<uint64_t>(end)) {
        return InvalidArgument("backing device " + backing + " is " + FormatSize(end) + ", smaller than --size " +
                               FormatSize(size));
      }
    } else if (S_ISREG(st.st_mode)) {
      if (size == 0) size = static_cast<uint64_t>(st.st_size);
      if (size > static_cast<uint64_t>(st.st_size)) {
        return InvalidArgument("backing file " + backing + " is " + FormatSize(st.st_size) +
                               ", smaller than --size " + FormatSize(size));
      }
    } else {
      return InvalidArgument("backing " + backing + " is neither a block device nor a regular file");
    }
  } else {
    if (size == 0) {
      return InvalidArgument("backing file " + backing + " does not exist; give --size to create it");
    }
    CONTINUUM_ASSIGN_OR_RETURN(auto f, io::File::Open(backing, O_RDWR | O_CREAT | O_EXCL, 0600));
    CONTINUUM_RETURN_IF_ERROR(f->Truncate(size));
    CONTINUUM_RETURN_IF_ERROR(f->Sync());
    created_file = true;
  }
  if (size == 0 || size % 4096 != 0) {
    return InvalidArgument("volume size " + std::to_string(size) + " must be a non-zero multiple of 4096");
  }
  auto m = std::make_shared<Managed>();
  m->cfg.name = req.name;
  m->cfg.backing = backing;
  m->cfg.size = size;
  m->cfg.cdp = req.cdp;
  m->cfg.journal_bytes = req.journal_bytes ? req.journal_bytes : opts_.default_journal_bytes;
  m->cfg.retention_ns = req.retention_ns >= 0 ? req.retention_ns : opts_.default_retention_ns;
  if (!req.full_policy.empty() && req.full_policy != "trim" && req.full_policy != "block") {
    return InvalidArgument("invalid --on-full '" + req.full_policy + "': use trim or block");
  }
  m->cfg.full_policy = req.full_policy == "block" ? cdp::FullPolicy::kBlock : cdp::FullPolicy::kTrim;
  m->cfg.cache_bytes = req.cache_bytes ? req.cache_bytes : opts_.default_cache_bytes;
  m->cfg.spill_bytes = req.spill_bytes ? req.spill_bytes : opts_.default_spill_bytes;
  m->cfg.created_ts_ns = WallNowNs();
  if (m->cfg.cdp && m->cfg.journal_bytes < (8ull << 20)) {
    return InvalidArgument("--journal-size must be at least 8M");
  }
  if (init) init(m.get());
  std::string dir = VolumeDir(req.name);
  if (io::PathExists(dir)) std::filesystem::remove_all(dir);
  CONTINUUM_RETURN_IF_ERROR(io::MakeDirs(dir, 0700));
  Status saved = SaveRecord(*m);
  if (saved.ok()) saved = OpenVolume(m.get());
  if (!saved.ok()) {
    std::filesystem::remove_all(dir);
    if (created_file) ::unlink(backing.c_str());
    return saved;
  }
  {
    std::lock_guard lock(mu_);
    volumes_[req.name] = m;
  }
  events_->Add(req.name, "volume_created", "backing " + backing + ", " + FormatSize(size));
  return Describe(req.name);
}

Status VolumeManager::Delete(const std::string& name) {
  CONTINUUM_ASSIGN_OR_RETURN(auto m, Find(name));
  std::lock_guard op(m->op_mu);
  if (m->loop) return FailedPrecondition("volume " + name + " is up; run 'continuum volume down " + name + "' first");
  std::error_code ec;
  for (const auto& t : std::filesystem::directory_iterator(VolumeDir(name) + "/targets", ec)) {
    return FailedPrecondition("volume " + name + " still replicates (" + t.path().stem().string() +
                              "); run 'continuum volume unreplicate' first");
  }
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, v] : views_) {
      if (v->volume == name) return FailedPrecondition("volume " + name + " has open view " + v->device);
    }
    for (auto& [addr, srv] : nbd_) srv->RemoveExport(name).IgnoreError();
    volumes_.erase(name);
  }
  if (m->volume) m->volume->Close().IgnoreError();
  m->volume.reset();
  std::filesystem::remove_all(VolumeDir(name));
  events_->Add(name, "volume_deleted", "volume record and journal removed; backing " + m->cfg.backing + " kept");
  return Status::Ok();
}

Result<std::string> VolumeManager::UpLocked(Managed* m) {
  if (m->loop) return m->device;
  if (m->replica) {
    return FailedPrecondition("volume " + m->cfg.name + " is a replica of " + m->source + ":" + m->source_volume +
                              " and is written only by replication; open a view of it instead");
  }
  CONTINUUM_ASSIGN_OR_RETURN(auto vol, Healthy(m));
  std::string file = FuseVolumeFile(m->cfg.name);
  CONTINUUM_RETURN_IF_ERROR(fuse_->AddFile(file, vol));
  auto loop = io::LoopDevice::Attach({.backing_path = fuse_->PathOf(file), .read_only = false,
                                      .direct_io = true, .block_size = m->cfg.block_size});
  if (!loop.ok()) {
    fuse_->RemoveFile(file).IgnoreError();
    return loop.status().WithContext("volume " + m->cfg.name);
  }
  m->loop = std::move(loop).value();
  m->device = m->loop->path();
  return m->device;
}

Result<std::string> VolumeManager::Up(const std::string& name) {
  CONTINUUM_ASSIGN_OR_RETURN(auto m, Find(name));
  std::lock_guard op(m->op_mu);
  bool was_up = m->loop != nullptr;
  CONTINUUM_ASSIGN_OR_RETURN(std::string dev, UpLocked(m.get()));
  if (!m->desired_up) {
    m->desired_up = true;
    CONTINUUM_RETURN_IF_ERROR(SaveRecord(*m));
  }
  if (!was_up) events_->Add(name, "volume_up", "device " + dev);
  return dev;
}

Status VolumeManager::DownLocked(Managed* m) {
  if (!m->loop) return Status::Ok();
  // A mounted device fails at once; other holders (udev probing right after
  // an unmount) get the detach timeout to let go.
  auto mp = io::MountPointOf(m->device);
  if (mp.ok() && !mp->empty()) {
    return FailedPrecondition("volume " + m->cfg.name + ": device " + m->device + " is busy (mounted at " + *mp +
                              "); unmount it first");
  }
  Status st = m->loop->Detach();
  if (!st.ok()) {
    return FailedPrecondition("volume " + m->cfg.name + ": device " + m->device +
                              " is busy (mounted or open); unmount it first");
  }
  m->loop.reset();
  m->device.clear();
  if (m->volume) CONTINUUM_RETURN_IF_ERROR(m->volume->Flush());
  return fuse_->RemoveFile(FuseVolumeFile(m->cfg.name));
}

Status VolumeManager::Down(const std::string& name) {
  CONTINUUM_ASSIGN_OR_RETURN(auto m, Find(name));
  std::lock_guard op(m->op_mu);
  bool was_up = m->loop != nullptr;
  CONTINUUM_RETURN_IF_ERROR(DownLocked(m.get()));
  if (m->desired_up) {
    m->desired_up = false;
    CONTINUUM_RETURN_IF_ERROR(SaveRecord(*m));
  }
  if (was_up) events_->Add(name, "volume_down", "device detached");
  return Status::Ok();
}

Result<nlohmann::json> VolumeManager::Describe(const std::string& name) {
  CONTINUUM_ASSIGN_OR_RETURN(auto m, Find(name));
  nlohmann::json j{{"name", m->cfg.name},
                   {"backing", m->cfg.backing},
                   {"size", m->cfg.size},
                   {"cdp", m->cfg.cdp},
                   {"journal_limit", m->cfg.journal_bytes},
                   {"retention", FormatDuration(m->cfg.retention_ns)},
                   {"retention_ns", m->cfg.retention_ns},
                   {"on_full", FullPolicyName(m->cfg.full_policy)},
                   {"cache_size", m->cfg.cache_bytes},
                   {"file_cache_size", m->cfg.spill_bytes},
                   {"created", FormatRfc3339(m->cfg.created_ts_ns)},
                   {"up", m->loop != nullptr},
                   {"device", m->device.empty() ? nlohmann::json(nullptr) : nlohmann::json(m->device)},
                   {"exports", m->exports}};
  if (m->loop && fuse_) j["capture_transport"] = "FUSE " + fuse_->TransportInfo().transport;
  if (!m->volume) {
    j["state"] = "failed";
    j["error"] = m->error;
    return j;
  }
  volume::VolumeStats s = m->volume->Stats();
  j["state"] = !s.error.empty() ? "failed" : (s.writes_blocked ? "blocked" : (m->loop ? "up" : "down"));
  if (!s.error.empty()) j["error"] = s.error;
  j["last_seq"] = s.last_seq;
  j["applied_seq"] = s.applied_seq;
  j["pending_bytes"] = s.pending_bytes;
  j["write_behind_bytes"] = s.write_behind_bytes;
  j["spilled_records"] = s.spilled_records;
  j["unbuffered_records"] = s.unbuffered_records;
  j["writes"] = s.writes;
  j["bytes_written"] = s.bytes_written;
  j["flushes"] = s.flushes;
  j["write_log_bytes"] = s.wlog_bytes;
  if (m->replica) {
    j["replica"] = {{"source", m->source}, {"volume", m->source_volume}, {"attached", m->attached},
                    {"resyncing", m->resync_active}, {"consistent_from", m->consistent_from}};
    j["state"] = !s.error.empty() ? "failed" : (m->resync_active ? "syncing" : (m->attached ? "replicating" : "idle"));
  }
  if (m->cfg.cdp) {
    j["journal_bytes"] = s.journal_bytes;
    j["oldest_point"] = PointJson(s.oldest);
    j["latest_point"] = PointJson(s.latest);
    j["bookmarks"] = m->volume->cdp()->Bookmarks().size();
  }
  return j;
}

nlohmann::json VolumeManager::DescribeAll() {
  std::vector<std::string> names;
  {
    std::lock_guard lock(mu_);
    for (const auto& [n, m] : volumes_) names.push_back(n);
  }
  nlohmann::json out = nlohmann::json::array();
  for (const auto& n : names) {
    auto d = Describe(n);
    if (d.ok()) out.push_back(*d);
  }
  return out;
}

Result<std::string> VolumeManager::Export(const std::string& name, const std::string& nbd_address) {
  CONTINUUM_ASSIGN_OR_RETURN(auto m, Find(name));
  CONTINUUM_ASSIGN_OR_RETURN(auto vol, Healthy(m.get()));
  std::string addr;
  {
    std::lock_guard lock(mu_);
    auto it = nbd_.find(nbd_address);
    if (it == nbd_.end()) {
      auto srv = capture::NbdServer::Start({.listen = nbd_address});
      if (!srv.ok()) return srv.status().WithContext("export volume " + name);
      it = nbd_.emplace(nbd_address, std::move(srv).value()).first;
    }
    Status st = it->second->AddExport(name, vol);
    if (!st.ok() && st.code() != StatusCode::kAlreadyExists) return st;
    addr = it->second->Address();
  }
  std::lock_guard op(m->op_mu);
  if (std::find(m->exports.begin(), m->exports.end(), nbd_address) == m->exports.end()) {
    m->exports.push_back(nbd_address);
    CONTINUUM_RETURN_IF_ERROR(SaveRecord(*m));
    events_->Add(name, "volume_exported", "NBD export '" + name + "' at " + addr);
  }
  return addr;
}

void VolumeManager::Shutdown() {
  {
    std::lock_guard lock(mu_);
    if (shutting_down_) return;
    shutting_down_ = true;
  }
  sched_cv_.notify_all();
  if (scheduler_.joinable()) scheduler_.join();
  std::map<std::string, std::unique_ptr<View>> views;
  std::map<std::string, std::unique_ptr<capture::NbdServer>> nbd;
  std::map<std::string, std::shared_ptr<Managed>> vols;
  {
    std::lock_guard lock(mu_);
    views.swap(views_);
    nbd.swap(nbd_);
    vols = volumes_;
  }
  for (auto& [id, v] : views) {
    if (v->loop) v->loop->Detach().IgnoreError();
    if (fuse_) fuse_->RemoveFile(FuseViewFile(id)).IgnoreError();
    if (!v->overlay.empty()) ::unlink(v->overlay.c_str());
  }
  views.clear();
  for (auto& [a, s] : nbd) s->Stop();
  nbd.clear();
  for (auto& [n, m] : vols) {
    std::lock_guard op(m->op_mu);
    if (m->loop) {
      Status st = m->loop->Detach();
      if (!st.ok()) {
        events_->Add(n, "shutdown_busy", "device " + m->device +
                                             " is still mounted or open; it returns I/O errors until "
                                             "the agent is started again and the volume brought up");
      }
      m->loop.reset();
    }
    if (m->volume) {
      Status st = m->volume->Close();
      if (!st.ok()) events_->Add(n, "shutdown_failed", st.message());
    }
  }
  if (fuse_) fuse_->Stop().IgnoreError();
}

Result<std::shared_ptr<volume::Volume>> VolumeManager::GetVolume(const std::string& name) {
  CONTINUUM_ASSIGN_OR_RETURN(auto m, Find(name));
  return Healthy(m.get());
}

Result<VolumeManager::ReplicaRef> VolumeManager::AttachReplica(const std::string& name, uint64_t size,
                                                               const std::string& source,
                                                               const std::string& source_volume) {
  CONTINUUM_RETURN_IF_ERROR(ValidateVolumeName(name));
  std::shared_ptr<Managed> m;
  bool created = false;
  {
    std::lock_guard lock(mu_);
    auto it = volumes_.find(name);
    if (it != volumes_.end()) m = it->second;
  }
  if (!m) {
    CONTINUUM_RETURN_IF_ERROR(io::MakeDirs(opts_.state_dir + "/replicas", 0700));
    CreateVolumeRequest req;
    req.name = name;
    req.backing = opts_.state_dir + "/replicas/" + name + ".img";
    req.size = size;
    if (io::PathExists(req.backing)) ::unlink(req.backing.c_str());
    // Replica backings live in the state directory by design.
    auto r = CreateInternal(req, /*allow_state_dir=*/true, [&](Managed* nm) {
      nm->replica = true;
      nm->cfg.replica = true;
      nm->source = source;
      nm->source_volume = source_volume;
    });
    if (!r.ok()) return r.status();
    m = *Find(name);
    created = true;
  }
  std::lock_guard op(m->op_mu);
  if (!m->replica) return FailedPrecondition("volume " + name + " exists here and is not a replica");
  if (m->cfg.size != size) {
    return FailedPrecondition("replica " + name + " is " + std::to_string(m->cfg.size) + " bytes but the source volume is " +
                              std::to_string(size) + "; delete the replica to start over");
  }
  if (m->attached) return FailedPrecondition("replica " + name + " already has a source connected");
  CONTINUUM_ASSIGN_OR_RETURN(auto vol, Healthy(m.get()));
  m->attached = true;
  return ReplicaRef{vol, created};
}

void VolumeManager::DetachReplica(const std::string& name) {
  auto m = Find(name);
  if (!m.ok()) return;
  std::lock_guard op((*m)->op_mu);
  (*m)->attached = false;
}

void VolumeManager::ReplicaResync(const std::string& name, bool begin, uint64_t first, uint64_t last_or_consistent) {
  auto m = Find(name);
  if (!m.ok()) return;
  std::lock_guard op((*m)->op_mu);
  if (begin) {
    (*m)->resync_active = true;
    (*m)->resync_first = first;
    events_->Add(name, "resync_started", "seq " + std::to_string(first) + " to " + std::to_string(last_or_consistent) +
                                             " (points from seq " + std::to_string(first) + " are not crash-consistent until it completes)");
  } else {
    (*m)->resync_active = false;
    (*m)->consistent_from = last_or_consistent;
    events_->Add(name, "resync_done", "crash-consistent from seq " + std::to_string(last_or_consistent));
  }
  SaveRecord(**m).IgnoreError();
}

std::optional<VolumeManager::ReplicaWindowInfo> VolumeManager::ReplicaWindow(const std::string& name) {
  auto m = Find(name);
  if (!m.ok()) return std::nullopt;
  // Called on a sender's every turn: never wait behind a long rollback or
  // restore (the caller keeps what it knew).
  std::unique_lock op((*m)->op_mu, std::try_to_lock);
  if (!op.owns_lock() || !(*m)->replica) return std::nullopt;
  return ReplicaWindowInfo{(*m)->resync_active, (*m)->resync_first, (*m)->consistent_from};
}

nlohmann::json VolumeManager::ListReplicas() {
  nlohmann::json out = nlohmann::json::array();
  for (auto& v : DescribeAll()) {
    if (v.contains("replica")) out.push_back(v);
  }
  return out;
}

Status VolumeManager::CheckReplicaPoint(const Managed& m, const cdp::Point& p) const {
  if (!m.replica) return Status::Ok();
  if (m.resync_active && p.seq >= m.resync_first) {
    return FailedPrecondition("replica " + m.cfg.name + " is resyncing from seq " + std::to_string(m.resync_first) +
                              "; points after it are not crash-consistent until the resync completes");
  }
  if (p.seq >= m.resync_first && p.seq < m.consistent_from) {
    return FailedPrecondition("point seq:" + std::to_string(p.seq) + " of replica " + m.cfg.name +
                              " is inside a resync window (not crash-consistent); the first consistent point is seq:" +
                              std::to_string(m.consistent_from));
  }
  return Status::Ok();
}

}  // namespace continuum::agent
