#pragma once

#include <string>

namespace continuum::net {

// How a Listener or Dial authenticates. With TLS (the default) both sides load
// pki_dir/ca.crt (one or more CA certificates, all trusted) and their identity
// pki_dir/<name>.crt + pki_dir/<name>.key, made by `continuum pki`.
struct TlsOptions {
  std::string pki_dir;
  std::string name;
  // Plaintext TCP without authentication; only with an explicit --insecure.
  bool insecure = false;
  // Bounds TCP connect plus TLS handshake (Dial), and each handshake (Accept).
  int connect_timeout_ms = 10000;
  // A Send or Recv that makes no progress for this long fails; <= 0 waits forever.
  int io_timeout_ms = 30000;
};

}  // namespace continuum::net
