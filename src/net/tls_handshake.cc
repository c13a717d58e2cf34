#include "net/tls_handshake.h"

#include <openssl/err.h>

#include <cerrno>

#include "net/openssl_util.h"
#include "net/tls_failure.h"

namespace continuum::net {

Result<TlsWant> StepHandshake(SSL* ssl, const TlsIdentity& self, const std::string& peer) {
  ERR_clear_error();
  errno = 0;
  int rc = SSL_do_handshake(ssl);
  if (rc == 1) return TlsWant::kDone;
  switch (SSL_get_error(ssl, rc)) {
    case SSL_ERROR_WANT_READ:
      return TlsWant::kRead;
    case SSL_ERROR_WANT_WRITE:
      return TlsWant::kWrite;
    default:
      return TlsFailure(ssl, rc, TlsPhase::kHandshake, self, peer);
  }
}

Result<TlsWant> StepAwaitAcceptance(SSL* ssl, const TlsIdentity& self, const std::string& peer) {
  ERR_clear_error();
  errno = 0;
  unsigned char byte;
  // Peek, not read: application data that arrives with the ticket stays for RecvAll.
  int rc = SSL_peek(ssl, &byte, 1);
  if (rc > 0) return TlsWant::kDone;
  int err = SSL_get_error(ssl, rc);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    const SSL_SESSION* session = SSL_get0_session(ssl);
    if (session != nullptr && SSL_SESSION_has_ticket(session) == 1) return TlsWant::kDone;
    return err == SSL_ERROR_WANT_READ ? TlsWant::kRead : TlsWant::kWrite;
  }
  return TlsFailure(ssl, rc, TlsPhase::kHandshake, self, peer);
}

std::string VerifiedPeerName(const SSL* ssl) { return ossl::CommonName(SSL_get0_peer_certificate(ssl)); }

}  // namespace continuum::net
