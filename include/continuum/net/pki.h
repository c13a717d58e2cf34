#pragma once

#include <cstdint>
#include <string>

#include "continuum/common/result.h"

namespace continuum::net {

// The site PKI: one CA per site and one certificate per host or daemon, all as
// PEM files in one directory:
//   <dir>/ca.crt, <dir>/ca.key            the site CA (key 0600)
//   <dir>/<name>.crt, <dir>/<name>.key    an identity signed by the CA (key 0600)
// Keys are EC P-256, unencrypted: a daemon must start unattended, so the key is
// protected by file permissions, not a passphrase.
// Thread-safety: the functions are stateless; concurrent calls on the same
// directory are only safe for different names.

struct CertInfo {
  std::string subject_cn;
  std::string issuer;      // RFC 2253, e.g. "CN=continuum site CA 1f2e3d4c,O=Continuum"
  int64_t not_before = 0;  // seconds since the epoch, UTC
  int64_t not_after = 0;
  std::string fingerprint_sha256;  // lower-case hex of the DER encoding, no separators
};

// Creates the site CA in `dir` (created 0700 if missing): a self-signed X.509 v3
// certificate valid for 10 years with basicConstraints CA:TRUE and keyUsage
// keyCertSign. Never overwrites: kAlreadyExists when ca.crt or ca.key exists.
Status PkiInit(const std::string& dir);

// Issues `dir/<name>.crt` + `dir/<name>.key` signed by the CA in `dir`, with
// CN = name, subjectAltName DNS:name and extendedKeyUsage serverAuth+clientAuth,
// valid for `days` days. Replaces an existing certificate for `name` (renewal).
// `name` must be 1-64 characters of [A-Za-z0-9._-], not start with '.' or '-',
// and not be "ca".
// days < 0 is for tests only: the certificate expired |days| days ago.
Status PkiIssue(const std::string& dir, const std::string& name, int days = 825);

// Reads a PEM certificate for status output.
Result<CertInfo> ReadCertInfo(const std::string& path);

// Whether `name` is acceptable to PkiIssue (and so as a TLS identity).
bool IsValidPkiName(const std::string& name);

}  // namespace continuum::net
