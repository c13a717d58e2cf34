#include "continuum/agent/backup_scheduler.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "continuum/common/json_field.h"
#include "continuum/common/log.h"
#include "continuum/common/time_util.h"
#include "continuum/common/units.h"
#include "continuum/io/file.h"

extern char** environ;

namespace continuum::agent {
namespace {

constexpr size_t kMaxOutput = 1 << 20;  // of each stream of a child; the rest is dropped

struct ChildResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  std::string out, err;
  std::string spawn_error;
};

// The message of a failed child: its --json error, else its last stderr line.
std::string FailureMessage(const ChildResult& r) {
  if (!r.spawn_error.empty()) return r.spawn_error;
  auto j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("error") && j["error"].is_object() && j["error"].contains("message") &&
      j["error"]["message"].is_string()) {
    return j["error"]["message"].get<std::string>();
  }
  std::string err = r.err;
  while (!err.empty() && (err.back() == '\n' || err.back() == '\r')) err.pop_back();
  if (auto nl = err.rfind('\n'); nl != std::string::npos) err = err.substr(nl + 1);
  if (!err.empty()) return err;
  if (r.signal) return "killed by signal " + std::to_string(r.signal);
  return "exited with code " + std::to_string(r.exit_code);
}

}  // namespace

std::vector<std::string> BackupJobArgs(const BackupJob& job, const std::string& control) {
  std::vector<std::string> a;
  if (job.source_type == "volume") a = {"--control", control};
  a.insert(a.end(), {"--json", "backup", job.source_type});
  a.insert(a.end(), job.paths.begin(), job.paths.end());
  a.insert(a.end(), {"--repo", job.repo, "--password-file", job.password_file});
  if (!job.kind.empty()) a.insert(a.end(), {"--kind", job.kind});
  for (const auto& t : job.tags) a.insert(a.end(), {"--tag", t});
  for (const auto& e : job.excludes) a.insert(a.end(), {"--exclude", e});
  return a;
}

std::vector<std::string> ForgetJobArgs(const BackupJob& job) {
  std::vector<std::string> a = {"--json", "forget", "--repo", job.repo, "--password-file", job.password_file};
  if (!job.forget) return a;
  const ForgetPolicy& f = *job.forget;
  auto add = [&](const char* opt, uint32_t v) {
    if (v) a.insert(a.end(), {opt, std::to_string(v)});
  };
  add("--keep-last", f.keep_last);
  add("--keep-daily", f.keep_daily);
  add("--keep-weekly", f.keep_weekly);
  add("--keep-monthly", f.keep_monthly);
  add("--keep-yearly", f.keep_yearly);
  add("--keep-chains", f.keep_chains);
  if (!f.keep_within.empty()) a.insert(a.end(), {"--keep-within", f.keep_within});
  if (f.prune) a.push_back("--prune");
  return a;
}

BackupScheduler::BackupScheduler(std::vector<BackupJob> jobs, Options opts, EventLog* events)
    : opts_(std::move(opts)), events_(events) {
  for (auto& j : jobs) {
    auto js = std::make_unique<JobState>();
    js->job = std::move(j);
    jobs_.push_back(std::move(js));
  }
}

BackupScheduler::~BackupScheduler() { Stop(); }

void BackupScheduler::LoadState() {
  if (opts_.state_file.empty()) return;
  auto text = io::ReadFileToString(opts_.state_file);
  if (!text.ok()) {
    if (text.status().code() != StatusCode::kNotFound) {
      Logger("backup-jobs")->warn("backup job state {}: {}; starting without it", opts_.state_file,
                                  text.status().message());
    }
    return;
  }
  auto j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  auto version = JsonField<int>(j, "version", 0);
  if (!version.ok() || *version != 1 || !j.contains("jobs") || !j["jobs"].is_object()) {
    Logger("backup-jobs")->warn("backup job state {} is not readable; starting without it", opts_.state_file);
    return;
  }
  for (auto& js : jobs_) {
    auto it = j["jobs"].find(js->job.name);
    if (it == j["jobs"].end() || !it->is_object()) continue;
    const auto& o = *it;
    auto num = [&](const char* k) {
      return o.contains(k) && o[k].is_number_integer() ? o[k].template get<int64_t>() : int64_t{0};
    };
    js->last_run_ns = num("last_run_ns");
    js->known_since_ns = num("known_since_ns");
    if (o.contains("last_result") && o["last_result"].is_object()) js->last_result = o["last_result"];
  }
}

void BackupScheduler::SaveState() {
  // An agent without jobs writes nothing (a file left by earlier jobs stays).
  if (opts_.state_file.empty() || jobs_.empty()) return;
  nlohmann::json jobs = nlohmann::json::object();
  for (const auto& js : jobs_) {
    jobs[js->job.name] = {{"schedule", js->job.schedule.text},
                          {"known_since_ns", js->known_since_ns},
                          {"last_run_ns", js->last_run_ns},
                          {"last_result", js->last_result}};
  }
  nlohmann::json doc{{"version", 1}, {"jobs", std::move(jobs)}};
  Status st = io::WriteFileAtomic(opts_.state_file, doc.dump(2) + "\n");
  if (!st.ok()) Logger("backup-jobs")->warn("cannot save backup job state: {}", st.message());
}

