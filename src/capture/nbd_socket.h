#pragma once

#include <cstdint>
#include <mutex>
#include <span>
#include <string>

#include "continuum/common/status.h"

namespace continuum::capture {

// A connected stream socket owned by one NBD connection, with full-length,
// EINTR-safe reads and writes that report the peer in their messages.
// Thread-safety: reads come from one thread at a time (the connection's
// reader); Write() may be called from any thread and never interleaves with
// another Write(); Shutdown() may be called from any thread at any time.
class NbdSocket {
 public:
  // Takes ownership of `fd`; `peer` names the client in messages and logs.
  NbdSocket(int fd, std::string peer);
  ~NbdSocket();
  NbdSocket(const NbdSocket&) = delete;
  NbdSocket& operator=(const NbdSocket&) = delete;

  // Reads exactly out.size() bytes. kUnavailable when the peer closed the
  // connection or the receive timeout expired.
  Status ReadExact(std::span<uint8_t> out);
  // Reads and drops `length` bytes, in bounded memory.
  Status Discard(uint64_t length);
  // Sends head then body as one unit with respect to other Write() calls.
  Status Write(std::span<const uint8_t> head, std::span<const uint8_t> body = {});
  // 0 disables the timeout.
  Status SetReceiveTimeout(int timeout_ms);
  // Wakes any blocked read or write; later calls fail. Idempotent.
  void Shutdown();

  const std::string& peer() const { return peer_; }
  int fd() const { return fd_; }

 private:
  const int fd_;
  const std::string peer_;
  std::mutex write_mu_;  // serializes Write() so replies never interleave
};

}  // namespace continuum::capture
