#pragma once

#include <openssl/ssl.h>

#include <string>

#include "continuum/common/result.h"
#include "net/tls_context.h"

namespace continuum::net {

// What a non-blocking TLS step needs before it can continue.
enum class TlsWant { kDone, kRead, kWrite };

// One non-blocking step of the handshake on `ssl`. `peer` names the peer in errors.
Result<TlsWant> StepHandshake(SSL* ssl, const TlsIdentity& self, const std::string& peer);

// Client side, after StepHandshake is done: one non-blocking step of waiting
// for the server to accept our certificate. In TLS 1.3 the client's handshake
// ends before the server has checked the client certificate, so a refusal
// would otherwise surface only on the first read. The server's session ticket
// (sent only after it verified us) or any data from it means acceptance; an
// alert means refusal and becomes the error.
Result<TlsWant> StepAwaitAcceptance(SSL* ssl, const TlsIdentity& self, const std::string& peer);

// The common name of the peer's verified certificate.
std::string VerifiedPeerName(const SSL* ssl);

}  // namespace continuum::net
