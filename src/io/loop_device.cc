#include "continuum/io/loop_device.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>
#include <utility>

#include "continuum/common/log.h"
#include "continuum/io/file.h"
#include "continuum/io/unique_fd.h"

namespace continuum::io {
namespace {

constexpr int kLoopMajor = 7;
constexpr int kAttachAttempts = 8;
constexpr auto kPollInterval = std::chrono::milliseconds(20);
// devtmpfs creates /dev/loopN as the device is added; allow for a slow node.
constexpr auto kNodeWait = std::chrono::milliseconds(1000);

// Sysfs attributes report a size of 4096 whatever their length: read to EOF.
Result<std::string> ReadSysfs(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return PosixError("open " + path, errno);
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return PosixError("read " + path, errno);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// "/sys/dev/block/7:N" for a loop device node, whatever name it is reached by.
Result<std::string> LoopSysfsDir(const std::string& dev_path) {
  struct stat st;
  if (::stat(dev_path.c_str(), &st) != 0) return PosixError("stat " + dev_path, errno);
  if (!S_ISBLK(st.st_mode) || major(st.st_rdev) != kLoopMajor) {
    return InvalidArgument(dev_path + " is not a loop device");
  }
  return "/sys/dev/block/" + std::to_string(major(st.st_rdev)) + ":" +
         std::to_string(minor(st.st_rdev));
}

// The sysfs "loop" group exists exactly while a backing file is bound.
bool IsAttached(const std::string& sysfs_dir) { return PathExists(sysfs_dir + "/loop/backing_file"); }

Result<UniqueFd> OpenNewNode(const std::string& dev, bool read_only) {
  const auto deadline = std::chrono::steady_clock::now() + kNodeWait;
  for (;;) {
    int fd = ::open(dev.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd >= 0) return UniqueFd(fd);
    if (errno != ENOENT || std::chrono::steady_clock::now() >= deadline) {
      return PosixError("open " + dev, errno);
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

// Undoes the autoclear mark LOOP_CLR_FD leaves on a device that others hold.
Status ClearAutoclear(const std::string& dev_path) {
  UniqueFd fd(::open(dev_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return PosixError("open " + dev_path, errno);
  loop_info64 info{};
  if (::ioctl(fd.get(), LOOP_GET_STATUS64, &info) != 0) return PosixError("status " + dev_path, errno);
  info.lo_flags &= ~static_cast<uint32_t>(LO_FLAGS_AUTOCLEAR);
  if (::ioctl(fd.get(), LOOP_SET_STATUS64, &info) != 0) {
    return PosixError("clear autoclear on " + dev_path, errno);
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<LoopDevice>> LoopDevice::Attach(const LoopOptions& opts) {
  auto log = Logger("loop");
  const std::string& backing = opts.backing_path;
  if (backing.empty()) return InvalidArgument("attach loop device: empty backing path");

  const int base_flags = (opts.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  bool dio = opts.direct_io;
  UniqueFd file(::open(backing.c_str(), base_flags | (dio ? O_DIRECT : 0)));
  if (!file && dio && errno == EINVAL) {
    log->warn("backing file {} refuses O_DIRECT; attaching without direct I/O", backing);
    dio = false;
    file.reset(::open(backing.c_str(), base_flags));
  }
  if (!file) return PosixError("open backing file " + backing, errno);

  UniqueFd control(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
  if (!control) return PosixError("open /dev/loop-control", errno);

  loop_config config{};
  config.fd = static_cast<uint32_t>(file.get());
  config.block_size = opts.block_size;
  config.info.lo_flags = (opts.read_only ? LO_FLAGS_READ_ONLY : 0) |
                         (opts.autoclear ? LO_FLAGS_AUTOCLEAR : 0) | (dio ? LO_FLAGS_DIRECT_IO : 0);
  std::strncpy(reinterpret_cast<char*>(config.info.lo_file_name), backing.c_str(), LO_NAME_SIZE - 1);

  for (int attempt = 0; attempt < kAttachAttempts; ++attempt) {
    int n = ::ioctl(control.get(), LOOP_CTL_GET_FREE);
    if (n < 0) return PosixError("find a free loop device via /dev/loop-control", errno);
    std::string dev = "/dev/loop" + std::to_string(n);
    CONTINUUM_ASSIGN_OR_RETURN(UniqueFd node, OpenNewNode(dev, opts.read_only));
    if (::ioctl(node.get(), LOOP_CONFIGURE, &config) != 0) {
      int err = errno;
      // Another process configured the same free device between GET_FREE and
      // LOOP_CONFIGURE: ask for the next free one.
      if (err == EBUSY) {
        log->debug("{} was claimed by another process, retrying", dev);
        continue;
      }
      if (err == EINVAL && (config.info.lo_flags & LO_FLAGS_DIRECT_IO)) {
        log->warn("{} refused direct I/O over {}; retrying without it", dev, backing);
        config.info.lo_flags &= ~static_cast<uint32_t>(LO_FLAGS_DIRECT_IO);
        continue;
      }
      return PosixError("configure " + dev + " over " + backing, err);
    }
    // The kernel may silently drop direct I/O (alignment); report what it runs.
    auto dio_state = ReadSysfs("/sys/block/loop" + std::to_string(n) + "/loop/dio");
    bool dio_on = dio_state.ok() && *dio_state == "1";
    if (opts.direct_io && !dio_on) log->warn("{} over {} runs without direct I/O", dev, backing);
    log->info("attached {} to {}{}", dev, backing, opts.read_only ? " read-only" : "");
    auto device = std::unique_ptr<LoopDevice>(new LoopDevice(dev, backing, opts.read_only, dio_on));
    // With autoclear the kernel detaches on the last close, which would be
    // `node` right now if nobody else holds the device yet; keep it open.
    if (opts.autoclear) device->hold_fd_ = node.release();
    return device;
  }
  return Unavailable("attach loop device over " + backing + ": free devices kept being claimed by " +
                     "other processes (" + std::to_string(kAttachAttempts) + " attempts)");
}

LoopDevice::~LoopDevice() {
  if (hold_fd_ >= 0) ::close(hold_fd_);
}

Status LoopDevice::Detach(std::chrono::milliseconds timeout) {
  if (hold_fd_ >= 0) {
    ::close(hold_fd_);
    hold_fd_ = -1;
  }
  return DetachLoopDevice(path_, timeout);
}

Status DetachLoopDevice(const std::string& dev_path, std::chrono::milliseconds timeout) {
  CONTINUUM_ASSIGN_OR_RETURN(std::string sysfs_dir, LoopSysfsDir(dev_path));
  if (!IsAttached(sysfs_dir)) return NotFound("device " + dev_path + " is not attached");
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto expired = [&] { return std::chrono::steady_clock::now() >= deadline; };
  auto busy = [&] { return FailedPrecondition("device " + dev_path + " is busy (mounted or open)"); };

  // An exclusive open fails with EBUSY while a filesystem (or another
  // exclusive holder) has the device; waiting covers a brief blkid/udev probe.
  UniqueFd fd;
  for (;;) {
    fd.reset(::open(dev_path.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC));
    if (fd) break;
    if (errno != EBUSY) return PosixError("open " + dev_path, errno);
    if (expired()) return busy();
    std::this_thread::sleep_for(kPollInterval);
  }
  loop_info64 info{};
  if (::ioctl(fd.get(), LOOP_GET_STATUS64, &info) != 0) {
    if (errno == ENXIO) return NotFound("device " + dev_path + " is not attached");
    // A device whose backing file is gone (dead FUSE connection) cannot
    // report its status but can still be detached.
    Logger("loop")->warn("status {}: {}; detaching anyway", dev_path, std::strerror(errno));
    info.lo_flags = 0;
  }
  const bool had_autoclear = info.lo_flags & LO_FLAGS_AUTOCLEAR;
  for (;;) {
    if (::ioctl(fd.get(), LOOP_CLR_FD, 0) == 0) break;
    if (errno == ENXIO) return NotFound("device " + dev_path + " is not attached");
    if (errno != EBUSY) return PosixError("detach " + dev_path, errno);
    if (expired()) return busy();
    std::this_thread::sleep_for(kPollInterval);
  }
  // Current kernels never fail LOOP_CLR_FD for an open device: they mark it
  // autoclear and detach on the last close. So success is judged by sysfs.
  fd.reset();
  while (IsAttached(sysfs_dir)) {
    if (expired()) {
      Status st = had_autoclear ? Status::Ok() : ClearAutoclear(dev_path);
      if (!IsAttached(sysfs_dir)) return Status::Ok();  // the last holder let go meanwhile
      if (!st.ok()) Logger("loop")->warn("{} stays marked for detach on last close: {}", dev_path, st.ToString());
      return busy();
    }
    std::this_thread::sleep_for(kPollInterval);
  }
  Logger("loop")->info("detached {}", dev_path);
  return Status::Ok();
}

Result<std::string> LoopBackingFile(const std::string& dev_path) {
  CONTINUUM_ASSIGN_OR_RETURN(std::string sysfs_dir, LoopSysfsDir(dev_path));
  auto contents = ReadSysfs(sysfs_dir + "/loop/backing_file");
  if (!contents.ok() && contents.status().code() == StatusCode::kNotFound) {
    return NotFound("device " + dev_path + " is not attached");
  }
  return contents;
}

Result<std::vector<std::string>> FindLoopDevicesForBacking(const std::string& backing_path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  // The kernel reports the backing file by its resolved absolute path.
  fs::path wanted = fs::weakly_canonical(backing_path, ec);
  if (ec) return PosixError("resolve " + backing_path, ec.value());
  std::vector<std::pair<int, std::string>> found;
  fs::directory_iterator it("/sys/block", ec);
  if (ec) return PosixError("list /sys/block", ec.value());
  for (const auto& entry : it) {
    std::string name = entry.path().filename().string();
    if (name.rfind("loop", 0) != 0) continue;
    auto contents = ReadSysfs(entry.path().string() + "/loop/backing_file");
    if (!contents.ok()) continue;  // not attached
    if (fs::path(*contents) != wanted) continue;
    found.emplace_back(std::atoi(name.c_str() + 4), "/dev/" + name);
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> devices;
  for (auto& [number, dev] : found) devices.push_back(std::move(dev));
  return devices;
}

}  // namespace continuum::io
