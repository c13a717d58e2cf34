#pragma once

#include <memory>
#include <string>

#include "continuum/common/result.h"
#include "continuum/net/connection.h"
#include "continuum/net/tls_options.h"

namespace continuum::net {

// Accepts authenticated connections on one TCP address.
//
// Thread-safety: Accept is called by one thread at a time (the accept loop);
// Close and Address may be called from any thread.
class Listener {
 public:
  // Binds `host_port` ("0.0.0.0:7700", "127.0.0.1:0", "[::1]:0") and loads the
  // TLS identity once; a missing or invalid certificate fails here, with a hint.
  static Result<std::unique_ptr<Listener>> Listen(const std::string& host_port, const TlsOptions& options);
  virtual ~Listener() = default;

  // The bound address with the actual port ("127.0.0.1:41234").
  virtual std::string Address() const = 0;

  // Returns the next connection whose TLS handshake succeeded and whose client
  // certificate was verified against the site CA. A failed or timed-out
  // handshake returns an error naming the peer and the reason; the listener
  // stays usable, so the caller logs it and calls Accept again. Handshakes run
  // interleaved inside Accept, so one slow or silent client does not hold up
  // the others (each has its own connect_timeout_ms deadline).
  // After Close: kUnavailable.
  virtual Result<std::unique_ptr<Connection>> Accept() = 0;

  // Wakes a blocked Accept and makes later calls fail. Idempotent.
  virtual void Close() = 0;
};

}  // namespace continuum::net
