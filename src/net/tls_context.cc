#include "net/tls_context.h"

#include <openssl/err.h>
#include <openssl/x509_vfy.h>

#include <ctime>

#include "continuum/common/log.h"
#include "continuum/io/file.h"
#include "continuum/net/pki.h"
#include "net/peer_verification.h"
#include "net/socket_bio.h"

namespace continuum::net {
namespace {

Result<std::string> ReadPki(const std::string& path, const std::string& what, const std::string& hint) {
  auto contents = io::ReadFileToString(path);
  if (contents.ok()) return contents;
  if (contents.status().code() == StatusCode::kNotFound) {
    return FailedPrecondition("missing " + what + " " + path + ": " + hint);
  }
  return contents.status();
}

// Checks our own certificate against our own trust store, so a mix-up of PKI
// directories is reported on the host that has it, at startup.
Status CheckOwnCertificate(X509_STORE* store, X509* cert, const std::string& cert_path, const std::string& ca_path) {
  std::unique_ptr<X509_STORE_CTX, ossl::Deleter> vctx(X509_STORE_CTX_new());
  if (!vctx || X509_STORE_CTX_init(vctx.get(), store, cert, nullptr) != 1) {
    return Internal("verify " + cert_path + ": " + ossl::DrainErrors());
  }
  int ok = X509_verify_cert(vctx.get());
  int err = X509_STORE_CTX_get_error(vctx.get());
  ERR_clear_error();
  if (ok == 1 || err == X509_V_ERR_CERT_HAS_EXPIRED || err == X509_V_ERR_CERT_NOT_YET_VALID) {
    return Status::Ok();
  }
  switch (err) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
      return FailedPrecondition("certificate " + cert_path + " is not signed by the CA in " + ca_path);
    default:
      return FailedPrecondition("certificate " + cert_path + " does not verify against " + ca_path + ": " +
                                X509_verify_cert_error_string(err));
  }
}

}  // namespace

Result<std::unique_ptr<TlsContext>> TlsContext::Load(const TlsOptions& options, TlsRole role) {
  const std::string& dir = options.pki_dir;
  if (dir.empty()) return InvalidArgument("no pki directory given (--pki DIR)");
  if (!IsValidPkiName(options.name)) return InvalidArgument("invalid tls identity name '" + options.name + "'");
  std::string ca_path = dir + "/ca.crt";
  std::string cert_path = dir + "/" + options.name + ".crt";
  std::string key_path = dir + "/" + options.name + ".key";
  std::string issue_hint = "run 'continuum pki issue " + options.name + " --dir " + dir + "'";

  CONTINUUM_ASSIGN_OR_RETURN(std::string ca_pem,
                             ReadPki(ca_path, "CA certificate",
                                     "copy the site's ca.crt there, or run 'continuum pki init --dir " + dir + "'"));
  CONTINUUM_ASSIGN_OR_RETURN(std::string cert_pem, ReadPki(cert_path, "certificate", issue_hint));
  CONTINUUM_ASSIGN_OR_RETURN(std::string key_pem, ReadPki(key_path, "key", issue_hint));
  CONTINUUM_ASSIGN_OR_RETURN(auto cas, ossl::ParseCertificates(ca_pem, ca_path));
  CONTINUUM_ASSIGN_OR_RETURN(auto certs, ossl::ParseCertificates(cert_pem, cert_path));
  CONTINUUM_ASSIGN_OR_RETURN(ossl::PkeyPtr key, ossl::ParsePrivateKey(key_pem, key_path));

  ERR_clear_error();
  ossl::SslCtxPtr ctx(SSL_CTX_new(TLS_method()));
  if (!ctx) return Internal("create tls context: " + ossl::DrainErrors());
  SSL_CTX* c = ctx.get();
  if (SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) != 1) {
    return Internal("require tls 1.3: " + ossl::DrainErrors());
  }
  // Partial writes let SendAll make progress record by record on a
  // non-blocking socket; a moving buffer lets it retry from a new offset.
  // No auto chain: every peer already holds the site CA, so sending it along
  // only costs bytes (and makes a foreign CA show up in the peer's errors).
  SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_NO_AUTO_CHAIN);

  // Read-ahead pulls whole socket buffers into libssl instead of two recv(2)
  // calls (header, body) per 16 KiB record. Safe with our poll loop: SSL_read
  // reports WANT_READ only when no complete record is buffered.
  SSL_CTX_set_read_ahead(c, 1);
  SSL_CTX_set_default_read_buffer_len(c, 64 * 1024);

  X509_STORE* store = SSL_CTX_get_cert_store(c);
  for (auto& ca : cas) {
    if (X509_STORE_add_cert(store, ca.get()) != 1) return Internal("trust " + ca_path + ": " + ossl::DrainErrors());
    if (role == TlsRole::kServer) SSL_CTX_add_client_CA(c, ca.get());
  }
  if (SSL_CTX_use_certificate(c, certs.front().get()) != 1) {
    return FailedPrecondition("use certificate " + cert_path + ": " + ossl::DrainErrors());
  }
  if (SSL_CTX_use_PrivateKey(c, key.get()) != 1 || SSL_CTX_check_private_key(c) != 1) {
    ERR_clear_error();
    return FailedPrecondition("key " + key_path + " does not match certificate " + cert_path + ": " + issue_hint);
  }
  CONTINUUM_RETURN_IF_ERROR(CheckOwnCertificate(store, certs.front().get(), cert_path, ca_path));

  SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, VerifyPeerCallback);
  // No resumption: every connection is fully authenticated. The server still
  // sends one ticket, because it only does so after accepting the client's
  // certificate; Dial waits for it to know it was accepted (see dial.cc).
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  if (role == TlsRole::kServer) {
    SSL_CTX_set_num_tickets(c, 1);
    static const unsigned char kSessionContext[] = "continuum";
    SSL_CTX_set_session_id_context(c, kSessionContext, sizeof(kSessionContext) - 1);
  }

  TlsIdentity identity{
      .name = options.name, .pki_dir = dir, .not_after = ossl::AsnTimeToEpoch(X509_get0_notAfter(certs.front().get()))};
  if (identity.not_after != 0 && identity.not_after <= time(nullptr)) {
    Logger("net")->warn("certificate {} expired on {}: peers will refuse it; {}", cert_path,
                        ossl::FormatEpoch(identity.not_after), issue_hint);
  }
  return std::unique_ptr<TlsContext>(new TlsContext(std::move(ctx), std::move(identity), role));
}

Result<ossl::SslPtr> TlsContext::NewSession(int fd, const std::string& expected_peer) const {
  ERR_clear_error();
  ossl::SslPtr ssl(SSL_new(ctx_.get()));
  if (!ssl) return Internal("create tls session: " + ossl::DrainErrors());
  BIO* bio = NewSocketBio(fd);
  if (bio == nullptr) return Internal("create socket bio: " + ossl::DrainErrors());
  SSL_set_bio(ssl.get(), bio, bio);  // one BIO for both directions: SSL owns one reference
  if (!AttachPeerVerification(ssl.get(), expected_peer)) return Internal("attach verification state");
  if (role_ == TlsRole::kServer) {
    SSL_set_accept_state(ssl.get());
  } else {
    SSL_set_connect_state(ssl.get());
  }
  return ssl;
}

}  // namespace continuum::net
