#include "continuum/agent/agent.h"

#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <toml++/toml.h>

#include <algorithm>
#include <cstdio>

#include "agent/backup_job_config.h"
#include "agent/backup_job_routes.h"
#include "agent/routes.h"
#include "agent/volume_manager_internal.h"
#include "continuum/agent/backup_scheduler.h"
#include "continuum/agent/event_log.h"
#include "continuum/agent/replication_manager.h"
#include "continuum/net/listener.h"
#include "continuum/replication/receiver.h"
#include "continuum/agent/volume_manager.h"
#include "continuum/api/control_server.h"
#include "continuum/common/log.h"
#include "continuum/common/units.h"
#include "continuum/io/file.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

namespace continuum::agent {
namespace {

Status LoadConfig(const std::string& path, AgentOptions* opts, ManagerOptions* mopts, bool state_dir_set,
                  bool control_set, std::vector<BackupJob>* backup_jobs) {
  toml::table tbl;
  try {
    tbl = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return InvalidArgument("config " + path + ": " + std::string(e.description()) + " at line " +
                           std::to_string(e.source().begin.line));
  }
  // Every key is checked: a misspelt key or a value of the wrong type is an
  // error at startup, not a setting silently left at its default.
  auto bad = [&](const std::string& key, const std::string& msg) {
    return InvalidArgument("config " + path + ": " + key + ": " + msg);
  };
  auto known = [&](const toml::table& t, const std::string& where, std::initializer_list<std::string_view> keys) {
    for (const auto& [k, v] : t) {
      if (std::find(keys.begin(), keys.end(), k.str()) == keys.end()) {
        std::string list;
        for (auto key : keys) list += (list.empty() ? "" : ", ") + std::string(key);
        return bad(where + std::string(k.str()), "unknown key (known here: " + list + ")");
      }
    }
    return Status::Ok();
  };
  CONTINUUM_RETURN_IF_ERROR(
      known(tbl, "", {"state_dir", "control", "control_group", "log_level", "defaults", "capture", "hooks", "backup"}));
  // A string setting: absent leaves *out as it is.
  auto str = [&](const toml::node_view<toml::node>& n, const std::string& key, std::string* out) {
    if (!n) return Status::Ok();
    if (!n.is_string()) return bad(key, "must be a string (in double quotes)");
    *out = *n.value<std::string>();
    return Status::Ok();
  };
  std::string state_dir = opts->state_dir, control = opts->control;
  CONTINUUM_RETURN_IF_ERROR(str(tbl["state_dir"], "state_dir", &state_dir));
  CONTINUUM_RETURN_IF_ERROR(str(tbl["control"], "control", &control));
  if (!state_dir_set) opts->state_dir = state_dir;
  if (!control_set) opts->control = control;
  CONTINUUM_RETURN_IF_ERROR(str(tbl["control_group"], "control_group", &opts->control_group));
  CONTINUUM_RETURN_IF_ERROR(str(tbl["log_level"], "log_level", &opts->log_level));
  if (tbl.contains("defaults") && !tbl["defaults"].is_table()) return bad("defaults", "must be a table ([defaults])");
  if (auto d = tbl["defaults"].as_table()) {
    CONTINUUM_RETURN_IF_ERROR(known(*d, "defaults.", {"journal_size", "retention", "cache_size", "file_cache_size"}));
    std::string v;
    for (auto [key, size_out] : {std::pair{"journal_size", &mopts->default_journal_bytes},
                                 std::pair{"cache_size", &mopts->default_cache_bytes},
                                 std::pair{"file_cache_size", &mopts->default_spill_bytes}}) {
      v.clear();
      CONTINUUM_RETURN_IF_ERROR(str((*d)[key], std::string("defaults.") + key, &v));
      if (v.empty()) continue;
      auto n = ParseSize(v);
      if (!n.ok()) return bad(std::string("defaults.") + key, n.status().message());
      *size_out = *n;
    }
    v.clear();
    CONTINUUM_RETURN_IF_ERROR(str((*d)["retention"], "defaults.retention", &v));
    if (!v.empty()) {
      auto ns = ParseDuration(v);
      if (!ns.ok()) return bad("defaults.retention", ns.status().message());
      mopts->default_retention_ns = *ns;
    }
  }
  if (tbl.contains("capture") && !tbl["capture"].is_table()) return bad("capture", "must be a table ([capture])");
  if (auto c = tbl["capture"].as_table()) {
    CONTINUUM_RETURN_IF_ERROR(known(*c, "capture.", {"fuse_transport", "ring_threads"}));
    std::string transport;
    CONTINUUM_RETURN_IF_ERROR(str((*c)["fuse_transport"], "capture.fuse_transport", &transport));
    if (!transport.empty()) {
      auto t = capture::ParseFuseTransport(transport);
      if (!t.ok()) return InvalidArgument("config " + path + ": [capture] " + t.status().message());
      mopts->fuse.transport = *t;
    }
    if (auto n = (*c)["ring_threads"]) {
      if (!n.is_integer()) return bad("capture.ring_threads", "must be a whole number");
      auto v = n.value<int64_t>();
      if (*v < 1 || *v > 64) {
        return InvalidArgument("config " + path + ": [capture] ring_threads must be 1..64, got " + std::to_string(*v));
      }
      mopts->fuse.ring_threads_per_queue = static_cast<int>(*v);
    }
  }
  if (tbl.contains("hooks") && !tbl["hooks"].is_table()) return bad("hooks", "must be a table ([hooks.VOLUME])");
  if (auto h = tbl["hooks"].as_table()) {
    for (auto& [vol, val] : *h) {
      std::string where = "hooks." + std::string(vol.str());
      auto t = val.as_table();
      if (!t) return bad(where, "must be a table with pre and post commands ([" + where + "])");
      CONTINUUM_RETURN_IF_ERROR(known(*t, where + ".", {"pre", "post"}));
      Hooks hooks;
      CONTINUUM_RETURN_IF_ERROR(str((*t)["pre"], where + ".pre", &hooks.pre));
      CONTINUUM_RETURN_IF_ERROR(str((*t)["post"], where + ".post", &hooks.post));
      mopts->hooks[std::string(vol.str())] = hooks;
    }
  }
  auto jobs = ParseBackupJobs(tbl);
  if (!jobs.ok()) return InvalidArgument("config " + path + ": " + jobs.status().message());
  *backup_jobs = std::move(jobs).value();
  return Status::Ok();
}

}  // namespace

int RunAgent(AgentOptions opts, bool state_dir_set, bool control_set) {
  auto log = Logger("agent");
  ManagerOptions mopts;
  std::vector<BackupJob> backup_jobs;
  if (!opts.config_path.empty()) {
    Status st = LoadConfig(opts.config_path, &opts, &mopts, state_dir_set, control_set, &backup_jobs);
    if (!st.ok()) {
      std::fprintf(stderr, "error: %s\n", st.message().c_str());
      return 2;
    }
  }
  SetLogLevel(opts.log_level);
  mopts.state_dir = opts.state_dir;

  // Every thread inherits this mask; the main thread takes the signals with sigwait.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // A daemon that serves block devices must not wait on its own devices for
  // memory reclaim: mark it an I/O flusher and keep its pages resident.
  if (prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) != 0) {
    log->warn("PR_SET_IO_FLUSHER refused ({}): the agent lacks CAP_SYS_RESOURCE, so under heavy memory "
              "pressure its own devices could stall reclaim", strerror(errno));
  }
  // Few malloc arenas: freed record buffers are reused instead of piling up
  // per thread (they are locked in memory below).
  mallopt(M_ARENA_MAX, 2);
  if (mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0) log->warn("mlockall failed: {}", strerror(errno));

