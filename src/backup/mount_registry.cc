#include "backup/mount_registry.h"

#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "continuum/common/log.h"
#include "continuum/io/file.h"
#include "continuum/io/loop_device.h"

namespace continuum::backup {
namespace {

bool IsRecordName(const std::string& name) {
  return name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0;
}

// Fields after the command name in /proc/<pid>/stat: state is the 1st, the
// start time the 20th (field 22 of the whole line).
bool ReadStat(pid_t pid, char* state, uint64_t* ticks) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return false;
  auto close = line.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  for (int i = 1; i <= 20 && rest >> field; ++i) {
    if (i == 1) *state = field.empty() ? '?' : field[0];
    if (i == 20) {
      *ticks = std::strtoull(field.c_str(), nullptr, 10);
      return true;
    }
  }
  return false;
}

}  // namespace

std::string MountRegistryDir() {
  if (const char* env = std::getenv("CONTINUUM_MOUNT_DIR"); env && *env) return env;
  return kDefaultMountRegistry;
}

nlohmann::json MountRecord::ToJson() const {
  return {{"id", id},         {"kind", kind},         {"point", point},         {"repo", repo},
          {"device", device}, {"mountpoint", mountpoint}, {"writable", writable}, {"pid", pid},
          {"start_ticks", start_ticks}, {"created_ns", created_ns}};
}

Result<MountRecord> MountRecord::FromJson(const nlohmann::json& j) {
  try {
    MountRecord r;
    r.id = j.at("id").get<std::string>();
    r.kind = j.at("kind").get<std::string>();
    r.point = j.value("point", "");
    r.repo = j.value("repo", "");
    r.device = j.value("device", "");
    r.mountpoint = j.value("mountpoint", "");
    r.writable = j.value("writable", false);
    r.pid = j.at("pid").get<int>();
    r.start_ticks = j.value("start_ticks", uint64_t{0});
    r.created_ns = j.value("created_ns", int64_t{0});
    return r;
  } catch (const nlohmann::json::exception& e) {
    return DataLoss(std::string("mount record: ") + e.what());
  }
}

MountRegistry::MountRegistry(std::string dir) : dir_(dir.empty() ? MountRegistryDir() : std::move(dir)) {}

Status MountRegistry::Save(const MountRecord& record) const {
  CONTINUUM_RETURN_IF_ERROR(io::MakeDirs(dir_, 0755));
  return io::WriteFileAtomic(dir_ + "/" + record.id + ".json", record.ToJson().dump(2) + "\n");
}

Status MountRegistry::Remove(const std::string& id) const {
  std::string path = dir_ + "/" + id + ".json";
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return PosixError("remove " + path, errno);
  ::unlink(LogOf(id).c_str());  // best effort: only a log
  return Status::Ok();
}

Result<std::vector<MountRecord>> MountRegistry::LoadAll() const {
  namespace fs = std::filesystem;
  std::vector<MountRecord> out;
  std::error_code ec;
  fs::directory_iterator it(dir_, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return out;
    return PosixError("list " + dir_, ec.value());
  }
  for (const auto& entry : it) {
    std::string name = entry.path().filename().string();
    if (!IsRecordName(name)) continue;
    auto text = io::ReadFileToString(entry.path().string());
    if (!text.ok()) continue;  // removed meanwhile
    auto json = nlohmann::json::parse(*text, nullptr, false);
    if (json.is_discarded()) {
      Logger("mount")->warn("ignoring undecodable mount record {}", entry.path().string());
      continue;
    }
    auto rec = MountRecord::FromJson(json);
    if (!rec.ok()) {
      Logger("mount")->warn("ignoring {}: {}", entry.path().string(), rec.status().message());
      continue;
    }
    out.push_back(std::move(*rec));
  }
  return out;
}

Result<std::vector<MountRecord>> MountRegistry::LoadLive() const {
  CONTINUUM_ASSIGN_OR_RETURN(auto all, LoadAll());
  std::vector<MountRecord> live;
  for (auto& rec : all) {
    if (ProcessAlive(rec.pid, rec.start_ticks)) {
      live.push_back(std::move(rec));
      continue;
    }
    Logger("mount")->info("removing stale mount record {} (pid {} is gone)", rec.id, rec.pid);
    CleanUpDeadMount(*this, rec);
    Remove(rec.id).IgnoreError();  // a racing cleaner is fine
  }
  return live;
}

uint64_t StartTicksOf(pid_t pid) {
  char state = '?';
  uint64_t ticks = 0;
  if (!ReadStat(pid, &state, &ticks) || state == 'Z' || state == 'X') return 0;
  return ticks;
}

bool ProcessAlive(pid_t pid, uint64_t start_ticks) {
  if (pid <= 0) return false;
  uint64_t ticks = StartTicksOf(pid);
  if (ticks == 0) return false;
  return start_ticks == 0 || ticks == start_ticks;
}

void CleanUpDeadMount(const MountRegistry& registry, const MountRecord& record) {
  auto log = Logger("mount");
  if (record.kind == "image") {
    const std::string fuse_dir = registry.FuseDirOf(record.id);
    if (!record.device.empty()) {
      auto backing = io::LoopBackingFile(record.device);
      if (backing.ok() && backing->rfind(fuse_dir + "/", 0) == 0) {
        Status st = io::DetachLoopDevice(record.device, std::chrono::milliseconds(2000));
        if (!st.ok()) log->warn("stale mount {}: {}", record.id, st.ToString());
      }
    }
    // A dead FUSE mount answers ENOTCONN; detach it lazily.
    if (::umount2(fuse_dir.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
      log->warn("stale mount {}: unmount {}: {}", record.id, fuse_dir, std::strerror(errno));
    }
    ::rmdir(fuse_dir.c_str());
  } else if (!record.mountpoint.empty()) {
    struct ::stat st;
    if (::stat(record.mountpoint.c_str(), &st) != 0 && (errno == ENOTCONN || errno == ECONNABORTED)) {
      if (::umount2(record.mountpoint.c_str(), MNT_DETACH) != 0) {
        log->warn("stale mount {}: unmount {}: {}", record.id, record.mountpoint, std::strerror(errno));
      }
    }
  }
}

}  // namespace continuum::backup
