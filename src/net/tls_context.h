#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "continuum/common/result.h"
#include "continuum/net/tls_options.h"
#include "net/openssl_util.h"

namespace continuum::net {

enum class TlsRole { kClient, kServer };

// Our own identity, as error messages about it need to describe it.
struct TlsIdentity {
  std::string name;
  std::string pki_dir;
  int64_t not_after = 0;
};

// An SSL_CTX configured for Continuum: TLS 1.3 only, our certificate and key,
// the site CA(s) from ca.crt as the only trust anchors, and mandatory peer
// certificates on both sides.
// Thread-safety: immutable after Load; NewSession may be called from any thread.
class TlsContext {
 public:
  // Loads pki_dir/ca.crt and pki_dir/<name>.{crt,key}. Fails with a hint to
  // `continuum pki` when a file is missing, and when our certificate is not
  // signed by a CA in ca.crt or does not match the key. An expired certificate
  // of our own only logs a warning: the peer's refusal then tells both sides.
  static Result<std::unique_ptr<TlsContext>> Load(const TlsOptions& options, TlsRole role);

  // A new session over `fd` (not owned), in client or server state. When
  // `expected_peer` is not empty, the handshake fails unless the peer
  // certificate's common name equals it.
  Result<ossl::SslPtr> NewSession(int fd, const std::string& expected_peer) const;

  const TlsIdentity& identity() const { return identity_; }

 private:
  TlsContext(ossl::SslCtxPtr ctx, TlsIdentity identity, TlsRole role)
      : ctx_(std::move(ctx)), identity_(std::move(identity)), role_(role) {}

  ossl::SslCtxPtr ctx_;
  TlsIdentity identity_;
  TlsRole role_;
};

}  // namespace continuum::net
