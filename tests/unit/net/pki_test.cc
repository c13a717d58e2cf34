// Tests continuum::net PkiInit, PkiIssue and ReadCertInfo against OpenSSL's own parsing.
#include "continuum/net/pki.h"

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <ctime>

#include "continuum/io/file.h"
#include "net/net_test_util.h"

namespace continuum::net {
namespace {

using testing::TempDir;

mode_t Mode(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 0777;
}

X509* LoadCert(const std::string& path) {
  FILE* f = fopen(path.c_str(), "r");
  if (f == nullptr) return nullptr;
  X509* cert = PEM_read_X509(f, nullptr, nullptr, nullptr);
  fclose(f);
  return cert;
}

TEST(PkiTest, InitCreatesCaWithTenYearsAndPrivateKey) {
  TempDir tmp;
  std::string dir = tmp.Sub("pki");  // created by PkiInit
  ASSERT_TRUE(PkiInit(dir).ok());
  EXPECT_EQ(Mode(dir), 0700u);
  EXPECT_EQ(Mode(dir + "/ca.key"), 0600u);
  EXPECT_EQ(Mode(dir + "/ca.crt"), 0644u);

  auto info = ReadCertInfo(dir + "/ca.crt");
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->subject_cn.rfind("continuum site CA ", 0), 0u) << info->subject_cn;
  EXPECT_NE(info->issuer.find(info->subject_cn), std::string::npos);
  EXPECT_EQ(info->fingerprint_sha256.size(), 64u);
  int64_t years10 = 3650LL * 86400;
  EXPECT_GE(info->not_after - info->not_before, years10);
  EXPECT_LE(info->not_before, time(nullptr));

  X509* ca = LoadCert(dir + "/ca.crt");
  ASSERT_NE(ca, nullptr);
  EXPECT_EQ(X509_get_version(ca), X509_VERSION_3);
  EXPECT_EQ(X509_check_ca(ca), 1);
  EXPECT_TRUE(X509_get_key_usage(ca) & KU_KEY_CERT_SIGN);
  EXPECT_EQ(X509_check_issued(ca, ca), X509_V_OK);  // self-signed
  X509_free(ca);
}

TEST(PkiTest, InitRefusesToOverwriteCa) {
  TempDir tmp;
  ASSERT_TRUE(PkiInit(tmp.path()).ok());
  auto before = ReadCertInfo(tmp.Sub("ca.crt"));
  ASSERT_TRUE(before.ok());
  Status st = PkiInit(tmp.path());
  EXPECT_EQ(st.code(), StatusCode::kAlreadyExists);
  EXPECT_NE(st.message().find("already exists"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(tmp.path()), std::string::npos) << st.message();
  auto after = ReadCertInfo(tmp.Sub("ca.crt"));
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(before->fingerprint_sha256, after->fingerprint_sha256);

  // A half-finished init (only the key) is refused too, not silently completed.
  TempDir tmp2;
  ASSERT_TRUE(io::WriteFileAtomic(tmp2.Sub("ca.key"), "x").ok());
  EXPECT_EQ(PkiInit(tmp2.path()).code(), StatusCode::kAlreadyExists);
}

TEST(PkiTest, IssueWritesCertificateSignedByCa) {
  TempDir tmp;
  ASSERT_TRUE(PkiInit(tmp.path()).ok());
  Status st = PkiIssue(tmp.path(), "agent-1.example_a");
  ASSERT_TRUE(st.ok()) << st.ToString();
  std::string crt = tmp.Sub("agent-1.example_a.crt");
  EXPECT_EQ(Mode(tmp.Sub("agent-1.example_a.key")), 0600u);
  EXPECT_EQ(Mode(crt), 0644u);

  auto info = ReadCertInfo(crt);
  ASSERT_TRUE(info.ok());
  auto ca_info = ReadCertInfo(tmp.Sub("ca.crt"));
  ASSERT_TRUE(ca_info.ok());
  EXPECT_EQ(info->subject_cn, "agent-1.example_a");
  EXPECT_NE(info->issuer.find(ca_info->subject_cn), std::string::npos) << info->issuer;
  int64_t days = (info->not_after - time(nullptr)) / 86400;
  EXPECT_GE(days, 824);
  EXPECT_LE(days, 825);

  X509* ca = LoadCert(tmp.Sub("ca.crt"));
  X509* cert = LoadCert(crt);
  ASSERT_NE(ca, nullptr);
  ASSERT_NE(cert, nullptr);
  EXPECT_EQ(X509_verify(cert, X509_get0_pubkey(ca)), 1);
  EXPECT_EQ(X509_check_issued(ca, cert), X509_V_OK);
  EXPECT_EQ(X509_check_ca(cert), 0);
  uint32_t xku = X509_get_extended_key_usage(cert);
  EXPECT_TRUE(xku & XKU_SSL_SERVER);
  EXPECT_TRUE(xku & XKU_SSL_CLIENT);
  auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  ASSERT_NE(sans, nullptr);
  ASSERT_EQ(sk_GENERAL_NAME_num(sans), 1);
  GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans, 0);
  ASSERT_EQ(gn->type, GEN_DNS);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.dNSName))), "agent-1.example_a");
  GENERAL_NAMES_free(sans);
  X509_free(cert);
  X509_free(ca);
}

