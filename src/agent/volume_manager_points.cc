// Point-in-time features of VolumeManager: bookmarks, schedules, views,
// rollback, restore, changed-block bitmaps.

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "agent/volume_manager_internal.h"
#include "continuum/common/log.h"
#include "continuum/common/time_util.h"
#include "continuum/common/units.h"
#include "continuum/io/freeze.h"
#include "continuum/journal/record.h"

namespace continuum::agent {

Result<nlohmann::json> VolumeManager::AddBookmark(const std::string& name, const std::string& label,
                                                  bool consistent) {
  CONTINUUM_RETURN_IF_ERROR(ValidateLabel(label));
  CONTINUUM_ASSIGN_OR_RETURN(auto m, Find(name));
  CONTINUUM_ASSIGN_OR_RETURN(auto vol, Healthy(m.get()));
  if (!m->cfg.cdp) return FailedPrecondition("volume " + name + " has no CDP journal; bookmarks need one");
  if (vol->cdp()->HasBookmark(label)) {
    return AlreadyExists("volume " + name + " already has a bookmark '" + label + "'");
  }
  if (!consistent) {
    CONTINUUM_ASSIGN_OR_RETURN(cdp::Point p, vol->AddBookmark(label, 0));
    events_->Add(name, "bookmark_added", label + " at seq:" + std::to_string(p.seq));
    return nlohmann::json{{"volume", name}, {"label", label}, {"consistent", false}, {"point", PointJson(p)}};
  }
  Hooks hooks;
  if (auto it = opts_.hooks.find(name); it != opts_.hooks.end()) hooks = it->second;
  std::string mount_point;
  {
    std::lock_guard op(m->op_mu);
    if (m->loop) {
      CONTINUUM_ASSIGN_OR_RETURN(mount_point, io::MountPointOf(m->device));
    }
  }
  if (mount_point.empty() && hooks.pre.empty() && hooks.post.empty()) {
    return FailedPrecondition("--consistent needs the volume's filesystem to be mounted (to freeze it) or "
                              "pre/post hooks for volume " + name + " in the agent config");
  }
  std::string method;
  if (!hooks.pre.empty()) {
    CONTINUUM_RETURN_IF_ERROR(io::RunHook(hooks.pre, "pre-bookmark hook"));
    method = "hooks";
  }
  Result<cdp::Point> p = Internal("unset");
  if (!mount_point.empty()) {
    // FIFREEZE writes the filesystem's dirty data and journal through the
    // device and holds new writes, so the marker sits at a clean point.
    Status st = io::FreezeFilesystem(mount_point);
    if (!st.ok()) {
      if (!hooks.post.empty()) io::RunHook(hooks.post, "post-bookmark hook").IgnoreError();
      return st;
    }
    p = vol->AddBookmark(label, journal::kFlagConsistent);
    Status thaw = io::ThawFilesystem(mount_point);
    if (!thaw.ok()) events_->Add(name, "thaw_failed", thaw.message());
    method = method.empty() ? "fifreeze" : "fifreeze+hooks";
  } else {
    p = vol->AddBookmark(label, journal::kFlagConsistent);
  }
  if (!hooks.post.empty()) {
    Status st = io::RunHook(hooks.post, "post-bookmark hook");
    if (!st.ok()) events_->Add(name, "hook_failed", st.message());
  }
  if (!p.ok()) return p.status();
  events_->Add(name, "bookmark_added", label + " (consistent, " + method + ") at seq:" + std::to_string(p->seq));
  return nlohmann::json{{"volume", name}, {"label", label}, {"consistent", true}, {"method", method},
                        {"mount_point", mount_point}, {"point", PointJson(*p)}};
}

Result<nlohmann::json> VolumeManager::ListBookmarks(const std::string& name) {
  CONTINUUM_ASSIGN_OR_RETURN(auto m, Find(name));
  CONTINUUM_ASSIGN_OR_RETURN(auto vol, Healthy(m.get()));
  if (!m->cfg.cdp) return FailedPrecondition("volume " + name + " has no CDP journal");
  nlohmann::json out = nlohmann::json::array();
  for (const auto& b : vol->cdp()->Bookmarks()) {
    out.push_back({{"label", b.label}, {"seq", b.seq}, {"time", FormatRfc3339(b.ts_ns)},
                   {"consistent", b.consistent}, {"rollback", b.rollback_mark}});
  }
  return out;
}

static nlohmann::json ScheduleJson(const Schedule& s) {
  nlohmann::json j{{"id", s.id}, {"consistent", s.consistent}};
  if (s.every_ns > 0) j["every"] = FormatDuration(s.every_ns);
  if (!s.daily.empty()) j["daily"] = s.daily;
  j["last_run"] = s.last_run_ns ? nlohmann::json(FormatRfc3339(s.last_run_ns)) : nlohmann::json(nullptr);
  return j;
}

Result<nlohmann::json> VolumeManager::AddSchedule(const std::string& name, Schedule s) {
  CONTINUUM_ASSIGN_OR_RETURN(auto m, Find(name));
  if (!m->cfg.cdp) return FailedPrecondition("volume " + name + " has no CDP journal");
  if ((s.every_ns > 0) == !s.daily.empty()) return InvalidArgument("give exactly one of --every or --daily");
  if (s.every_ns > 0 && s.every_ns < 1'000'000'000) return InvalidArgument("--every must be at least 1s");
  if (!s.daily.empty()) {
    int hh = -1, mm = -1;
    char tail = 0;
    if (std::sscanf(s.daily.c_str(), "%d:%d%c", &hh, &mm, &tail) != 2 || hh < 0 || hh > 23 || mm < 0 ||
        mm > 59) {
      return InvalidArgument("invalid --daily '" + s.daily + "': expected HH:MM (24-hour, local time)");
    }
  }
  std::lock_guard op(m->op_mu);
  s.id = m->next_schedule_id++;
  s.last_run_ns = WallNowNs();
  m->schedules.push_back(s);
  CONTINUUM_RETURN_IF_ERROR(SaveRecord(*m));
  sched_cv_.notify_all();
  return ScheduleJson(s);
}

Result<nlohmann::json> VolumeManager::ListSchedules(const std::string& name) {
  CONTINUUM_ASSIGN_OR_RETURN(auto m, Find(name));
  std::lock_guard op(m->op_mu);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& s : m->schedules) out.push_back(ScheduleJson(s));
  return out;
}

Status VolumeManager::RemoveSchedule(const std::string& name, uint64_t id) {
  CONTINUUM_ASSIGN_OR_RETURN(auto m, Find(name));
  std::lock_guard op(m->op_mu);
  auto it = std::find_if(m->schedules.begin(), m->schedules.end(), [&](const Schedule& s) { return s.id == id; });
  if (it == m->schedules.end()) return NotFound("volume " + name + " has no schedule " + std::to_string(id));
  m->schedules.erase(it);
  return SaveRecord(*m);
}

// Next due time of a schedule after its last run.
static int64_t NextDue(const Schedule& s) {
  if (s.every_ns > 0) return s.last_run_ns + s.every_ns;
  int hh = 0, mm = 0;
  std::sscanf(s.daily.c_str(), "%d:%d", &hh, &mm);
  time_t last = static_cast<time_t>(s.last_run_ns / 1'000'000'000);
  struct tm tm_local;
  localtime_r(&last, &tm_local);
  tm_local.tm_hour = hh;
  tm_local.tm_min = mm;
  tm_local.tm_sec = 0;
  tm_local.tm_isdst = -1;
  time_t due = mktime(&tm_local);
  if (due <= last) {
    tm_local.tm_mday += 1;
    tm_local.tm_isdst = -1;
    due = mktime(&tm_local);
  }
  return static_cast<int64_t>(due) * 1'000'000'000;
}

void VolumeManager::RunDueSchedules() {
  std::vector<std::shared_ptr<Managed>> vols;
  {
    std::lock_guard lock(mu_);
    for (auto& [n, m] : volumes_) vols.push_back(m);
  }
  int64_t now = WallNowNs();
  for (auto& m : vols) {
    std::vector<Schedule> due;
    {
      std::lock_guard op(m->op_mu);
      for (auto& s : m->schedules) {
        if (NextDue(s) <= now) {
          due.push_back(s);
          s.last_run_ns = now;
        }
      }
      if (!due.empty()) SaveRecord(*m).IgnoreError();
    }
    for (const auto& s : due) {
      std::string label = "auto-" + std::to_string(s.id) + "-" + FormatRfc3339(now);
      auto r = AddBookmark(m->cfg.name, label, s.consistent);
      if (!r.ok()) {
        events_->Add(m->cfg.name, "schedule_failed",
                     "scheduled bookmark " + std::to_string(s.id) + ": " + r.status().message());
      }
    }
  }
}

void VolumeManager::SchedulerLoop() {
  std::unique_lock lock(sched_mu_);
  for (;;) {
    sched_cv_.wait_for(lock, std::chrono::milliseconds(500));
    {
      std::lock_guard g(mu_);
      if (shutting_down_) return;
    }
    lock.unlock();
    RunDueSchedules();
    CloseOrphanedViews();
    lock.lock();
  }
}

uint64_t ProcessStartTime(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!f || !std::getline(f, text)) return 0;
  // The command name (field 2) may hold spaces and parentheses: fields
  // start after the last ')'. Field 22 is the 20th after it.
  size_t close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(text.substr(close + 1));
  std::string field;
  for (int i = 3; i <= 22 && rest >> field; ++i) {
    if (i == 22) return std::strtoull(field.c_str(), nullptr, 10);
  }
  return 0;
}

void VolumeManager::CloseOrphanedViews() {
  struct Owned {
    std::string id, volume, device;
    pid_t pid;
    uint64_t start;
  };
  std::vector<Owned> owned;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, v] : views_) {
      if (v->owner_pid > 0) owned.push_back({id, v->volume, v->device, v->owner_pid, v->owner_start});
    }
  }
  for (const auto& o : owned) {
    if (ProcessStartTime(o.pid) == o.start) continue;  // still running
    Status st = CloseView(o.id);
    if (st.ok()) {
      events_->Add(o.volume, "view_owner_gone", o.device + ": the process that opened it ended; closed");
    } else if (st.code() != StatusCode::kNotFound) {
      // Busy (mounted by hand): it stays, said once; the operator closes it.
      {
        std::lock_guard lock(mu_);
        if (auto it = views_.find(o.id); it != views_.end()) it->second->owner_pid = 0;
      }
      events_->Add(o.volume, "view_owner_gone",
                   o.device + ": the process that opened it ended; not closed: " + st.message());
    }
  }
}

