#include "net/peer_verification.h"

#include <openssl/x509_vfy.h>

#include "net/openssl_util.h"

namespace continuum::net {
namespace {

void FreeVerification(void* parent, void* ptr, CRYPTO_EX_DATA* ad, int idx, long argl, void* argp) {
  delete static_cast<PeerVerification*>(ptr);
}

int Index() {
  // C++ guarantees one-time, thread-safe initialisation of a local static.
  static int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, FreeVerification);
  return index;
}

void Record(PeerVerification* v, int error, X509_STORE_CTX* ctx) {
  if (v->error != X509_V_OK) return;  // keep the first, most specific failure
  X509* cert = X509_STORE_CTX_get_current_cert(ctx);
  v->error = error;
  v->peer_cn = ossl::CommonName(X509_STORE_CTX_get0_cert(ctx));
  v->depth = X509_STORE_CTX_get_error_depth(ctx);
  v->cert_cn = ossl::CommonName(cert);
  if (cert != nullptr) {
    v->not_before = ossl::AsnTimeToEpoch(X509_get0_notBefore(cert));
    v->not_after = ossl::AsnTimeToEpoch(X509_get0_notAfter(cert));
  }
}

}  // namespace

bool AttachPeerVerification(SSL* ssl, const std::string& expected_cn) {
  auto* v = new PeerVerification{.expected_cn = expected_cn};
  if (SSL_set_ex_data(ssl, Index(), v) != 1) {
    delete v;
    return false;
  }
  return true;
}

const PeerVerification* GetPeerVerification(const SSL* ssl) {
  return static_cast<const PeerVerification*>(SSL_get_ex_data(ssl, Index()));
}

int VerifyPeerCallback(int preverify_ok, X509_STORE_CTX* ctx) {
  auto* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(ctx, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* v = ssl != nullptr ? static_cast<PeerVerification*>(SSL_get_ex_data(ssl, Index())) : nullptr;
  if (preverify_ok == 0) {
    if (v != nullptr) Record(v, X509_STORE_CTX_get_error(ctx), ctx);
    return 0;
  }
  if (v != nullptr && !v->expected_cn.empty() && X509_STORE_CTX_get_error_depth(ctx) == 0 &&
      ossl::CommonName(X509_STORE_CTX_get_current_cert(ctx)) != v->expected_cn) {
    X509_STORE_CTX_set_error(ctx, X509_V_ERR_HOSTNAME_MISMATCH);
    Record(v, X509_V_ERR_HOSTNAME_MISMATCH, ctx);
    return 0;
  }
  return 1;
}

}  // namespace continuum::net
