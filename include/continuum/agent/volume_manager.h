#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "continuum/agent/event_log.h"
#include "continuum/capture/fuse_exporter.h"
#include "continuum/capture/nbd_server.h"
#include "continuum/common/result.h"
#include "continuum/io/loop_device.h"
#include "continuum/volume/volume.h"
#include "continuum/volume/volume_view.h"

namespace continuum::agent {

struct CreateVolumeRequest {
  std::string name;
  std::string backing;
  uint64_t size = 0;  // 0 = size of the existing backing
  uint64_t journal_bytes = 0;  // 0 = default
  int64_t retention_ns = -1;   // -1 = default
  std::string full_policy;     // "" = default ("trim")
  bool cdp = true;
  uint64_t cache_bytes = 0;  // replication memory ring; 0 = default
  uint64_t spill_bytes = 0;  // replication file cache (write log); 0 = default
};

struct Schedule {
  uint64_t id = 0;
  int64_t every_ns = 0;   // interval schedule, or
  std::string daily;      // "HH:MM" local time
  bool consistent = false;
  int64_t last_run_ns = 0;
};

struct Hooks {
  std::string pre;
  std::string post;
};

struct ManagerOptions {
  std::string state_dir;
  uint64_t default_journal_bytes = 1ull << 30;
  int64_t default_retention_ns = 7ll * 86400 * 1'000'000'000;
  uint64_t default_cache_bytes = 128ull << 20;
  uint64_t default_spill_bytes = 4ull << 30;
  std::map<std::string, Hooks> hooks;  // per volume, from the agent config
  // How the device files reach the kernel ([capture] in the agent config).
  capture::FuseExporterOptions fuse = capture::FuseExporterOptions::FromEnvironment();
};

// Owns every protected volume of an agent: their pipelines, their devices
// (FUSE file + loop device), NBD exports, views and bookmark schedules, and
// the persistent volume records under <state_dir>/volumes/<name>/.
// Thread-safety: all public methods are thread-safe; long operations
// (restore, rollback) hold only their volume's operation lock.
class VolumeManager {
 public:
  static Result<std::unique_ptr<VolumeManager>> Start(const ManagerOptions& opts, EventLog* events);
  ~VolumeManager();
  // Flushes and closes every volume, detaches devices, unmounts FUSE.
  void Shutdown();

  Result<nlohmann::json> Create(const CreateVolumeRequest& req);
  Status Delete(const std::string& name);
  Result<std::string> Up(const std::string& name);  // device path
  Status Down(const std::string& name);
  Result<nlohmann::json> Describe(const std::string& name);
  nlohmann::json DescribeAll();
  Result<std::string> Export(const std::string& name, const std::string& nbd_address);

  Result<nlohmann::json> AddBookmark(const std::string& name, const std::string& label, bool consistent);
  Result<nlohmann::json> ListBookmarks(const std::string& name);
  Result<nlohmann::json> AddSchedule(const std::string& name, Schedule s);
  Result<nlohmann::json> ListSchedules(const std::string& name);
  Status RemoveSchedule(const std::string& name, uint64_t id);

  // `owner_pid` > 0: the view is closed by the agent once that process is
  // gone (so a killed `backup volume` run leaves no device behind).
  Result<nlohmann::json> OpenView(const std::string& name, const std::string& at, bool writable,
                                  pid_t owner_pid = 0);
  Status CloseView(const std::string& device_or_id);
  nlohmann::json ListViews();
  Result<nlohmann::json> Rollback(const std::string& name, const std::string& to);
  Result<nlohmann::json> Restore(const std::string& name, const std::string& at, const std::string& to,
                                 bool force);

  // --- replication ---
  Result<std::shared_ptr<volume::Volume>> GetVolume(const std::string& name);
  struct ReplicaRef {
    std::shared_ptr<volume::Volume> volume;
    bool created = false;
  };
  // Finds or creates the replica `name` (server side) and marks it attached.
  Result<ReplicaRef> AttachReplica(const std::string& name, uint64_t size, const std::string& source,
                                   const std::string& source_volume);
  void DetachReplica(const std::string& name);
  void ReplicaResync(const std::string& name, bool begin, uint64_t first, uint64_t last_or_consistent);
  // The resync window of replica `name` as its source last announced it
  // (a server forwarding the replica passes it on); nullopt if not a replica
  // or busy (a rollback or restore holds it).
  struct ReplicaWindowInfo {
    bool active = false;
    uint64_t first = 0;
    uint64_t consistent_from = 0;
  };
  std::optional<ReplicaWindowInfo> ReplicaWindow(const std::string& name);
  nlohmann::json ListReplicas();
  void AddEvent(const std::string& volume, const std::string& kind, const std::string& message) {
    events_->Add(volume, kind, message);
  }
  const std::string& state_dir() const { return opts_.state_dir; }

  Result<nlohmann::json> CreateBitmap(const std::string& name, const std::string& base);
  Result<nlohmann::json> BitmapChanges(const std::string& name, const std::string& base);
  Status DeleteBitmap(const std::string& name, const std::string& base);

 private:
  struct Managed;
  struct View;
  explicit VolumeManager(ManagerOptions opts, EventLog* events)
      : opts_(std::move(opts)), events_(events) {}
  Status LoadAll();
  Status OpenVolume(Managed* m);
  Status SaveRecord(const Managed& m);
  Result<std::shared_ptr<Managed>> Find(const std::string& name);
  Result<std::shared_ptr<volume::Volume>> Healthy(Managed* m);
  Result<std::string> UpLocked(Managed* m);
  Status DownLocked(Managed* m);
  void CleanStaleLoops(const std::string& fuse_path);
  void SchedulerLoop();
  void RunDueSchedules();
  // Closes views whose owning process has ended (see OpenView).
  void CloseOrphanedViews();
  std::string VolumeDir(const std::string& name) const;
  Status CheckReplicaPoint(const Managed& m, const cdp::Point& p) const;
  Result<nlohmann::json> CreateInternal(const CreateVolumeRequest& req, bool allow_state_dir,
                                        const std::function<void(Managed*)>& init);

  ManagerOptions opts_;
  EventLog* events_;
  std::unique_ptr<capture::FuseExporter> fuse_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Managed>> volumes_;        // GUARDED_BY(mu_)
  std::map<std::string, std::unique_ptr<View>> views_;             // GUARDED_BY(mu_), by id
  std::map<std::string, std::unique_ptr<capture::NbdServer>> nbd_; // GUARDED_BY(mu_), by address
  uint64_t next_view_id_ = 1;                                      // GUARDED_BY(mu_)
  bool shutting_down_ = false;                                     // GUARDED_BY(mu_)
  std::thread scheduler_;
  std::mutex sched_mu_;
  std::condition_variable sched_cv_;
};

}  // namespace continuum::agent
