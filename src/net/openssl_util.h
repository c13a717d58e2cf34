#pragma once

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "continuum/common/result.h"

// Small RAII and formatting helpers over OpenSSL, shared by the PKI and TLS code.
namespace continuum::net::ossl {

struct Deleter {
  void operator()(X509* p) const { X509_free(p); }
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(BIO* p) const { BIO_free_all(p); }
  void operator()(SSL_CTX* p) const { SSL_CTX_free(p); }
  void operator()(SSL* p) const { SSL_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
  void operator()(X509_STORE_CTX* p) const { X509_STORE_CTX_free(p); }
};
using X509Ptr = std::unique_ptr<X509, Deleter>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter>;
using BioPtr = std::unique_ptr<BIO, Deleter>;
using SslCtxPtr = std::unique_ptr<SSL_CTX, Deleter>;
using SslPtr = std::unique_ptr<SSL, Deleter>;

// Drains this thread's OpenSSL error queue into one line ("" when empty).
std::string DrainErrors();

// The certificate's subject common name ("" when it has none).
std::string CommonName(const X509* cert);
// RFC 2253 form of a name.
std::string NameToString(const X509_NAME* name);
// Seconds since the epoch; 0 when the time cannot be parsed.
int64_t AsnTimeToEpoch(const ASN1_TIME* t);
// "2026-01-31T12:00:00Z".
std::string FormatEpoch(int64_t epoch);
std::string Sha256Fingerprint(const X509* cert);

// PEM parsing of file contents; `what` names the file in errors.
Result<std::vector<X509Ptr>> ParseCertificates(const std::string& pem, const std::string& what);
Result<PkeyPtr> ParsePrivateKey(const std::string& pem, const std::string& what);
// PEM encoding.
Result<std::string> CertToPem(X509* cert);
Result<std::string> KeyToPem(EVP_PKEY* key);

}  // namespace continuum::net::ossl