Result<nlohmann::json> VolumeManager::OpenView(const std::string& name, const std::string& at, bool writable,
                                               pid_t owner_pid) {
  CONTINUUM_ASSIGN_OR_RETURN(auto m, Find(name));
  CONTINUUM_ASSIGN_OR_RETURN(auto vol, Healthy(m.get()));
  CONTINUUM_ASSIGN_OR_RETURN(cdp::Point point, vol->ResolvePoint(at));
  CONTINUUM_RETURN_IF_ERROR(CheckReplicaPoint(*m, point));
  std::string id;
  {
    std::lock_guard lock(mu_);
    id = std::to_string(next_view_id_++);
  }
  auto v = std::make_unique<View>();
  v->id = id;
  v->volume = name;
  v->point = point;
  v->writable = writable;
  if (owner_pid > 0) {
    // Not visible in this agent's /proc (another pid namespace): no owner.
    if (uint64_t start = ProcessStartTime(owner_pid); start != 0) {
      v->owner_pid = owner_pid;
      v->owner_start = start;
    }
  }
  if (writable) v->overlay = opts_.state_dir + "/views/" + id + ".overlay";
  CONTINUUM_ASSIGN_OR_RETURN(v->view, vol->OpenView(point, v->overlay));
  std::string file = FuseViewFile(id);
  CONTINUUM_RETURN_IF_ERROR(fuse_->AddFile(file, v->view));
  auto loop = io::LoopDevice::Attach({.backing_path = fuse_->PathOf(file), .read_only = !writable,
                                      .direct_io = true, .block_size = m->cfg.block_size});
  if (!loop.ok()) {
    fuse_->RemoveFile(file).IgnoreError();
    if (!v->overlay.empty()) ::unlink(v->overlay.c_str());
    return loop.status();
  }
  v->loop = std::move(loop).value();
  v->device = v->loop->path();
  nlohmann::json j{{"id", id}, {"volume", name}, {"device", v->device}, {"writable", writable},
                   {"point", PointJson(point)}};
  if (v->owner_pid > 0) j["owner_pid"] = v->owner_pid;
  events_->Add(name, "view_opened", v->device + " at seq:" + std::to_string(point.seq) + (writable ? " (writable)" : ""));
  std::lock_guard lock(mu_);
  views_[id] = std::move(v);
  return j;
}

