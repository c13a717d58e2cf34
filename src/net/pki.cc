#include "continuum/net/pki.h"

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <cerrno>

#include "continuum/io/file.h"
#include "net/openssl_util.h"
#include "net/pem_file.h"

namespace continuum::net {
namespace {

using ossl::PkeyPtr;
using ossl::X509Ptr;

constexpr int kCaDays = 3652;  // 10 years, leap days included
constexpr int kMaxDays = 36500;
// Certificates start an hour in the past so a peer whose clock is a little
// behind does not see them as "not yet valid".
constexpr long kBackdateSeconds = 3600;

std::string CaCertPath(const std::string& dir) { return dir + "/ca.crt"; }
std::string CaKeyPath(const std::string& dir) { return dir + "/ca.key"; }

Result<PkeyPtr> GenerateKey() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return Internal("generate EC P-256 key: " + ossl::DrainErrors());
  return key;
}

Status AddExtension(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, ctx, nid, value);
  if (ext == nullptr) return Internal(std::string("build extension ") + OBJ_nid2sn(nid) + ": " + ossl::DrainErrors());
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (ok != 1) return Internal(std::string("add extension ") + OBJ_nid2sn(nid) + ": " + ossl::DrainErrors());
  return Status::Ok();
}

struct CertSpec {
  std::string cn;
  EVP_PKEY* key = nullptr;  // the subject's key pair
  X509* issuer = nullptr;   // nullptr: self-signed
  EVP_PKEY* issuer_key = nullptr;
  int days = 0;
  bool ca = false;
};

Result<X509Ptr> BuildCertificate(const CertSpec& spec) {
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) return Internal("allocate certificate");

  // 159 random bits: unique without a serial database, and positive in DER.
  std::unique_ptr<BIGNUM, ossl::Deleter> serial(BN_new());
  if (!serial || BN_rand(serial.get(), 159, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr) {
    return Internal("generate serial number: " + ossl::DrainErrors());
  }

  if (spec.days > 0) {
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -kBackdateSeconds);
    X509_time_adj_ex(X509_getm_notAfter(cert.get()), spec.days, 0, nullptr);
  } else {
    // Test-only: a certificate that expired |days| days ago.
    X509_time_adj_ex(X509_getm_notBefore(cert.get()), spec.days - 1, 0, nullptr);
    X509_time_adj_ex(X509_getm_notAfter(cert.get()), spec.days, 0, nullptr);
  }

  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("Continuum"), -1, -1,
                                 0) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(spec.cn.c_str()), -1,
                                 -1, 0) != 1) {
    return Internal("set subject of " + spec.cn + ": " + ossl::DrainErrors());
  }
  X509* issuer = spec.issuer != nullptr ? spec.issuer : cert.get();
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer)) != 1 ||
      X509_set_pubkey(cert.get(), spec.key) != 1) {
    return Internal("set issuer of " + spec.cn + ": " + ossl::DrainErrors());
  }

  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert.get(), nullptr, nullptr, 0);
  // The subject key identifier goes first: a self-signed CA's authority key
  // identifier is computed from it.
  CONTINUUM_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_subject_key_identifier, "hash"));
  CONTINUUM_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always"));
  if (spec.ca) {
    CONTINUUM_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
    CONTINUUM_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign"));
  } else {
    std::string san = "DNS:" + spec.cn;
    CONTINUUM_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE"));
    CONTINUUM_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature"));
    CONTINUUM_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_ext_key_usage, "serverAuth,clientAuth"));
    CONTINUUM_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_subject_alt_name, san.c_str()));
  }

  EVP_PKEY* signer = spec.issuer_key != nullptr ? spec.issuer_key : spec.key;
  if (X509_sign(cert.get(), signer, EVP_sha256()) <= 0) {
    return Internal("sign certificate for " + spec.cn + ": " + ossl::DrainErrors());
  }
  return cert;
}

std::string RandomHex(int bytes) {
  unsigned char buf[16];
  if (RAND_bytes(buf, bytes) != 1) return "0";
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < bytes; ++i) {
    out += kHex[buf[i] >> 4];
    out += kHex[buf[i] & 0xf];
  }
  return out;
}

Result<std::string> ReadPkiFile(const std::string& path, const std::string& missing_hint) {
  auto contents = io::ReadFileToString(path);
  if (!contents.ok() && contents.status().code() == StatusCode::kNotFound) {
    return FailedPrecondition("missing " + path + ": " + missing_hint);
  }
  return contents;
}

}  // namespace

