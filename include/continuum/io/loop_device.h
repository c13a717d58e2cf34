#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "continuum/common/result.h"

namespace continuum::io {

struct LoopOptions {
  std::string backing_path;
  bool read_only = false;
  // Open the backing file with O_DIRECT and ask the loop driver for direct I/O,
  // so the loop device adds no second page cache over the backing file.
  bool direct_io = true;
  // Logical block size of the device (512 .. page size, a power of two).
  uint32_t block_size = 4096;
  // Let the kernel detach the device on its last close. The LoopDevice then
  // holds the device open itself, so the device lives at least as long as the
  // object (or until another opener, e.g. a mount, closes after it).
  bool autoclear = false;
};

// How long Detach waits for brief openers (udev, blkid) before it reports busy.
inline constexpr std::chrono::milliseconds kLoopDetachTimeout{15000};

// A kernel loop device (/dev/loopN) attached to a backing file.
//
// The object is a handle, not an owner: its destructor does NOT detach (unless
// LoopOptions::autoclear asked the kernel to detach on last close), because
// the daemon hands devices to users and they must survive this object (and a
// daemon restart). Detach explicitly, or find devices again with
// FindLoopDevicesForBacking.
//
// Thread-safety: the object is immutable after Attach; Detach may be called
// from any thread, but at most once.
class LoopDevice {
 public:
  // Attaches a free loop device to opts.backing_path with LOOP_CONFIGURE.
  // Retries when another process claims the same free device first. If the
  // backing file refuses O_DIRECT, falls back to buffered I/O with a warning.
  static Result<std::unique_ptr<LoopDevice>> Attach(const LoopOptions& opts);

  ~LoopDevice();
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;

  // "/dev/loopN".
  const std::string& path() const { return path_; }
  const std::string& backing_path() const { return backing_path_; }
  bool read_only() const { return read_only_; }
  // Whether the kernel actually runs the device with direct I/O.
  bool direct_io() const { return direct_io_; }

  // Detaches the device (LOOP_CLR_FD). Returns kFailedPrecondition
  // "device /dev/loopN is busy (mounted or open)" if it stays in use for
  // `timeout`; the device is then left attached as it was.
  Status Detach(std::chrono::milliseconds timeout = kLoopDetachTimeout);

 private:
  LoopDevice(std::string path, std::string backing_path, bool read_only, bool direct_io)
      : path_(std::move(path)),
        backing_path_(std::move(backing_path)),
        read_only_(read_only),
        direct_io_(direct_io) {}

  std::string path_;
  std::string backing_path_;
  bool read_only_;
  bool direct_io_;
  int hold_fd_ = -1;  // open only with LoopOptions::autoclear
};

// Loop devices ("/dev/loopN", sorted) whose backing file is `backing_path`
// (compared after resolving symlinks), from /sys/block/loop*/loop/backing_file.
Result<std::vector<std::string>> FindLoopDevicesForBacking(const std::string& backing_path);

// Detaches the loop device at `dev_path`; see LoopDevice::Detach. kNotFound if
// it is not attached.
Status DetachLoopDevice(const std::string& dev_path,
                        std::chrono::milliseconds timeout = kLoopDetachTimeout);

// The backing file of an attached loop device; kNotFound if it is not attached.
Result<std::string> LoopBackingFile(const std::string& dev_path);

}  // namespace continuum::io