Status VolumeManager::CloseView(const std::string& device_or_id) {
  std::unique_ptr<View> v;
  {
    std::lock_guard lock(mu_);
    auto it = views_.find(device_or_id);
    if (it == views_.end()) {
      it = std::find_if(views_.begin(), views_.end(), [&](const auto& kv) { return kv.second->device == device_or_id; });
    }
    if (it == views_.end()) return NotFound("no open view at " + device_or_id + " (see 'continuum view list')");
    v = std::move(it->second);
    views_.erase(it);
  }
  // Detaching can wait for transient holders: not under the manager lock.
  auto mp = io::MountPointOf(v->device);
  Status st = (mp.ok() && !mp->empty())
                  ? FailedPrecondition("view " + v->device + " is busy (mounted at " + *mp + "); unmount it first")
                  : v->loop->Detach();
  if (!st.ok()) {
    std::string device = v->device;
    std::lock_guard lock(mu_);
    views_[v->id] = std::move(v);
    if (st.code() == StatusCode::kFailedPrecondition && st.message().find("mounted at") != std::string::npos) return st;
    return FailedPrecondition("view " + device + " is busy (mounted or open); unmount it first");
  }
  fuse_->RemoveFile(FuseViewFile(v->id)).IgnoreError();
  if (!v->overlay.empty()) ::unlink(v->overlay.c_str());
  events_->Add(v->volume, "view_closed", v->device);
  return Status::Ok();
}

