#include "net/tls_failure.h"

#include <openssl/err.h>
#include <openssl/x509_vfy.h>

#include <cerrno>
#include <cstring>

#include "net/openssl_util.h"
#include "net/peer_verification.h"
#include "net/socket_util.h"

namespace continuum::net {
namespace {

// We refused the peer's certificate.
Status VerificationFailure(const PeerVerification& v, const TlsIdentity& self, const std::string& peer) {
  // Name the peer by its own certificate; a failure higher up the chain (a CA
  // the peer sent along) is still a problem with the peer's credentials.
  std::string peer_desc = v.peer_cn.empty() ? peer : v.peer_cn + " (" + peer + ")";
  std::string who = "certificate of " + peer_desc;
  if (v.depth > 0 && v.error != X509_V_ERR_HOSTNAME_MISMATCH) {
    who = "CA certificate '" + v.cert_cn + "' presented by " + peer_desc;
  }
  switch (v.error) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return FailedPrecondition(who + " has expired (not after " + ossl::FormatEpoch(v.not_after) + ")");
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return FailedPrecondition(who + " is not valid until " + ossl::FormatEpoch(v.not_before) +
                                ": check the clocks of " + peer + " and this host");
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
      return FailedPrecondition("certificate of " + peer_desc + " is not signed by this site's CA (" + self.pki_dir +
                                "/ca.crt)");
    case X509_V_ERR_HOSTNAME_MISMATCH:
      return FailedPrecondition("peer name mismatch: expected " + v.expected_cn + ", got " + v.peer_cn + " (" + peer +
                                ")");
    case X509_V_ERR_INVALID_PURPOSE:
      return FailedPrecondition(who +
                                " is not issued for continuum tls (extended key usage): reissue it with "
                                "'continuum pki issue'");
    default:
      return FailedPrecondition(who + " failed verification: " + X509_verify_cert_error_string(v.error));
  }
}

bool NotTls(int reason) {
  switch (reason) {
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH:
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_UNEXPECTED_MESSAGE:
    case SSL_R_UNEXPECTED_RECORD:
    case SSL_R_LENGTH_MISMATCH:
    case SSL_R_BAD_PACKET_LENGTH:
    case SSL_R_UNKNOWN_PROTOCOL:
    case SSL_R_RECORD_TOO_SMALL:
      return true;
    default:
      return false;
  }
}

// The peer sent an alert: it refused us, or the protocol.
Status PeerRefusal(int reason, const TlsIdentity& self, const std::string& peer, const std::string& detail) {
  std::string ours = "certificate of " + self.name;
  std::string renew = "run 'continuum pki issue " + self.name + " --dir " + self.pki_dir + "'";
  switch (reason) {
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
      return FailedPrecondition(peer + " refused our certificate: " + ours + " has expired (not after " +
                                ossl::FormatEpoch(self.not_after) + "): " + renew);
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
      return FailedPrecondition(peer + " refused our certificate: " + ours +
                                " is not signed by its site's CA; check that both hosts use certificates from the "
                                "same 'continuum pki init'");
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
      return FailedPrecondition("peer " + peer + " requires a client certificate");
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
      return FailedPrecondition(peer + " refused our certificate (" + self.name + "): " + detail +
                                "; if it expects another peer name, check its configuration");
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
    case SSL_R_UNSUPPORTED_PROTOCOL:
      return FailedPrecondition(peer + " does not support tls 1.3: " + detail);
    default:
      return FailedPrecondition("tls error with " + peer + ": " + detail);
  }
}

}  // namespace

Status TlsFailure(SSL* ssl, int ret, TlsPhase phase, const TlsIdentity& self, const std::string& peer) {
  int saved_errno = errno;
  int ssl_error = SSL_get_error(ssl, ret);
  unsigned long err = ERR_peek_last_error();
  int reason = err != 0 && ERR_GET_LIB(err) == ERR_LIB_SSL ? ERR_GET_REASON(err) : 0;
  std::string detail = ossl::DrainErrors();
  std::string closed = phase == TlsPhase::kHandshake ? peer + " closed the connection during the tls handshake"
                                                     : "connection to " + peer + " closed";

  const PeerVerification* v = GetPeerVerification(ssl);
  if (v != nullptr && v->error != X509_V_OK) return VerificationFailure(*v, self, peer);
  if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
    return FailedPrecondition("peer " + peer + " did not present a client certificate");
  }
  if (ssl_error == SSL_ERROR_ZERO_RETURN || reason == SSL_R_UNEXPECTED_EOF_WHILE_READING) return Unavailable(closed);
  if (ssl_error == SSL_ERROR_SYSCALL) {
    if (saved_errno == 0 || saved_errno == ECONNRESET || saved_errno == EPIPE) {
      return Unavailable(saved_errno == 0 ? closed : closed + " (" + strerror(saved_errno) + ")");
    }
    return NetError("tls connection to " + peer, saved_errno);
  }
  if (NotTls(reason)) {
    // Mid-stream, a record that does not parse is damage, not a protocol mix-up.
    if (phase == TlsPhase::kData) return DataLoss("tls stream from " + peer + " is corrupt: " + detail);
    return FailedPrecondition(peer + " does not speak tls 1.3 (" + detail + "); is one side running with --insecure?");
  }
  if (reason >= SSL_AD_REASON_OFFSET || reason == SSL_R_NO_PROTOCOLS_AVAILABLE) {
    const char* alert = ERR_reason_error_string(err);  // "sslv3 alert bad certificate"
    return PeerRefusal(reason, self, peer, alert != nullptr ? alert : detail);
  }
  if (reason == SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC) {
    return DataLoss("tls record from " + peer + " failed authentication: the stream was corrupted or tampered with");
  }
  return Unavailable("tls error with " + peer + ": " + (detail.empty() ? "unknown error" : detail));
}

}  // namespace continuum::net