void BackupScheduler::Start() {
  int64_t now = WallNowNs();
  LoadState();
  {
    std::lock_guard lock(mu_);
    for (auto& js : jobs_) {
      if (js->known_since_ns == 0) js->known_since_ns = now;
      const int64_t since = std::max(js->last_run_ns, js->known_since_ns);
      const int64_t missed = MissedRunNs(js->job.schedule, since, now);
      if (missed >= 0) {
        js->due = true;
        events_->Add("", "backup_job_catch_up",
                     js->job.name + ": its run of " + FormatRfc3339(missed) +
                         " was missed while the agent was down; running it now");
      }
      // An interval counts from the last run, not from this start.
      js->next_ns = NextRunNs(js->job.schedule, now, js->last_run_ns > 0 && !js->due ? js->last_run_ns : now);
      if (js->next_ns < 0 && !js->due) {
        Logger("backup-jobs")
            ->warn("backup job {}: schedule '{}' is in the past; the job will not run", js->job.name,
                   js->job.schedule.text);
      }
    }
    SaveState();
  }
  if (!jobs_.empty()) Logger("backup-jobs")->info("{} scheduled backup job(s)", jobs_.size());
  thread_ = std::thread([this] { Loop(); });
}

void BackupScheduler::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    // A backup killed midway leaves no point behind; the repository stays usable.
    for (auto& js : jobs_) {
      if (js->child > 0) ::kill(js->child, SIGTERM);
    }
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (auto& js : jobs_) {
    if (js->runner.joinable()) js->runner.join();
  }
}

bool BackupScheduler::RepoBusy(const std::string& repo) const {
  return std::any_of(jobs_.begin(), jobs_.end(), [&](const auto& js) { return js->running && js->job.repo == repo; });
}

void BackupScheduler::Loop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    int64_t now = WallNowNs();
    int64_t wake = now + 60'000'000'000LL;
    for (auto& js : jobs_) {
      if (!js->running && js->runner.joinable()) js->runner.join();  // finished: only returning
      if (js->next_ns >= 0 && js->next_ns <= now) {
        if (js->running) {
          events_->Add(
              "", "backup_job_skipped",
              js->job.name + ": still running since " + FormatRfc3339(js->started_ns) + " when its next time came");
        } else {
          js->due = true;
        }
        js->next_ns = NextRunNs(js->job.schedule, now, now);
      }
      if (js->due && !js->running && !RepoBusy(js->job.repo)) {
        js->due = false;
        js->running = true;
        js->started_ns = now;
        js->last_run_ns = now;
        SaveState();
        JobState* p = js.get();
        js->runner = std::thread([this, p] { RunJob(p); });
      }
      if (js->next_ns >= 0) wake = std::min(wake, js->next_ns);
    }
    auto until = std::chrono::system_clock::time_point(std::chrono::nanoseconds(wake));
    cv_.wait_until(lock, until);
  }
}

namespace {

// Runs `args` as a child of `exe` and collects its output. The agent blocks
// SIGTERM/SIGINT/SIGHUP (sigwait) and ignores SIGPIPE; the child gets default
// signals back. Its pid is in *pid_slot (under *mu) while it runs so Stop can
// end it; nothing is spawned once *stopping is set.
ChildResult Spawn(const std::string& exe, const std::vector<std::string>& args, pid_t* pid_slot, std::mutex* mu,
                  const bool* stopping) {
  ChildResult r;
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0) {
    r.spawn_error = std::string("pipe: ") + strerror(errno);
    return r;
  }
  if (::pipe2(err, O_CLOEXEC) != 0) {
    r.spawn_error = std::string("pipe: ") + strerror(errno);
    ::close(out[0]);
    ::close(out[1]);
    return r;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int s : {SIGPIPE, SIGTERM, SIGINT, SIGHUP}) sigaddset(&defaults, s);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);  // a Ctrl-C at the agent's terminal is the agent's business
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  std::vector<std::string> argv_s = {"continuum"};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  int rc;
  {
    std::lock_guard lock(*mu);
    rc = *stopping ? ECANCELED : posix_spawn(&pid, exe.c_str(), &fa, &attr, argv.data(), environ);
    if (rc == 0) *pid_slot = pid;
  }
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(out[1]);
  ::close(err[1]);
  if (rc != 0) {
    r.spawn_error = rc == ECANCELED ? "the agent is stopping" : "cannot start " + exe + ": " + strerror(rc);
    ::close(out[0]);
    ::close(err[0]);
    return r;
  }
  struct pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string* bufs[2] = {&r.out, &r.err};
  int open_fds = 2;
  char buf[65536];
  while (open_fds > 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
        continue;
      }
      if (bufs[i]->size() < kMaxOutput) bufs[i]->append(buf, std::min<size_t>(n, kMaxOutput - bufs[i]->size()));
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) ::close(f.fd);
  }
  // Wait without reaping first, so Stop never signals a reused pid.
  siginfo_t info{};
  while (::waitid(P_PID, pid, &info, WEXITED | WNOWAIT) != 0 && errno == EINTR) {
  }
  {
    std::lock_guard lock(*mu);
    *pid_slot = 0;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  return r;
}

}  // namespace

