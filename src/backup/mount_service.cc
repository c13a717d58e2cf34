// StartMount / CloseMount: the life of a standalone repo mount.
//
// The foreground command forks first (before any thread exists); the child
// opens the repository, sets the mount up and writes one line to a pipe:
// "ok <record json>" or "error <code> <message>". The parent prints what it
// got and exits, so errors carry the child's message and exit code while a
// working mount keeps being served by the child. The child holds a shared
// repository lock for its whole life and ends on SIGTERM/SIGINT/SIGHUP
// (detach the loop device, unmount, remove the registry entry).

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "backup/mount_blob_cache.h"
#include "backup/mount_image_target.h"
#include "backup/mount_path_fuse.h"
#include "backup/mount_path_tree.h"
#include "backup/mount_registry.h"
#include "continuum/backup/mount.h"
#include "continuum/backup/point_catalog.h"
#include "continuum/capture/fuse_exporter.h"
#include "continuum/common/log.h"
#include "continuum/common/time_util.h"
#include "continuum/io/file.h"
#include "continuum/io/loop_device.h"
#include "continuum/io/mount_info.h"

namespace continuum::backup {
namespace {

constexpr const char* kImageFile = "image";
constexpr auto kChildReportTimeout = std::chrono::seconds(120);
constexpr auto kServerExitTimeout = std::chrono::seconds(15);
constexpr int kLockKeepaliveSeconds = 60;

std::string RandomSuffix() {
  std::random_device rd;
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", static_cast<unsigned>(rd()));
  return buf;
}

Status WriteAll(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return PosixError("write mount report", errno);
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

// Whether a filesystem in this mount namespace sits on block device `dev`.
bool DeviceIsMounted(const std::string& dev) {
  struct stat st;
  if (::stat(dev.c_str(), &st) != 0 || !S_ISBLK(st.st_mode)) return false;
  for (const io::MountEntry& m : io::ReadMountInfo()) {
    if (m.dev == st.st_rdev) return true;
  }
  return false;
}

bool IsMountpoint(const std::string& dir) {
  struct stat st, parent;
  std::string up = dir + "/..";
  if (::stat(dir.c_str(), &st) != 0 || ::stat(up.c_str(), &parent) != 0) return false;
  return st.st_dev != parent.st_dev || st.st_ino == parent.st_ino;
}

// A path mount's directory: exists, is a directory, is empty, is not mounted on.
Status CheckMountDir(const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return NotFound("directory " + dir + " does not exist");
    return PosixError("stat " + dir, errno);
  }
  if (!S_ISDIR(st.st_mode)) return InvalidArgument(dir + " is not a directory");
  if (IsMountpoint(dir)) return AlreadyExists(dir + " is already mounted");
  std::error_code ec;
  if (!std::filesystem::is_empty(dir, ec)) {
    if (ec) return PosixError("list " + dir, ec.value());
    return FailedPrecondition("directory " + dir + " is not empty");
  }
  return Status::Ok();
}

Status CheckFuse() {
  if (::access("/dev/fuse", R_OK | W_OK) != 0) {
    return FailedPrecondition("FUSE is not available: /dev/fuse: " + std::string(std::strerror(errno)) +
                              " (load the fuse module, or give the container /dev/fuse)");
  }
  return Status::Ok();
}

// A device still mounted when the server must stop: let the kernel detach
// it on its last close, so it does not outlive its user (it reads EIO
// meanwhile, since nothing serves it any more).
void MarkAutoclear(const std::string& dev) {
  int fd = ::open(dev.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  loop_info64 info{};
  if (::ioctl(fd, LOOP_GET_STATUS64, &info) == 0) {
    info.lo_flags |= LO_FLAGS_AUTOCLEAR;
    if (::ioctl(fd, LOOP_SET_STATUS64, &info) != 0) {
      Logger("mount")->warn("mark {} for detach on last close: {}", dev, std::strerror(errno));
    }
  }
  ::close(fd);
}

// What the serving child holds; destroyed in reverse order of setup.
struct Served {
  MountRegistry registry;
  MountRecord record;
  std::shared_ptr<MountBlobCache> blobs;
  repo::BlobId root;
  std::unique_ptr<capture::FuseExporter> exporter;
  std::unique_ptr<io::LoopDevice> loop;
  std::unique_ptr<MountPathFuse> path_fs;
  bool registered = false;

  explicit Served(std::string dir) : registry(std::move(dir)) {}

  void TearDown() {
    auto log = Logger("mount");
    if (loop) {
      Status st = loop->Detach(std::chrono::milliseconds(5000));
      // kNotFound: view close detached it already.
      if (!st.ok() && st.code() != StatusCode::kNotFound) {
        log->warn("{}; it detaches when its last user closes it", st.ToString());
        MarkAutoclear(loop->path());
      }
      loop.reset();
    }
    if (exporter) {
      Status st = exporter->Stop();
      if (!st.ok()) log->warn("{}", st.ToString());
      exporter.reset();
      ::rmdir(registry.FuseDirOf(record.id).c_str());
    }
    if (path_fs) {
      Status st = path_fs->Stop();
      if (!st.ok()) log->warn("{}", st.ToString());
      path_fs.reset();
    }
    if (registered) registry.Remove(record.id).IgnoreError();  // view close may have removed it
    registered = false;
    blobs.reset();  // closes the repository: releases its lock
  }
};

// Everything the child does before it reports success.
Status SetUp(const MountRequest& req, Served& s) {
  CONTINUUM_RETURN_IF_ERROR(CheckFuse());
  repo::OpenOptions open;
  open.lock = repo::LockMode::kShared;
  CONTINUUM_ASSIGN_OR_RETURN(auto repository, repo::Repository::Open(req.repo_path, req.creds, std::move(open)));
  CONTINUUM_ASSIGN_OR_RETURN(PointInfo point, FindPoint(*repository, req.point));
  CONTINUUM_ASSIGN_OR_RETURN(repo::Manifest manifest, repository->LoadManifest(point.id));
  if (manifest.roots.size() != 1) return DataLoss("point " + point.id.Hex() + ": expected one root tree");
  s.root = manifest.roots[0];
  const std::string short_id = point.id.Hex().substr(0, 12);
  if (point.type == PointType::kImage && !req.at_dir.empty()) {
    return InvalidArgument("point " + short_id + " is an image point: mount it without --at to get a block device");
  }
  if (point.type == PointType::kPath && req.at_dir.empty()) {
    return InvalidArgument("point " + short_id + " is a path point: give --at DIR to browse it");
  }
  if (point.type == PointType::kPath && req.writable) {
    return InvalidArgument("point " + short_id + " is a path point: its mounts are read-only (no --writable)");
  }
  s.blobs = std::make_shared<MountBlobCache>(std::move(repository), req.cache_bytes);
  s.record.id = short_id + "-" + RandomSuffix();
  s.record.point = point.id.Hex();
  s.record.repo = req.repo_path;
  s.record.writable = req.writable;
  s.record.pid = ::getpid();
  s.record.start_ticks = StartTicksOf(::getpid());
  s.record.created_ns = WallNowNs();

  if (point.type == PointType::kImage) {
    s.record.kind = "image";
    CONTINUUM_ASSIGN_OR_RETURN(auto target, MountImageTarget::Open(s.blobs, s.root, {.writable = req.writable}));
    CONTINUUM_RETURN_IF_ERROR(io::MakeDirs(s.registry.dir(), 0755));
    s.record.mountpoint = s.registry.FuseDirOf(s.record.id);
    CONTINUUM_ASSIGN_OR_RETURN(s.exporter, capture::FuseExporter::Start(s.record.mountpoint));
    CONTINUUM_RETURN_IF_ERROR(s.exporter->AddFile(kImageFile, std::move(target)));
    CONTINUUM_ASSIGN_OR_RETURN(s.loop, io::LoopDevice::Attach({.backing_path = s.exporter->PathOf(kImageFile),
                                                               .read_only = !req.writable,
                                                               .block_size = kLoopBlockSize}));
    s.record.device = s.loop->path();
  } else {
    s.record.kind = "path";
    s.record.mountpoint = req.at_dir;
    CONTINUUM_RETURN_IF_ERROR(CheckMountDir(req.at_dir));
    CONTINUUM_ASSIGN_OR_RETURN(std::unique_ptr<MountPathTree> tree, MountPathTree::Open(s.blobs, s.root, point.time_ns));
    CONTINUUM_ASSIGN_OR_RETURN(s.path_fs, MountPathFuse::Start(req.at_dir, std::move(tree)));
  }
  CONTINUUM_RETURN_IF_ERROR(s.registry.Save(s.record));
  s.registered = true;
  return Status::Ok();
}

// The child: never returns.
[[noreturn]] void RunServer(const MountRequest& req, int report_fd) {
  ::setsid();
  // Nothing of ours may keep the caller's stdout/stderr open (a shell's
  // $(continuum mount ...) waits for them to close); logs go to a file.
  MountRegistry registry(req.registry_dir);
  int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd >= 0) {
    ::dup2(null_fd, STDIN_FILENO);
    ::dup2(null_fd, STDOUT_FILENO);
    ::dup2(null_fd, STDERR_FILENO);
  }
  if (io::MakeDirs(registry.dir(), 0755).ok()) {
    std::string log = registry.dir() + "/serve-" + std::to_string(::getpid()) + ".log";
    int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd >= 0) {
      ::dup2(log_fd, STDERR_FILENO);
      ::close(log_fd);
    }
  }
  // Block the stop signals before any thread exists, so every thread
  // inherits the mask and only sigtimedwait below takes them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGHUP);
  sigprocmask(SIG_BLOCK, &stop, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  Served s(req.registry_dir);
  Status st = SetUp(req, s);
  if (!st.ok()) {
    s.TearDown();
    ::unlink((registry.dir() + "/serve-" + std::to_string(::getpid()) + ".log").c_str());
    WriteAll(report_fd, "error " + std::to_string(static_cast<int>(st.code())) + " " + st.message() + "\n")
        .IgnoreError();  // the parent reports a silent child itself
    ::_exit(1);
  }
  // Rename the log after the record id, so the registry directory explains itself.
  std::string log = registry.dir() + "/serve-" + std::to_string(::getpid()) + ".log";
  ::rename(log.c_str(), s.registry.LogOf(s.record.id).c_str());
  WriteAll(report_fd, "ok " + s.record.ToJson().dump() + "\n").IgnoreError();
  ::close(report_fd);
  Logger("mount")->info("serving point {} as {}", s.record.point,
                        s.record.device.empty() ? s.record.mountpoint : s.record.device);
  for (;;) {
    timespec wait{.tv_sec = kLockKeepaliveSeconds, .tv_nsec = 0};
    int sig = ::sigtimedwait(&stop, nullptr, &wait);
    if (sig > 0) {
      Logger("mount")->info("signal {}: ending mount {}", sig, s.record.id);
      break;
    }
    Status fresh = s.blobs->KeepLockFresh(s.root);
    if (!fresh.ok()) Logger("mount")->warn("refresh repository lock: {}", fresh.ToString());
  }
  s.TearDown();
  ::_exit(0);
}

// Reads the report: "pid N" (from the first child), then "ok ..." or
// "error ..." from the server. kUnavailable if it dies or stays silent.
Result<MountRecord> ReadReport(int fd) {
  std::string text;
  pid_t server = 0;
  const auto deadline = std::chrono::steady_clock::now() + kChildReportTimeout;
  for (;;) {
    size_t nl;
    while ((nl = text.find('\n')) != std::string::npos) {
      std::string line = text.substr(0, nl);
      text.erase(0, nl + 1);
      if (line.rfind("pid ", 0) == 0) {
        server = std::atoi(line.c_str() + 4);
      } else if (line.rfind("ok ", 0) == 0) {
        auto json = nlohmann::json::parse(line.substr(3), nullptr, false);
        if (json.is_discarded()) return Internal("undecodable mount report");
        return MountRecord::FromJson(json);
      } else if (line.rfind("error ", 0) == 0) {
        size_t sp = line.find(' ', 6);
        int code = std::atoi(line.c_str() + 6);
        return Status(static_cast<StatusCode>(code), sp == std::string::npos ? line : line.substr(sp + 1));
      }
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      if (server > 0) ::kill(server, SIGKILL);
      return Unavailable("mount did not report back within " + std::to_string(kChildReportTimeout.count()) + " s");
    }
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return PosixError("wait for mount", errno);
    if (r == 0) continue;
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return PosixError("read mount report", errno);
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  return Internal("mount process ended without a report (see its log in " + MountRegistryDir() + ")");
}

}  // namespace

Result<MountRecord> StartMount(const MountRequest& request) {
  MountRequest req = request;
  req.repo_path = std::filesystem::absolute(req.repo_path).lexically_normal().string();
  if (!req.at_dir.empty()) {
    req.at_dir = std::filesystem::absolute(req.at_dir).lexically_normal().string();
    if (req.at_dir.size() > 1 && req.at_dir.back() == '/') req.at_dir.pop_back();
    CONTINUUM_RETURN_IF_ERROR(CheckMountDir(req.at_dir));
  }
  if (req.registry_dir.empty()) req.registry_dir = MountRegistryDir();
  CONTINUUM_RETURN_IF_ERROR(CheckFuse());
  MountRegistry(req.registry_dir).LoadLive().status().IgnoreError();  // clears stale entries only

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return PosixError("pipe", errno);
  std::fflush(nullptr);
  pid_t child = ::fork();
  if (child < 0) {
    int err = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    return PosixError("fork", err);
  }
  if (child == 0) {
    ::close(fds[0]);
    // A second fork: the server is not our child, so nothing waits on it, and
    // the first child exits at once and is reaped below.
    pid_t server = ::fork();
    if (server != 0) {
      if (server > 0) WriteAll(fds[1], "pid " + std::to_string(server) + "\n").IgnoreError();
      ::_exit(server < 0 ? 1 : 0);
    }
    RunServer(req, fds[1]);
  }
  ::close(fds[1]);
  int wstatus = 0;
  ::waitpid(child, &wstatus, 0);
  auto record = ReadReport(fds[0]);
  ::close(fds[0]);
  return record;
}

Result<std::vector<MountRecord>> ListMounts(const std::string& registry_dir) {
  return MountRegistry(registry_dir).LoadLive();
}

Result<MountRecord> FindMount(const std::string& device_or_dir, const std::string& registry_dir) {
  // Dead entries count too: closing the device of a crashed server cleans it up.
  CONTINUUM_ASSIGN_OR_RETURN(auto live, MountRegistry(registry_dir).LoadAll());
  std::string wanted = device_or_dir;
  if (!wanted.empty() && wanted[0] != '/') wanted = std::filesystem::absolute(wanted).string();
  wanted = std::filesystem::path(wanted).lexically_normal().string();
  if (wanted.size() > 1 && wanted.back() == '/') wanted.pop_back();
  for (auto& rec : live) {
    if ((!rec.device.empty() && rec.device == device_or_dir) || (rec.kind == "path" && rec.mountpoint == wanted) ||
        rec.id == device_or_dir) {
      return rec;
    }
  }
  return NotFound("no repository mount at " + device_or_dir);
}

Status CloseMount(const MountRecord& rec, const std::string& registry_dir) {
  MountRegistry registry(registry_dir);
  auto log = Logger("mount");
  // Release the user-facing side first: a device that is mounted or open,
  // or a busy directory, stops the close before the server is touched.
  if (rec.kind == "image" && !rec.device.empty()) {
    if (DeviceIsMounted(rec.device)) {
      return FailedPrecondition("device " + rec.device + " is busy (mounted): unmount it first");
    }
    // Not mounted: wait out brief openers (blkid, udev) before calling it busy.
    Status st = io::DetachLoopDevice(rec.device, std::chrono::milliseconds(10000));
    if (st.code() == StatusCode::kFailedPrecondition) {
      return FailedPrecondition("device " + rec.device + " is busy (mounted or open): unmount it first");
    }
    if (!st.ok() && st.code() != StatusCode::kNotFound) return st;
  } else if (rec.kind == "path") {
    if (::umount2(rec.mountpoint.c_str(), 0) != 0 && errno != EINVAL) {
      if (errno == EBUSY) return FailedPrecondition(rec.mountpoint + " is busy: leave it and close files under it first");
      return PosixError("unmount " + rec.mountpoint, errno);
    }
  }
  if (ProcessAlive(rec.pid, rec.start_ticks)) {
    ::kill(rec.pid, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + kServerExitTimeout;
    while (ProcessAlive(rec.pid, rec.start_ticks) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (ProcessAlive(rec.pid, rec.start_ticks)) {
      log->warn("mount server pid {} did not stop on SIGTERM; killing it", rec.pid);
      ::kill(rec.pid, SIGKILL);
      for (int i = 0; i < 250 && ProcessAlive(rec.pid, rec.start_ticks); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }
  CleanUpDeadMount(registry, rec);
  return registry.Remove(rec.id);
}

}  // namespace continuum::backup