bool IsValidPkiName(const std::string& name) {
  if (name.empty() || name.size() > 64 || name == "ca" || name[0] == '.' || name[0] == '-') return false;
  for (char c : name) {
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Status PkiInit(const std::string& dir) {
  if (dir.empty()) return InvalidArgument("pki directory is empty");
  CONTINUUM_RETURN_IF_ERROR(io::MakeDirs(dir, 0700));
  for (const std::string& path : {CaCertPath(dir), CaKeyPath(dir)}) {
    if (io::PathExists(path)) {
      return AlreadyExists("a site CA already exists in " + dir + " (" + path +
                           "): refusing to overwrite it, every certificate it issued would stop working");
    }
  }
  CONTINUUM_ASSIGN_OR_RETURN(PkeyPtr key, GenerateKey());
  // A random suffix keeps two sites' CAs apart by name, so a certificate from
  // the other site fails as "unknown CA" rather than as a signature mismatch.
  CONTINUUM_ASSIGN_OR_RETURN(
      X509Ptr cert,
      BuildCertificate({.cn = "continuum site CA " + RandomHex(4), .key = key.get(), .days = kCaDays, .ca = true}));
  CONTINUUM_ASSIGN_OR_RETURN(std::string key_pem, ossl::KeyToPem(key.get()));
  CONTINUUM_ASSIGN_OR_RETURN(std::string cert_pem, ossl::CertToPem(cert.get()));
  // Key first: a crash in between leaves ca.key alone, which the check above
  // then refuses, instead of a certificate whose key is lost.
  CONTINUUM_RETURN_IF_ERROR(WritePemFile(CaKeyPath(dir), key_pem, 0600, Overwrite::kNo).WithContext("create site CA"));
  return WritePemFile(CaCertPath(dir), cert_pem, 0644, Overwrite::kNo).WithContext("create site CA");
}

Status PkiIssue(const std::string& dir, const std::string& name, int days) {
  if (!IsValidPkiName(name)) {
    return InvalidArgument("invalid certificate name '" + name +
                           "': use 1-64 characters from [A-Za-z0-9._-], not starting with '.' or '-', "
                           "and not 'ca'");
  }
  if (days == 0 || days > kMaxDays || days < -kMaxDays) {
    return InvalidArgument("invalid validity of " + std::to_string(days) + " days for " + name);
  }
  std::string init_hint = "run 'continuum pki init --dir " + dir + "'";
  CONTINUUM_ASSIGN_OR_RETURN(std::string ca_pem, ReadPkiFile(CaCertPath(dir), init_hint));
  CONTINUUM_ASSIGN_OR_RETURN(std::string ca_key_pem, ReadPkiFile(CaKeyPath(dir), init_hint));
  CONTINUUM_ASSIGN_OR_RETURN(auto ca_certs, ossl::ParseCertificates(ca_pem, CaCertPath(dir)));
  CONTINUUM_ASSIGN_OR_RETURN(PkeyPtr ca_key, ossl::ParsePrivateKey(ca_key_pem, CaKeyPath(dir)));
  // ca.crt may hold several CAs (during a CA change); sign with the one whose key we hold.
  X509* ca = nullptr;
  for (auto& c : ca_certs) {
    if (X509_check_private_key(c.get(), ca_key.get()) == 1) {
      ca = c.get();
      break;
    }
  }
  ERR_clear_error();
  if (ca == nullptr)
    return FailedPrecondition(CaKeyPath(dir) + " does not match any certificate in " + CaCertPath(dir));
  int64_t ca_not_after = ossl::AsnTimeToEpoch(X509_get0_notAfter(ca));
  if (ca_not_after <= time(nullptr)) {
    return FailedPrecondition("site CA in " + dir + " expired on " + ossl::FormatEpoch(ca_not_after));
  }

  CONTINUUM_ASSIGN_OR_RETURN(PkeyPtr key, GenerateKey());
  CONTINUUM_ASSIGN_OR_RETURN(
      X509Ptr cert,
      BuildCertificate({.cn = name, .key = key.get(), .issuer = ca, .issuer_key = ca_key.get(), .days = days}));
  CONTINUUM_ASSIGN_OR_RETURN(std::string key_pem, ossl::KeyToPem(key.get()));
  CONTINUUM_ASSIGN_OR_RETURN(std::string cert_pem, ossl::CertToPem(cert.get()));
  // Renewal replaces both files; a crash in between leaves a key that does not
  // match the certificate, which loading reports, and issuing again repairs.
  std::string context = "issue certificate for " + name;
  CONTINUUM_RETURN_IF_ERROR(
      WritePemFile(dir + "/" + name + ".key", key_pem, 0600, Overwrite::kYes).WithContext(context));
  return WritePemFile(dir + "/" + name + ".crt", cert_pem, 0644, Overwrite::kYes).WithContext(context);
}

Result<CertInfo> ReadCertInfo(const std::string& path) {
  CONTINUUM_ASSIGN_OR_RETURN(std::string pem, io::ReadFileToString(path));
  CONTINUUM_ASSIGN_OR_RETURN(auto certs, ossl::ParseCertificates(pem, path));
  const X509* cert = certs.front().get();
  return CertInfo{
      .subject_cn = ossl::CommonName(cert),
      .issuer = ossl::NameToString(X509_get_issuer_name(cert)),
      .not_before = ossl::AsnTimeToEpoch(X509_get0_notBefore(cert)),
      .not_after = ossl::AsnTimeToEpoch(X509_get0_notAfter(cert)),
      .fingerprint_sha256 = ossl::Sha256Fingerprint(cert),
  };
}

}  // namespace continuum::net
