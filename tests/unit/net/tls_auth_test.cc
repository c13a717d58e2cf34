// Tests the authentication of continuum::net Dial and Listener: mutual TLS
// with the site CA, and the error each side reports when it is refused.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "continuum/io/file.h"
#include "continuum/net/tls.h"
#include "net/net_test_util.h"

namespace continuum::net {
namespace {

using testing::DialAndAccept;
using testing::MakePki;
using testing::Options;
using testing::TempDir;

#define EXPECT_ERROR_HAS(result, text)                                         \
  do {                                                                         \
    ASSERT_FALSE((result).ok()) << "expected an error containing: " << (text); \
    EXPECT_NE((result).status().message().find(text), std::string::npos)       \
        << "'" << (result).status().message() << "' lacks '" << (text) << "'"; \
  } while (0)

class TlsAuthTest : public ::testing::Test {
 protected:
  void SetUp() override { MakePki(tmp_.path(), {"dr1", "agent1"}); }
  std::unique_ptr<Listener> Listen(const TlsOptions& options) {
    auto l = Listener::Listen("127.0.0.1:0", options);
    EXPECT_TRUE(l.ok()) << l.status().ToString();
    return l.ok() ? std::move(l).value() : nullptr;
  }
  const std::string& dir() const { return tmp_.path(); }
  TempDir tmp_;
};

TEST_F(TlsAuthTest, MutualAuthenticationNamesBothPeers) {
  auto listener = Listen(Options(dir(), "dr1"));
  ASSERT_TRUE(listener);
  auto r = DialAndAccept(*listener, Options(dir(), "agent1"), "dr1");
  ASSERT_TRUE(r.client->ok()) << r.client->status().ToString();
  ASSERT_TRUE(r.server->ok()) << r.server->status().ToString();
  auto& client = **r.client;
  auto& server = **r.server;
  EXPECT_EQ(client->PeerName(), "dr1");
  EXPECT_EQ(server->PeerName(), "agent1");
  EXPECT_EQ(client->PeerAddress(), listener->Address());
  EXPECT_EQ(server->PeerAddress().rfind("127.0.0.1:", 0), 0u);

  const uint8_t ping[] = {'p', 'i', 'n', 'g'};
  uint8_t got[4];
  ASSERT_TRUE(client->SendAll(ping).ok());
  ASSERT_TRUE(server->RecvAll(got).ok());
  EXPECT_EQ(0, memcmp(ping, got, 4));
}

TEST_F(TlsAuthTest, ExpiredClientCertificateIsRefusedOnBothSides) {
  ASSERT_TRUE(PkiIssue(dir(), "agent1", -1).ok());
  auto listener = Listen(Options(dir(), "dr1"));
  ASSERT_TRUE(listener);
  auto r = DialAndAccept(*listener, Options(dir(), "agent1"));
  EXPECT_ERROR_HAS(*r.server, "certificate of agent1 (127.0.0.1:");
  EXPECT_ERROR_HAS(*r.server, "has expired (not after ");
  EXPECT_ERROR_HAS(*r.client, "refused our certificate: certificate of agent1 has expired (not after ");
  EXPECT_ERROR_HAS(*r.client, "run 'continuum pki issue agent1 --dir " + dir() + "'");
  EXPECT_EQ(r.client->status().code(), StatusCode::kFailedPrecondition);

  // The listener keeps working for a good client.
  ASSERT_TRUE(PkiIssue(dir(), "agent1").ok());
  auto again = DialAndAccept(*listener, Options(dir(), "agent1"));
  EXPECT_TRUE(again.client->ok()) << again.client->status().ToString();
  EXPECT_TRUE(again.server->ok()) << again.server->status().ToString();
}

TEST_F(TlsAuthTest, ExpiredServerCertificateIsRefused) {
  ASSERT_TRUE(PkiIssue(dir(), "dr1", -1).ok());
  auto listener = Listen(Options(dir(), "dr1"));
  ASSERT_TRUE(listener);
  auto r = DialAndAccept(*listener, Options(dir(), "agent1"));
  EXPECT_ERROR_HAS(*r.client, "certificate of dr1 (" + listener->Address() + ") has expired (not after ");
  EXPECT_ERROR_HAS(*r.server, "refused our certificate: certificate of dr1 has expired");
}

TEST_F(TlsAuthTest, ClientCertificateFromAnotherCaIsRefused) {
  // The rogue client trusts our CA (so it accepts the server) but its own
  // certificate comes from another site's CA.
  TempDir other;
  MakePki(other.path(), {"agent1"});
  auto ours = io::ReadFileToString(dir() + "/ca.crt");
  auto theirs = io::ReadFileToString(other.Sub("ca.crt"));
  ASSERT_TRUE(ours.ok() && theirs.ok());
  ASSERT_TRUE(io::WriteFileAtomic(other.Sub("ca.crt"), *theirs + *ours).ok());

  auto listener = Listen(Options(dir(), "dr1"));
  ASSERT_TRUE(listener);
  auto r = DialAndAccept(*listener, Options(other.path(), "agent1"));
  EXPECT_ERROR_HAS(*r.server, "certificate of agent1 (127.0.0.1:");
  EXPECT_ERROR_HAS(*r.server, "is not signed by this site's CA");
  EXPECT_ERROR_HAS(*r.client, "refused our certificate: certificate of agent1 is not signed by its site's CA");
}

TEST_F(TlsAuthTest, ServerCertificateFromAnotherCaIsRefused) {
  TempDir other;
  MakePki(other.path(), {"dr1"});
  auto listener = Listen(Options(other.path(), "dr1"));
  ASSERT_TRUE(listener);
  auto r = DialAndAccept(*listener, Options(dir(), "agent1"));
  EXPECT_ERROR_HAS(*r.client, "certificate of dr1 (" + listener->Address() + ") is not signed by this site's CA");
  EXPECT_FALSE(r.server->ok());
}

TEST_F(TlsAuthTest, OwnCertificateFromAnotherCaFailsLocally) {
  TempDir other;
  MakePki(other.path(), {"agent1"});
  ASSERT_TRUE(io::WriteFileAtomic(other.Sub("ca.crt"), *io::ReadFileToString(dir() + "/ca.crt")).ok());
  auto conn = Dial("127.0.0.1:1", Options(other.path(), "agent1"));
  EXPECT_ERROR_HAS(conn, "agent1.crt is not signed by the CA in " + other.Sub("ca.crt"));
}

TEST_F(TlsAuthTest, MissingFilesGiveTheCommandToRun) {
  auto conn = Dial("127.0.0.1:1", Options(dir(), "nobody"));
  EXPECT_ERROR_HAS(
      conn, "missing certificate " + dir() + "/nobody.crt: run 'continuum pki issue nobody --dir " + dir() + "'");
  EXPECT_EQ(conn.status().code(), StatusCode::kFailedPrecondition);

  auto listener = Listener::Listen("127.0.0.1:0", Options(dir(), "dr2"));
  EXPECT_ERROR_HAS(listener, "missing certificate " + dir() + "/dr2.crt: run 'continuum pki issue dr2");

  ASSERT_EQ(::unlink((dir() + "/agent1.key").c_str()), 0);
  auto no_key = Dial("127.0.0.1:1", Options(dir(), "agent1"));
  EXPECT_ERROR_HAS(no_key, "missing key " + dir() + "/agent1.key: run 'continuum pki issue agent1");

  TempDir empty;
  auto no_ca = Dial("127.0.0.1:1", Options(empty.path(), "agent1"));
  EXPECT_ERROR_HAS(no_ca, "missing CA certificate " + empty.Sub("ca.crt"));
}

TEST_F(TlsAuthTest, PeerNameMismatchIsRefused) {
  auto listener = Listen(Options(dir(), "dr1"));
  ASSERT_TRUE(listener);
  auto r = DialAndAccept(*listener, Options(dir(), "agent1"), "dr2");
  EXPECT_ERROR_HAS(*r.client, "peer name mismatch: expected dr2, got dr1");
  EXPECT_ERROR_HAS(*r.server, "refused our certificate (dr1)");
}

// A raw OpenSSL client that trusts the CA but presents no certificate.
TEST_F(TlsAuthTest, ClientWithoutCertificateIsRefused) {
  auto listener = Listen(Options(dir(), "dr1"));
  ASSERT_TRUE(listener);
  std::optional<Result<std::unique_ptr<Connection>>> accepted;
  std::thread acceptor([&] { accepted.emplace(listener->Accept()); });

  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  ASSERT_EQ(SSL_CTX_load_verify_locations(ctx, (dir() + "/ca.crt").c_str(), nullptr), 1);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(listener->Address().substr(10))));
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  EXPECT_EQ(SSL_connect(ssl), 1);  // TLS 1.3: the client finishes first
  char byte;
  EXPECT_LE(SSL_read(ssl, &byte, 1), 0);  // then reads the server's alert
  unsigned long err = ERR_peek_last_error();
  EXPECT_EQ(ERR_GET_REASON(err), SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED) << ERR_error_string(err, nullptr);
  ERR_clear_error();
  acceptor.join();
  EXPECT_ERROR_HAS(*accepted, "peer 127.0.0.1:");
  EXPECT_ERROR_HAS(*accepted, "did not present a client certificate");
  SSL_free(ssl);
  ::close(fd);
  SSL_CTX_free(ctx);
}