TEST(PkiTest, IssueValidatesName) {
  TempDir tmp;
  ASSERT_TRUE(PkiInit(tmp.path()).ok());
  for (const std::string& bad :
       std::vector<std::string>{"", "a/b", "../x", "..", ".hidden", "-flag", "ca", "a b", "ü", std::string(65, 'a')}) {
    Status st = PkiIssue(tmp.path(), bad);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << "'" << bad << "'";
  }
  EXPECT_TRUE(PkiIssue(tmp.path(), std::string(64, 'a')).ok());
  EXPECT_EQ(PkiIssue(tmp.path(), "x", 0).code(), StatusCode::kInvalidArgument);
}

TEST(PkiTest, IssueWithoutCaSaysHowToCreateIt) {
  TempDir tmp;
  Status st = PkiIssue(tmp.path(), "agent1");
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("continuum pki init --dir " + tmp.path()), std::string::npos) << st.message();
}

TEST(PkiTest, NegativeDaysIssuesExpiredCertificate) {
  TempDir tmp;
  ASSERT_TRUE(PkiInit(tmp.path()).ok());
  ASSERT_TRUE(PkiIssue(tmp.path(), "old", -1).ok());
  auto info = ReadCertInfo(tmp.Sub("old.crt"));
  ASSERT_TRUE(info.ok());
  EXPECT_LT(info->not_after, time(nullptr) - 3600);
  EXPECT_LT(info->not_before, info->not_after);
}

TEST(PkiTest, IssueAgainRenews) {
  TempDir tmp;
  ASSERT_TRUE(PkiInit(tmp.path()).ok());
  ASSERT_TRUE(PkiIssue(tmp.path(), "agent1", -1).ok());
  auto old_info = ReadCertInfo(tmp.Sub("agent1.crt"));
  ASSERT_TRUE(PkiIssue(tmp.path(), "agent1").ok());
  auto new_info = ReadCertInfo(tmp.Sub("agent1.crt"));
  ASSERT_TRUE(old_info.ok() && new_info.ok());
  EXPECT_NE(old_info->fingerprint_sha256, new_info->fingerprint_sha256);
  EXPECT_GT(new_info->not_after, time(nullptr));
  EXPECT_EQ(Mode(tmp.Sub("agent1.key")), 0600u);
}

TEST(PkiTest, ReadCertInfoReportsMissingAndGarbage) {
  TempDir tmp;
  EXPECT_EQ(ReadCertInfo(tmp.Sub("none.crt")).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(io::WriteFileAtomic(tmp.Sub("junk.crt"), "not a certificate").ok());
  auto junk = ReadCertInfo(tmp.Sub("junk.crt"));
  EXPECT_EQ(junk.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(junk.status().message().find("junk.crt"), std::string::npos);
}

}  // namespace
}  // namespace continuum::net
