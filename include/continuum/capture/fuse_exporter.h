#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "continuum/common/result.h"
#include "continuum/io/block_target.h"

struct fuse_session;

namespace continuum::capture {

class FuseFileTable;
class FuseUring;

// How the kernel hands FUSE requests to the exporter (ADR 0010).
enum class FuseTransport {
  kAuto,     // io_uring where the kernel has it (switching its enable_uring on), else /dev/fuse
  kIoUring,  // as kAuto, but a kernel without it is worth a warning
  kDevFuse,  // read/write of /dev/fuse only (libfuse's loop)
};
// "auto", "io_uring" or "dev_fuse".
Result<FuseTransport> ParseFuseTransport(const std::string& text);

struct FuseExporterOptions {
  FuseTransport transport = FuseTransport::kAuto;
  int ring_threads_per_queue = 4;  // io_uring: ring threads per CPU queue

  // The defaults, with CONTINUUM_FUSE_TRANSPORT (auto|io_uring|dev_fuse)
  // applied when it is set: how benchmarks and tests pick a transport.
  static FuseExporterOptions FromEnvironment();
};

struct FuseTransportInfo {
  std::string transport;   // "io_uring" once the kernel sends requests through the rings, else "/dev/fuse"
  int rings = 0;           // ring threads (one io_uring each)
  uint64_t ring_requests = 0;
};

// Exports BlockTargets as regular files of one FUSE mount, for a kernel loop
// device to turn into block devices (losetup --direct-io=on <mountpoint>/<name>).
//
// Every open is direct I/O (no page cache), reads and writes go to the target,
// fsync/fdatasync call BlockTarget::Flush, fallocate PUNCH_HOLE|KEEP_SIZE calls
// Trim and ZERO_RANGE calls WriteZeroes. Files are fixed-size: truncation is
// EPERM. Writes opened O_SYNC/O_DSYNC are passed with fua=true.
//
// The daemon must not put a filesystem it writes to on one of its own devices:
// serving a write would wait on itself.
//
// Thread-safety: AddFile, RemoveFile, PathOf and Stop may be called from any
// thread while I/O is in flight. Targets are called concurrently from the
// session's worker threads (as BlockTarget allows).
class FuseExporter {
 public:
  // Creates `mountpoint` if missing and mounts the (empty) filesystem there,
  // served by worker threads of its own. A stale mount left by a crashed
  // process ("transport endpoint is not connected") is lazily unmounted first;
  // a live FUSE mount there is kFailedPrecondition.
  static Result<std::unique_ptr<FuseExporter>> Start(
      const std::string& mountpoint, const FuseExporterOptions& options = FuseExporterOptions::FromEnvironment());

  // Stop()s; an error is logged.
  ~FuseExporter();
  FuseExporter(const FuseExporter&) = delete;
  FuseExporter& operator=(const FuseExporter&) = delete;

  // Publishes mountpoint/name: size target->Size(), mode 0600, or 0400 with
  // writes refused (EROFS) when target->ReadOnly(). `name` is one path
  // component. kAlreadyExists if the name is taken.
  Status AddFile(const std::string& name, std::shared_ptr<io::BlockTarget> target);
  // Unpublishes a file. kFailedPrecondition while it is open (by a loop device
  // or a process) after a short grace for the kernel's asynchronous release.
  Status RemoveFile(const std::string& name);
  std::string PathOf(const std::string& name) const;
  const std::string& mountpoint() const { return mountpoint_; }
  FuseTransportInfo TransportInfo() const;

  // Unmounts and joins the worker threads; idempotent. Files still present are
  // fine. If a file is still open, the FUSE connection is aborted (its users
  // get I/O errors) rather than leaving the daemon unable to stop.
  Status Stop();

 private:
  struct Loop;  // the session loop's thread and completion, shared with it

  FuseExporter(std::string mountpoint, std::shared_ptr<FuseFileTable> files);
  Status Mount(const FuseExporterOptions& options);
  void AttachUring(const FuseExporterOptions& options);
  // Runs the multi-threaded session loop on the loop's thread.
  static void Serve(Loop& loop, fuse_session* se, const std::string& mountpoint);
  // Waits for the loop to end; false on timeout.
  bool WaitLoop(std::chrono::milliseconds timeout);

  const std::string mountpoint_;
  const std::shared_ptr<FuseFileTable> files_;  // shared with the loop
  std::mutex stop_mu_;               // serialises Stop
  fuse_session* session_ = nullptr;  // set by Mount, cleared by Stop (under stop_mu_)
  uint32_t connection_id_ = 0;       // /sys/fs/fuse/connections/<id>, 0 if unknown
  std::shared_ptr<Loop> loop_;
  std::unique_ptr<FuseUring> uring_;  // FUSE over io_uring, when the kernel offers it
};

}  // namespace continuum::capture
