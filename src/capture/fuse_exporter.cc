#define FUSE_USE_VERSION 312

#include "continuum/capture/fuse_exporter.h"

#include <fuse_lowlevel.h>
#include <linux/magic.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "capture/fuse_file_table.h"
#include "capture/fuse_ops.h"
#include "capture/fuse_uring.h"
#include "continuum/common/log.h"
#include "continuum/io/file.h"
#include "continuum/io/mount_info.h"

namespace continuum::capture {
namespace {

constexpr int kMaxWorkerThreads = 32;
constexpr int kMaxStaleUnmounts = 8;
// How long RemoveFile waits for the kernel's asynchronous RELEASE.
constexpr auto kReleaseGrace = std::chrono::milliseconds(2000);
constexpr auto kLoopEndTimeout = std::chrono::milliseconds(5000);

void LogFromLibfuse(fuse_log_level level, const char* fmt, va_list ap) {
  char line[512];
  std::vsnprintf(line, sizeof line, fmt, ap);
  std::string msg(line);
  while (!msg.empty() && msg.back() == '\n') msg.pop_back();
  auto log = Logger("fuse");
  if (level <= FUSE_LOG_ERR) return log->error("libfuse: {}", msg);
  if (level <= FUSE_LOG_WARNING) return log->warn("libfuse: {}", msg);
  log->debug("libfuse: {}", msg);
}

bool IsDeadConnection(int err) { return err == ENOTCONN || err == ECONNABORTED; }

// Clears stale mounts of a crashed process, creates the directory, and refuses
// to stack on a live FUSE mount.
Status PrepareMountpoint(const std::string& mp) {
  auto log = Logger("fuse");
  struct stat st;
  struct statfs probe;
  // stat() of a dead FUSE root can be answered from cache; statfs() cannot.
  for (int i = 0; ::stat(mp.c_str(), &st) != 0 || ::statfs(mp.c_str(), &probe) != 0; ++i) {
    int err = errno;
    if (err == ENOENT) break;
    if (!IsDeadConnection(err) || i >= kMaxStaleUnmounts) return PosixError("stat " + mp, err);
    log->warn("{} holds a stale fuse mount; unmounting it lazily", mp);
    if (::umount2(mp.c_str(), MNT_DETACH) != 0) return PosixError("unmount stale fuse mount " + mp, errno);
  }
  CONTINUUM_RETURN_IF_ERROR(io::MakeDirs(mp));
  if (::stat(mp.c_str(), &st) != 0) return PosixError("stat " + mp, errno);
  if (!S_ISDIR(st.st_mode)) return InvalidArgument("mountpoint " + mp + " is not a directory");
  struct statfs fs;
  if (::statfs(mp.c_str(), &fs) != 0) return PosixError("statfs " + mp, errno);
  struct stat parent;
  std::string parent_path = std::filesystem::path(mp).lexically_normal().parent_path().string();
  if (fs.f_type == FUSE_SUPER_MAGIC && ::stat(parent_path.c_str(), &parent) == 0 &&
      parent.st_dev != st.st_dev) {
    return FailedPrecondition("mountpoint " + mp + " already has a live fuse mount");
  }
  return Status::Ok();
}

// The FUSE connection id of the topmost mount at `mp` (its device minor), read
// from mountinfo because a stat() would need the not yet running loop.
uint32_t ConnectionId(const std::string& mp) {
  uint32_t id = 0;
  for (const io::MountEntry& m : io::ReadMountInfo()) {
    if (m.mount_point == mp) id = minor(m.dev);  // the last one is on top
  }
  return id;
}

// Last resort when unmounting cannot end the connection (e.g. the mount was
// lazily detached from outside while a file was open).
Status AbortConnection(uint32_t id) {
  const std::string dir = "/sys/fs/fuse/connections";
  if (!io::PathExists(dir + "/" + std::to_string(id)) &&
      ::mount("fusectl", dir.c_str(), "fusectl", 0, nullptr) != 0 && errno != EBUSY) {
    return PosixError("mount fusectl at " + dir, errno);
  }
  std::ofstream abort_file(dir + "/" + std::to_string(id) + "/abort");
  abort_file << "1";
  abort_file.flush();
  if (!abort_file) return Status(StatusCode::kIoError, "abort fuse connection " + std::to_string(id));
  return Status::Ok();
}

}  // namespace

struct FuseExporter::Loop {
  std::mutex mu;
  std::condition_variable ended_cv;
  bool ended = false;  // guarded by mu
  int result = 0;      // guarded by mu
  std::thread thread;
};

FuseExporter::FuseExporter(std::string mountpoint, std::shared_ptr<FuseFileTable> files)
    : mountpoint_(std::move(mountpoint)), files_(std::move(files)) {}

Result<std::unique_ptr<FuseExporter>> FuseExporter::Start(const std::string& mountpoint,
                                                         const FuseExporterOptions& options) {
  static std::once_flag log_once;
  std::call_once(log_once, [] { fuse_set_log_func(LogFromLibfuse); });
  if (mountpoint.empty()) return InvalidArgument("fuse exporter: empty mountpoint");
  std::string mp = std::filesystem::absolute(mountpoint).lexically_normal().string();
  if (mp.size() > 1 && mp.back() == '/') mp.pop_back();
  auto exporter = std::unique_ptr<FuseExporter>(new FuseExporter(mp, std::make_shared<FuseFileTable>()));
  CONTINUUM_RETURN_IF_ERROR(exporter->Mount(options));
  // The loop shares what it touches (session, file table), so a loop that
  // refuses to end can be abandoned without touching freed memory.
  auto loop = std::make_shared<Loop>();
  loop->thread = std::thread(
      [loop, files = exporter->files_, se = exporter->session_, mp] { Serve(*loop, se, mp); });
  exporter->loop_ = std::move(loop);
  Logger("fuse")->info("fuse exporter mounted at {}", mp);
  return exporter;
}

void FuseExporter::AttachUring(const FuseExporterOptions& options) {
  auto log = Logger("fuse");
  if (options.transport == FuseTransport::kDevFuse) return;
  if (!FuseUring::KernelSupports()) {
    if (options.transport == FuseTransport::kIoUring) {
      log->warn("fuse transport io_uring requested, but this kernel has no FUSE over io_uring "
                "(CONFIG_FUSE_IO_URING, Linux 6.14+); serving {} through /dev/fuse", mountpoint_);
    }
    return;
  }
  if (!FuseUring::KernelEnabled()) {
    Status st = FuseUring::EnableInKernel();
    if (!st.ok()) {
      log->warn("{}; serving {} through /dev/fuse", st.ToString(), mountpoint_);
      return;
    }
    log->info("switched on FUSE over io_uring in the kernel (/sys/module/fuse/parameters/enable_uring)");
  }
  auto uring = FuseUring::Attach(session_, {.threads_per_queue = options.ring_threads_per_queue});
  if (!uring.ok()) {
    log->warn("{}; serving {} through /dev/fuse", uring.status().ToString(), mountpoint_);
    return;
  }
  uring_ = std::move(uring).value();
}

FuseTransportInfo FuseExporter::TransportInfo() const {
  FuseTransportInfo info{"/dev/fuse", 0, 0};
  if (!uring_) return info;
  FuseUring::Stats s = uring_->GetStats();
  if (s.negotiated) info.transport = "io_uring";
  info.rings = s.threads;
  info.ring_requests = s.requests;
  return info;
}

Result<FuseTransport> ParseFuseTransport(const std::string& text) {
  if (text == "auto") return FuseTransport::kAuto;
  if (text == "io_uring") return FuseTransport::kIoUring;
  if (text == "dev_fuse") return FuseTransport::kDevFuse;
  return InvalidArgument("fuse transport '" + text + "': expected auto, io_uring or dev_fuse");
}

FuseExporterOptions FuseExporterOptions::FromEnvironment() {
  FuseExporterOptions options;
  if (const char* env = std::getenv("CONTINUUM_FUSE_TRANSPORT"); env != nullptr && *env != '\0') {
    auto t = ParseFuseTransport(env);
    if (t.ok()) {
      options.transport = *t;
    } else {
      Logger("fuse")->warn("CONTINUUM_FUSE_TRANSPORT: {}; using auto", t.status().message());
    }
  }
  return options;
}

Status FuseExporter::Mount(const FuseExporterOptions& options) {
  CONTINUUM_RETURN_IF_ERROR(PrepareMountpoint(mountpoint_));
  // default_permissions: the kernel checks modes, so we need no access op.
  const char* argv[] = {"continuum", "-o", "default_permissions,fsname=continuum,subtype=continuum"};
  fuse_args args = FUSE_ARGS_INIT(3, const_cast<char**>(argv));
  session_ = fuse_session_new(&args, &FuseLowLevelOps(), sizeof(fuse_lowlevel_ops), files_.get());
  fuse_opt_free_args(&args);
  if (session_ == nullptr) return Internal("create fuse session for " + mountpoint_);
  if (fuse_session_mount(session_, mountpoint_.c_str()) != 0) {
    fuse_session_destroy(session_);
    session_ = nullptr;
    return Status(StatusCode::kIoError, "mount fuse at " + mountpoint_ + " failed (see libfuse log)");
  }
  connection_id_ = ConnectionId(mountpoint_);
  AttachUring(options);
  return Status::Ok();
}

void FuseExporter::Serve(Loop& loop, fuse_session* se, const std::string& mp) {
  // Signals belong to the daemon's main thread; libfuse's workers, created
  // from this thread, inherit the mask.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  // Serving writes must not wait on writeback of the devices we serve; the
  // flag is inherited by the worker threads.
  if (::prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) != 0) {
    Logger("fuse")->warn("PR_SET_IO_FLUSHER for {}: {} (may deadlock under memory pressure)", mp,
                         std::strerror(errno));
  }
  fuse_loop_config* config = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(config, kMaxWorkerThreads);
  int result = fuse_session_loop_mt(se, config);
  fuse_loop_cfg_destroy(config);
  {
    std::lock_guard lock(loop.mu);
    loop.ended = true;
    loop.result = result;
  }
  loop.ended_cv.notify_all();
}