nlohmann::json VolumeManager::ListViews() {
  std::lock_guard lock(mu_);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [id, v] : views_) {
    nlohmann::json j{{"id", id}, {"volume", v->volume}, {"device", v->device}, {"writable", v->writable},
                     {"point", PointJson(v->point)}};
    if (v->owner_pid > 0) j["owner_pid"] = v->owner_pid;
    out.push_back(std::move(j));
  }
  return out;
}

Result<nlohmann::json> VolumeManager::Rollback(const std::string& name, const std::string& to) {
  CONTINUUM_ASSIGN_OR_RETURN(auto m, Find(name));
  std::lock_guard op(m->op_mu);
  if (m->loop) {
    return FailedPrecondition("volume " + name + " is up at " + m->device +
                              "; run 'continuum volume down " + name + "' before rolling back");
  }
  CONTINUUM_ASSIGN_OR_RETURN(auto vol, Healthy(m.get()));
  if (m->replica && m->attached) {
    return FailedPrecondition("replica " + name + " has a source streaming into it; stop replication first");
  }
  if (m->replica && vol->HasCursors()) {
    // Its rollback would take seqs that belong to its source, and forward them.
    return FailedPrecondition("replica " + name + " forwards to other sites (cascade); unreplicate it first");
  }
  CONTINUUM_ASSIGN_OR_RETURN(cdp::Point point, vol->ResolvePoint(to));
  CONTINUUM_RETURN_IF_ERROR(CheckReplicaPoint(*m, point));
  int64_t start = MonoNowNs();
  CONTINUUM_ASSIGN_OR_RETURN(cdp::Bookmark undo, vol->Rollback(point));
  double secs = static_cast<double>(MonoNowNs() - start) / 1e9;
  events_->Add(name, "volume_rolled_back",
               "to seq:" + std::to_string(point.seq) + "; undo with 'continuum volume rollback " + name +
                   " --to " + undo.label + "'");
  return nlohmann::json{{"volume", name}, {"point", PointJson(point)}, {"undo_bookmark", undo.label},
                        {"seconds", secs}};
}

