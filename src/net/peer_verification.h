#pragma once

#include <openssl/ssl.h>

#include <cstdint>
#include <string>

namespace continuum::net {

// What certificate verification found out about the peer, kept with the SSL
// object so a failed handshake can say which certificate failed and why
// (SSL_get_verify_result alone does not name the certificate).
struct PeerVerification {
  std::string expected_cn;  // "" accepts any name the CA vouches for
  int error = 0;            // X509_V_OK, or the first failure
  std::string peer_cn;      // the peer's own (leaf) certificate
  int depth = 0;            // of the certificate the failure is about; 0 is the peer's own
  std::string cert_cn;      // that certificate's common name and validity
  int64_t not_before = 0;
  int64_t not_after = 0;
};

// Attaches a fresh PeerVerification to `ssl`; it is freed with the SSL.
bool AttachPeerVerification(SSL* ssl, const std::string& expected_cn);
// nullptr when none is attached.
const PeerVerification* GetPeerVerification(const SSL* ssl);

// The SSL_CTX verify callback: records the first failure and enforces
// expected_cn on the leaf certificate (an exact CN match, not hostname rules,
// because our names are identities like "agent_7", not DNS names).
int VerifyPeerCallback(int preverify_ok, X509_STORE_CTX* ctx);

}  // namespace continuum::net
