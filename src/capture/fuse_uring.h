#pragma once

#include <cstdint>
#include <memory>

#include "continuum/common/result.h"

struct fuse_session;

namespace continuum::capture {

// FUSE over io_uring (ADR 0010) for a libfuse 3.14 session, which predates it.
//
// Attach installs custom I/O hooks on a mounted session before its loop runs:
// - the read hook sees the kernel's FUSE_INIT and whether it offers
//   FUSE_OVER_IO_URING;
// - the writev hook adds the flag to libfuse's INIT reply, and routes the
//   replies of requests that came through a ring to that ring's entry.
// Once INIT is answered, ring threads (one io_uring each, one entry each,
// `threads_per_queue` per CPU queue) register with the kernel. When every
// queue has an entry, the kernel sends requests through the rings; before
// that, and for interrupts and notifications always, /dev/fuse and the
// libfuse loop serve them. A request from a ring is parsed and answered by
// libfuse (fuse_session_process_buf) with the same operations, on the ring
// thread, so both transports run the same code.
//
// The kernel refusing (flag not offered, register failing) leaves the session
// on /dev/fuse: nothing is lost, only the speed-up.
class FuseUring {
 public:
  struct Options {
    int threads_per_queue = 4;
  };
  struct Stats {
    bool offered = false;     // the kernel's INIT offered FUSE_OVER_IO_URING
    bool negotiated = false;  // ... and the INIT reply took it: the rings are registering
    int threads = 0;          // ring threads started
    uint64_t requests = 0;    // requests served through the rings
  };

  // True when this kernel has the transport and it is switched on
  // (/sys/module/fuse/parameters/enable_uring is Y).
  static bool KernelEnabled();
  // Whether this kernel has the transport at all (the module parameter exists).
  static bool KernelSupports();
  // Switches the kernel's enable_uring on (root). It only lets FUSE servers
  // ask for io_uring in INIT; servers that do not ask are unaffected.
  static Status EnableInKernel();

  // Hooks `se` (mounted, loop not yet started) and starts the ring threads,
  // which wait for INIT. Fails only if the hooks cannot be installed.
  static Result<std::unique_ptr<FuseUring>> Attach(fuse_session* se, const Options& options);

  // Stop()s.
  ~FuseUring();
  FuseUring(const FuseUring&) = delete;
  FuseUring& operator=(const FuseUring&) = delete;

  // Ends the ring threads (after the connection is gone, or cancelling their
  // outstanding commands); idempotent.
  void Stop();
  Stats GetStats() const;

  struct State;  // shared with the hooks and the threads

 private:
  explicit FuseUring(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

}  // namespace continuum::capture
