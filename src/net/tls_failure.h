#pragma once

#include <openssl/ssl.h>

#include <string>

#include "continuum/common/status.h"
#include "net/tls_context.h"

namespace continuum::net {

enum class TlsPhase { kHandshake, kData };

// Turns a failed SSL call (return value `ret`) into a Status that names the
// problem: which certificate failed and why, a refusal by the peer (from its
// alert), a peer that does not speak TLS, or a closed connection.
// REQUIRES: called right after the failing call, on the same thread (it reads
// and drains that thread's OpenSSL error queue and errno), under the lock that
// guards `ssl`. `peer` names the peer ("127.0.0.1:5000" or "dr1 (10.0.0.5:7700)").
Status TlsFailure(SSL* ssl, int ret, TlsPhase phase, const TlsIdentity& self, const std::string& peer);

}  // namespace continuum::net