void BackupScheduler::RunJob(JobState* js) {
  const BackupJob& job = js->job;  // immutable after construction
  auto log = Logger("backup-jobs");
  events_->Add("", "backup_job_started", job.name + ": backup of " + job.source + " to " + job.repo);
  int64_t t0 = MonoNowNs();
  ChildResult r = Spawn(opts_.exe, BackupJobArgs(job, opts_.control), &js->child, &mu_, &stopping_);
  double secs = (MonoNowNs() - t0) / 1e9;
  nlohmann::json result;
  if (r.exit_code == 0) {
    auto p = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
    std::string id = p.is_object() ? p.value("id", "") : "";
    uint64_t bytes_read = p.is_object() ? p.value("bytes_read", uint64_t{0}) : 0;
    uint64_t new_bytes = p.is_object() ? p.value("new_stored_bytes", uint64_t{0}) : 0;
    std::string kind = p.is_object() ? p.value("kind", "") : "";
    result = {
        {"status", "ok"}, {"point", id}, {"kind", kind}, {"bytes_read", bytes_read}, {"new_stored_bytes", new_bytes},
        {"seconds", secs}};
    char secs_s[32];
    std::snprintf(secs_s, sizeof(secs_s), "%.1fs", secs);
    events_->Add("", "backup_job_done",
                 job.name + ": point " + id + " (" + kind + "), read " + FormatSize(bytes_read) + ", new " +
                     FormatSize(new_bytes) + " in " + secs_s);
    if (job.forget) {
      ChildResult f = Spawn(opts_.exe, ForgetJobArgs(job), &js->child, &mu_, &stopping_);
      if (f.exit_code == 0) {
        auto fj = nlohmann::json::parse(f.out, nullptr, /*allow_exceptions=*/false);
        result["forget"] = fj.is_discarded() ? nlohmann::json("ok") : fj;
      } else {
        std::string msg = FailureMessage(f);
        result["forget_error"] = msg;
        events_->Add(
            "", "backup_job_failed",
            job.name + ": forget after point " + id + " failed (exit " + std::to_string(f.exit_code) + "): " + msg);
      }
    }
  } else {
    std::string msg = FailureMessage(r);
    {
      std::lock_guard lock(mu_);
      if (stopping_ && r.signal == SIGTERM) msg = "stopped because the agent is shutting down";
    }
    result = {{"status", "failed"}, {"message", msg}, {"exit_code", r.exit_code}, {"seconds", secs}};
    if (r.signal) result["signal"] = r.signal;
    std::string how = r.signal ? "signal " + std::to_string(r.signal) : "exit " + std::to_string(r.exit_code);
    events_->Add("", "backup_job_failed", job.name + ": backup of " + job.source + " failed (" + how + "): " + msg);
  }
  {
    std::lock_guard lock(mu_);
    js->last_result = std::move(result);
    js->running = false;
    SaveState();
  }
  cv_.notify_all();  // a job waiting for this repository may start
}

nlohmann::json BackupScheduler::List() const {
  std::lock_guard lock(mu_);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& js : jobs_) {
    const BackupJob& j = js->job;
    nlohmann::json o{{"name", j.name},         {"source", j.source},
                     {"repo", j.repo},         {"kind", j.kind.empty() ? "incremental" : j.kind},
                     {"tags", j.tags},         {"schedule", j.schedule.text},
                     {"running", js->running}, {"due", js->due}};
    o["next_run"] = js->next_ns >= 0 ? nlohmann::json(FormatRfc3339(js->next_ns)) : nlohmann::json(nullptr);
    o["last_run"] = js->last_run_ns > 0 ? nlohmann::json(FormatRfc3339(js->last_run_ns)) : nlohmann::json(nullptr);
    o["last_result"] = js->last_result;
    if (j.forget) {
      const ForgetPolicy& f = *j.forget;
      o["forget"] = {{"keep_last", f.keep_last},     {"keep_daily", f.keep_daily},
                     {"keep_weekly", f.keep_weekly}, {"keep_monthly", f.keep_monthly},
                     {"keep_yearly", f.keep_yearly}, {"keep_chains", f.keep_chains},
                     {"keep_within", f.keep_within}, {"prune", f.prune}};
    }
    out.push_back(std::move(o));
  }
  return out;
}

Result<nlohmann::json> BackupScheduler::RunNow(const std::string& name) {
  std::lock_guard lock(mu_);
  for (auto& js : jobs_) {
    if (js->job.name != name) continue;
    if (js->running) return FailedPrecondition("backup job " + name + " is already running");
    js->due = true;
    cv_.notify_all();
    return nlohmann::json{{"job", name}, {"queued", true}};
  }
  return NotFound("no backup job named " + name);
}

}  // namespace continuum::agent