  Status st = io::MakeDirs(opts.state_dir, 0700);
  if (!st.ok()) {
    std::fprintf(stderr, "error: %s\n", st.message().c_str());
    return 1;
  }
  std::string lock_path = opts.state_dir + "/agent.lock";
  int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0 || ::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    std::fprintf(stderr, "error: another continuum agent is using state directory %s\n", opts.state_dir.c_str());
    return 1;
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(lock_fd, 0) == 0) (void)!::pwrite(lock_fd, pid.data(), pid.size(), 0);

  EventLog events(opts.state_dir + "/events.jsonl");
  auto manager = VolumeManager::Start(mopts, &events);
  if (!manager.ok()) {
    std::fprintf(stderr, "error: %s\n", manager.status().message().c_str());
    return 1;
  }
  net::TlsOptions tls{.pki_dir = opts.pki_dir, .name = opts.name, .insecure = opts.insecure};
  bool listens = !opts.listen.empty();  // a server, or a standby agent that is a replication target
  if (!opts.insecure && (opts.pki_dir.empty() || opts.name.empty()) && (listens || !opts.pki_dir.empty())) {
    std::fprintf(stderr, "error: replication needs --pki DIR and --name NAME (or --insecure for plaintext)\n");
    (*manager)->Shutdown();
    return 2;
  }
  std::string name = opts.name.empty() ? "agent" : opts.name;
  ReplicationManager replication(manager->get(), tls, name);
  ServerReplicaProvider provider(manager->get());
  std::unique_ptr<replication::Receiver> receiver;
  if (listens) {
    auto listener = net::Listener::Listen(opts.listen, tls);
    if (!listener.ok()) {
      std::fprintf(stderr, "error: %s\n", listener.status().message().c_str());
      (*manager)->Shutdown();
      return 1;
    }
    auto r = replication::Receiver::Start(std::move(listener).value(), &provider);
    if (!r.ok()) {
      std::fprintf(stderr, "error: %s\n", r.status().message().c_str());
      (*manager)->Shutdown();
      return 1;
    }
    receiver = std::move(r).value();
    log->info("receiving replication on {}", receiver->Address());
  }
  replication.ResumeAll();
  api::Router router;
  RegisterRoutes(&router, manager->get(), &events, &replication, opts.server ? "server" : "agent");
  // Backup jobs run as children of this binary (the standalone CLI's code).
  BackupScheduler backups(std::move(backup_jobs),
                          {.control = opts.control, .state_file = opts.state_dir + "/backup-jobs.json"}, &events);
  RegisterBackupJobRoutes(&router, &backups);
  auto server = api::ControlServer::Start(
      {.socket_path = opts.control, .group = opts.control_group, .threads = 8}, std::move(router));
  if (!server.ok()) {
    std::fprintf(stderr, "error: %s\n", server.status().message().c_str());
    if (receiver) receiver->Stop();
    replication.StopAll();
    (*manager)->Shutdown();
    return 1;
  }
  events.Add("", "agent_started", "state " + opts.state_dir + ", control " + opts.control);
  log->info("continuum agent ready: state {} control {}", opts.state_dir, opts.control);
  backups.Start();

  int sig = 0;
  for (;;) {
    sigwait(&set, &sig);
    if (sig == SIGHUP) continue;
    break;
  }
  log->info("signal {}: shutting down", sig);
  backups.Stop();  // before the server: a volume job's child still talks to the agent
  (*server)->Stop();
  if (receiver) receiver->Stop();
  replication.StopAll();
  (*manager)->Shutdown();
  events.Add("", "agent_stopped", "clean shutdown");
  ::close(lock_fd);
  return 0;
}

}  // namespace continuum::agent