bool FuseExporter::WaitLoop(std::chrono::milliseconds timeout) {
  std::unique_lock lock(loop_->mu);
  return loop_->ended_cv.wait_for(lock, timeout, [&] { return loop_->ended; });
}

FuseExporter::~FuseExporter() {
  Status st = Stop();
  if (!st.ok()) Logger("fuse")->error("stop fuse exporter at {}: {}", mountpoint_, st.ToString());
}

Status FuseExporter::AddFile(const std::string& name, std::shared_ptr<io::BlockTarget> target) {
  CONTINUUM_RETURN_IF_ERROR(files_->Add(name, std::move(target)));
  Logger("fuse")->info("exported {}", PathOf(name));
  return Status::Ok();
}

Status FuseExporter::RemoveFile(const std::string& name) {
  Status st = files_->Remove(name, kReleaseGrace);
  if (!st.ok()) return st.WithContext("remove " + PathOf(name));
  Logger("fuse")->info("unexported {}", PathOf(name));
  return Status::Ok();
}

std::string FuseExporter::PathOf(const std::string& name) const { return mountpoint_ + "/" + name; }

Status FuseExporter::Stop() {
  std::lock_guard lock(stop_mu_);
  if (session_ == nullptr) return Status::Ok();
  auto log = Logger("fuse");
  // Unmounting kills the superblock, which aborts the connection: the workers'
  // reads of /dev/fuse return ENODEV and the loop ends. (fuse_session_unmount
  // alone would detach lazily and leave the loop running while files are open.)
  Status result = Status::Ok();
  if (::umount2(mountpoint_.c_str(), 0) != 0) {
    int err = errno;
    if (err == EBUSY) {
      log->warn("fuse mount {} still in use ({} open handles); aborting its connection", mountpoint_,
                files_->OpenHandles());
      // MNT_FORCE aborts a FUSE connection even when the unmount fails busy.
      if (::umount2(mountpoint_.c_str(), MNT_FORCE) != 0 && errno != EBUSY) {
        log->warn("force unmount {}: {}", mountpoint_, std::strerror(errno));
      }
      if (::umount2(mountpoint_.c_str(), MNT_DETACH) != 0) {
        result = PosixError("lazy unmount " + mountpoint_, errno);
      }
    } else if (err != EINVAL) {  // EINVAL: already unmounted from outside
      result = PosixError("unmount " + mountpoint_, err);
    }
  }
  if (!result.ok()) log->warn("{}", result.ToString());
  fuse_session_exit(session_);
  if (!WaitLoop(kLoopEndTimeout)) {
    log->warn("fuse loop at {} still running after unmount; aborting connection {}", mountpoint_,
              connection_id_);
    Status st = connection_id_ ? AbortConnection(connection_id_) : Internal("connection id unknown");
    if (!st.ok() || !WaitLoop(kLoopEndTimeout)) {
      // Abandon the loop (and leak its session) rather than hang shutdown.
      loop_->thread.detach();
      session_ = nullptr;
      return Internal("fuse loop at " + mountpoint_ + " does not end: " + st.ToString());
    }
  }
  loop_->thread.join();
  if (uring_) uring_->Stop();
  if (loop_->result != 0 && loop_->result != -ENODEV) {
    log->warn("fuse loop at {} ended with {}", mountpoint_, std::strerror(-loop_->result));
  }
  fuse_session_unmount(session_);  // already unmounted: only closes /dev/fuse
  fuse_session_destroy(session_);
  session_ = nullptr;
  log->info("fuse exporter at {} stopped", mountpoint_);
  return Status::Ok();
}

}  // namespace continuum::capture
