#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "continuum/common/status.h"

namespace continuum::net {

// A reliable, ordered, authenticated byte stream to one peer (TLS 1.3 with
// mutual certificate authentication, or plaintext TCP in insecure mode).
// A pure interface so tests can wrap a connection to cut it or corrupt it.
//
// Thread-safety: full duplex. One thread may be in SendAll while another is in
// RecvAll; two concurrent senders (or receivers) are not allowed. Shutdown,
// SetIoTimeout, PeerName and PeerAddress may be called from any thread. The
// connection must outlive every call into it.
//
// Errors: a closed, reset, timed-out or shut-down connection is kUnavailable
// (the caller reconnects and resumes); a record that fails TLS authentication
// (corruption or tampering on the wire) is kDataLoss. After any error the
// connection is dead: every later call returns the first error.
class Connection {
 public:
  virtual ~Connection() = default;

  // Sends all of `data`; returns once it is handed to the kernel. There is no
  // user-space buffering, so there is nothing to flush: batch small messages
  // before calling (each call costs at least one TLS record and one syscall).
  virtual Status SendAll(std::span<const uint8_t> data) = 0;

  // Fills all of `out`. The peer closing first is kUnavailable
  // "connection to <peer> closed".
  virtual Status RecvAll(std::span<uint8_t> out) = 0;

  // Aborts the connection: wakes a blocked SendAll/RecvAll in another thread
  // (they return kUnavailable) and makes every later call fail. Idempotent.
  virtual void Shutdown() = 0;

  // The verified common name of the peer's certificate, or "insecure:<addr>".
  virtual std::string PeerName() const = 0;
  // "ip:port" or "[ipv6]:port".
  virtual std::string PeerAddress() const = 0;
  // Applies to waits that start after the call; <= 0 waits forever.
  virtual void SetIoTimeout(int ms) = 0;
  // True when bytes from the peer are already here (a RecvAll would not wait
  // for the first of them). A hint for batching: false is always safe.
  virtual bool Readable() { return false; }
};

}  // namespace continuum::net