Result<nlohmann::json> VolumeManager::Restore(const std::string& name, const std::string& at,
                                              const std::string& to, bool force) {
  CONTINUUM_ASSIGN_OR_RETURN(auto m, Find(name));
  CONTINUUM_ASSIGN_OR_RETURN(auto vol, Healthy(m.get()));
  if (to.empty()) return InvalidArgument("--to is required");
  std::string dest = std::filesystem::absolute(to).lexically_normal().string();
  if (dest == m->cfg.backing || (!m->device.empty() && dest == m->device)) {
    return InvalidArgument("--to " + dest + " is the volume itself; use 'continuum volume rollback' to rewind in place");
  }
  struct stat st;
  if (::stat(dest.c_str(), &st) == 0) {
    if (S_ISREG(st.st_mode) && st.st_size > 0 && !force) {
      return AlreadyExists("--to " + dest + " exists; pass --force to overwrite it");
    }
    if (S_ISBLK(st.st_mode)) {
      int fd = ::open(dest.c_str(), O_WRONLY | O_EXCL | O_CLOEXEC);
      if (fd < 0) return PosixError("target device " + dest + " is busy or not writable", errno);
      ::close(fd);
    }
  }
  CONTINUUM_ASSIGN_OR_RETURN(cdp::Point point, vol->ResolvePoint(at));
  CONTINUUM_RETURN_IF_ERROR(CheckReplicaPoint(*m, point));
  CONTINUUM_ASSIGN_OR_RETURN(auto view, vol->OpenView(point, ""));
  int64_t start = MonoNowNs();
  auto log = Logger("restore");
  Status s = view->CopyTo(dest, [&](uint64_t done, uint64_t total) {
    log->info("restore {} at seq:{} -> {}: {} of {}", name, point.seq, dest, FormatSize(done), FormatSize(total));
  });
  if (!s.ok()) return s.WithContext("restore " + name + " to " + dest);
  double secs = static_cast<double>(MonoNowNs() - start) / 1e9;
  events_->Add(name, "volume_restored", "image at seq:" + std::to_string(point.seq) + " written to " + dest);
  return nlohmann::json{{"volume", name}, {"point", PointJson(point)}, {"to", dest}, {"bytes", m->cfg.size},
                        {"seconds", secs}};
}

Result<nlohmann::json> VolumeManager::CreateBitmap(const std::string& name, const std::string& base) {
  CONTINUUM_ASSIGN_OR_RETURN(auto m, Find(name));
  CONTINUUM_ASSIGN_OR_RETURN(auto vol, Healthy(m.get()));
  CONTINUUM_RETURN_IF_ERROR(vol->Drain());
  // The base seq is read after the bitmap tracks writes: every write with a
  // larger seq is marked in it (backup relies on this to trust a bitmap).
  CONTINUUM_ASSIGN_OR_RETURN(uint64_t seq, vol->tracker()->Create(base, [&] { return vol->LastSeq(); }));
  return nlohmann::json{{"volume", name}, {"base", base}, {"base_seq", seq}};
}

Result<nlohmann::json> VolumeManager::BitmapChanges(const std::string& name, const std::string& base) {
  CONTINUUM_ASSIGN_OR_RETURN(auto m, Find(name));
  CONTINUUM_ASSIGN_OR_RETURN(auto vol, Healthy(m.get()));
  CONTINUUM_RETURN_IF_ERROR(vol->Drain());
  CONTINUUM_ASSIGN_OR_RETURN(auto extents, vol->tracker()->Changes(base));
  nlohmann::json ex = nlohmann::json::array();
  uint64_t total = 0;
  for (const auto& e : extents) {
    ex.push_back({{"offset", e.offset}, {"length", e.length}});
    total += e.length;
  }
  uint64_t base_seq = 0;
  for (const auto& i : vol->tracker()->List()) {
    if (i.name == base) base_seq = i.base_seq;
  }
  return nlohmann::json{{"volume", name}, {"base", base}, {"base_seq", base_seq},
                        {"granularity", vol->tracker()->granularity()}, {"changed_bytes", total},
                        {"extents", ex}};
}

Status VolumeManager::DeleteBitmap(const std::string& name, const std::string& base) {
  CONTINUUM_ASSIGN_OR_RETURN(auto m, Find(name));
  CONTINUUM_ASSIGN_OR_RETURN(auto vol, Healthy(m.get()));
  return vol->tracker()->Remove(base);
}

}  // namespace continuum::agent