TEST_F(TlsAuthTest, InsecureModeIsPlaintextWithoutCertificates) {
  TlsOptions insecure{.insecure = true, .connect_timeout_ms = 5000, .io_timeout_ms = 5000};
  auto listener = Listen(insecure);
  ASSERT_TRUE(listener);

  // A raw TCP client's bytes arrive as they are: no TLS on the wire.
  std::optional<Result<std::unique_ptr<Connection>>> accepted;
  std::thread acceptor([&] { accepted.emplace(listener->Accept()); });
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(listener->Address().substr(10))));
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::write(fd, "plain", 5), 5);
  acceptor.join();
  ASSERT_TRUE(accepted->ok()) << accepted->status().ToString();
  char got[5];
  ASSERT_TRUE((**accepted)->RecvAll({reinterpret_cast<uint8_t*>(got), 5}).ok());
  EXPECT_EQ(std::string(got, 5), "plain");
  EXPECT_EQ((**accepted)->PeerName().rfind("insecure:127.0.0.1:", 0), 0u);
  ::close(fd);

  auto r = DialAndAccept(*listener, insecure);
  ASSERT_TRUE(r.client->ok()) << r.client->status().ToString();
  ASSERT_TRUE(r.server->ok());
  EXPECT_EQ((**r.client)->PeerName(), "insecure:" + listener->Address());
}

TEST_F(TlsAuthTest, InsecureClientAgainstTlsServerIsExplained) {
  auto listener = Listen(Options(dir(), "dr1"));
  ASSERT_TRUE(listener);
  std::optional<Result<std::unique_ptr<Connection>>> accepted;
  std::thread acceptor([&] { accepted.emplace(listener->Accept()); });
  TlsOptions insecure{.insecure = true, .connect_timeout_ms = 5000, .io_timeout_ms = 2000};
  auto conn = Dial(listener->Address(), insecure);
  ASSERT_TRUE(conn.ok()) << conn.status().ToString();
  const uint8_t frame[] = {0, 0, 0, 16, 'h', 'e', 'l', 'l', 'o', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  ASSERT_TRUE((*conn)->SendAll(frame).ok());
  acceptor.join();
  EXPECT_ERROR_HAS(*accepted, "does not speak tls 1.3");
  EXPECT_ERROR_HAS(*accepted, "--insecure");
}

}  // namespace
}  // namespace continuum::net
