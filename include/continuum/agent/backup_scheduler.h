#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "continuum/agent/backup_schedule.h"
#include "continuum/agent/event_log.h"
#include "continuum/common/result.h"

namespace continuum::agent {

// `forget` after a successful backup: the options of `continuum forget`.
struct ForgetPolicy {
  uint32_t keep_last = 0, keep_daily = 0, keep_weekly = 0, keep_monthly = 0, keep_yearly = 0, keep_chains = 0;
  std::string keep_within;
  bool prune = false;
};

// One [[backup]] job of the agent's config (docs/user-guide/backup.md).
struct BackupJob {
  std::string name;
  std::string source;              // as written: "volume:db", "image:/x.img", "path:/etc" or "path:/a,/b"
  std::string source_type;         // "volume", "image" or "path"
  std::vector<std::string> paths;  // the volume name, the image, or the directories
  std::string repo;
  std::string password_file;
  std::string kind;  // empty: the CLI's default
  std::vector<std::string> tags;
  std::vector<std::string> excludes;  // path sources only
  BackupSchedule schedule;
  std::optional<ForgetPolicy> forget;
};

// The command line of the child that runs `job` (without argv[0]) and of its
// forget step; `control` is the agent's control socket (volume sources).
std::vector<std::string> BackupJobArgs(const BackupJob& job, const std::string& control);
std::vector<std::string> ForgetJobArgs(const BackupJob& job);

// Runs backup jobs on their schedules. Each run is a child process executing
// the agent's own binary (`continuum backup ... --json`, then `forget`), the
// same code as the standalone CLI, so a crashing job cannot take the agent
// down. At most one job runs per repository at a time; a job that is due
// while its repository is busy waits; a job still running when its next time
// comes skips that time (event backup_job_skipped). Each job's last run and
// result are kept in a state file, so a restart neither forgets them nor
// restarts an interval: a time missed while the agent was down runs once at
// start (event backup_job_catch_up).
//
// Thread-safety: every public method may be called from any thread. The
// scheduler thread and one runner thread per running job share state under
// mu_.
class BackupScheduler {
 public:
  struct Options {
    std::string exe = "/proc/self/exe";  // binary the jobs run
    std::string control;                 // agent's control socket, for volume sources
    // JSON state of the jobs (docs/format/state.md); empty: not kept.
    std::string state_file;
  };
  BackupScheduler(std::vector<BackupJob> jobs, Options opts, EventLog* events);
  ~BackupScheduler();
  BackupScheduler(const BackupScheduler&) = delete;
  BackupScheduler& operator=(const BackupScheduler&) = delete;

  // Starts the scheduler thread; logs a warning for `once` jobs in the past.
  void Start();
  // Stops scheduling, sends SIGTERM to running children and waits for them.
  void Stop();

  // GET /v1/backup-jobs: one object per job (docs/api.md).
  nlohmann::json List() const;
  // POST /v1/backup-jobs/{name}/run: marks the job due now.
  Result<nlohmann::json> RunNow(const std::string& name);

 private:
  struct JobState {
    BackupJob job;
    int64_t next_ns = -1;  // -1: never again
    bool due = false;      // waiting to start (its time came, or RunNow)
    bool running = false;
    pid_t child = 0;
    int64_t started_ns = 0;
    int64_t last_run_ns = 0;     // 0: never ran (as far as the state file knows)
    int64_t known_since_ns = 0;  // when an agent first had this job in its config
    nlohmann::json last_result;  // null until a run finished
    std::thread runner;
  };

  void Loop();
  bool RepoBusy(const std::string& repo) const;  // REQUIRES: mu_ held
  void RunJob(JobState* js);                     // on js->runner
  void LoadState();                              // before the thread starts
  void SaveState();                              // REQUIRES: mu_ held

  Options opts_;
  EventLog* events_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<JobState>> jobs_;  // GUARDED_BY(mu_) (the vector itself is fixed)
  bool stopping_ = false;                        // GUARDED_BY(mu_)
  std::thread thread_;
};

}  // namespace continuum::agent
