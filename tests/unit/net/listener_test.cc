// Tests continuum::net::Listener and Dial against misbehaving peers: garbage,
// silence, refusal, and Close from another thread.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "continuum/net/tls.h"
#include "net/net_test_util.h"

namespace continuum::net {
namespace {

using testing::DialAndAccept;
using testing::MakePki;
using testing::Options;
using testing::TempDir;

// A plain TCP client, for peers that are not Continuum.
int RawConnect(const std::string& address) {
  int port = std::stoi(address.substr(address.rfind(':') + 1));
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  return fd;
}

class ListenerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MakePki(tmp_.path(), {"dr1", "agent1"});
    server_options_ = Options(tmp_.path(), "dr1");
    server_options_.connect_timeout_ms = 1000;
    auto l = Listener::Listen("127.0.0.1:0", server_options_);
    ASSERT_TRUE(l.ok()) << l.status().ToString();
    listener_ = std::move(l).value();
  }
  TempDir tmp_;
  TlsOptions server_options_;
  std::unique_ptr<Listener> listener_;
};

TEST_F(ListenerTest, AddressHasTheActualPort) {
  EXPECT_EQ(listener_->Address().rfind("127.0.0.1:", 0), 0u);
  EXPECT_NE(listener_->Address(), "127.0.0.1:0");
}

TEST_F(ListenerTest, GarbageIsAnErrorAndTheListenerKeepsAccepting) {
  int fd = RawConnect(listener_->Address());
  const char junk[] = "GARBAGE\x01\x02\x03 not a tls client hello at all....................";
  ASSERT_GT(::write(fd, junk, sizeof(junk)), 0);
  auto bad = listener_->Accept();
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("127.0.0.1:"), std::string::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("does not speak tls"), std::string::npos) << bad.status().message();
  ::close(fd);

  // An HTTP request (a browser or a scanner) is refused the same way.
  fd = RawConnect(listener_->Address());
  const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_GT(::write(fd, http, sizeof(http) - 1), 0);
  EXPECT_FALSE(listener_->Accept().ok());
  ::close(fd);

  auto good = DialAndAccept(*listener_, Options(tmp_.path(), "agent1"));
  EXPECT_TRUE(good.client->ok()) << good.client->status().ToString();
  EXPECT_TRUE(good.server->ok()) << good.server->status().ToString();
}

TEST_F(ListenerTest, ClientThatConnectsAndClosesIsAnError) {
  ::close(RawConnect(listener_->Address()));
  auto r = listener_->Accept();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("closed the connection during the tls handshake"), std::string::npos)
      << r.status().message();
}

TEST_F(ListenerTest, SilentClientTimesOutWithoutBlockingOthers) {
  int silent = RawConnect(listener_->Address());
  // A good client that arrives after the silent one is accepted first: were
  // handshakes sequential, this Accept would return the silent one's timeout.
  auto good = DialAndAccept(*listener_, Options(tmp_.path(), "agent1"));
  ASSERT_TRUE(good.server->ok()) << good.server->status().ToString();
  ASSERT_TRUE(good.client->ok());

  auto timed_out = listener_->Accept();
  ASSERT_FALSE(timed_out.ok());
  EXPECT_EQ(timed_out.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(timed_out.status().message().find("tls handshake with 127.0.0.1:"), std::string::npos);
  EXPECT_NE(timed_out.status().message().find("timed out after 1000 ms"), std::string::npos)
      << timed_out.status().message();
  ::close(silent);
}

TEST_F(ListenerTest, CloseUnblocksAccept) {
  Status st;
  std::thread acceptor([&] { st = listener_->Accept().status(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  listener_->Close();
  acceptor.join();
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("closed"), std::string::npos) << st.message();
  EXPECT_FALSE(listener_->Accept().ok());
}

TEST_F(ListenerTest, DialTimesOutAgainstAServerThatNeverAnswers) {
  // A socket that listens but never accepts: the kernel completes the TCP
  // handshake, then nothing ever answers the ClientHello.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  std::string address = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));

  TlsOptions options = Options(tmp_.path(), "agent1");
  options.connect_timeout_ms = 300;
  auto start = std::chrono::steady_clock::now();
  auto conn = Dial(address, options);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(conn.ok());
  EXPECT_EQ(conn.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(conn.status().message().find("tls handshake with " + address + " timed out after 300 ms"),
            std::string::npos)
      << conn.status().message();
  EXPECT_GE(took, std::chrono::milliseconds(290));
  EXPECT_LT(took, std::chrono::seconds(2));
  ::close(fd);
}

TEST_F(ListenerTest, DialToAClosedPortIsUnavailable) {
  std::string address = listener_->Address();
  listener_.reset();
  auto conn = Dial(address, Options(tmp_.path(), "agent1"));
  ASSERT_FALSE(conn.ok());
  EXPECT_EQ(conn.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(conn.status().message().find("connect to " + address), std::string::npos) << conn.status().message();
}

TEST_F(ListenerTest, BadAddressesAreInvalidArguments) {
  for (const char* bad : {"nocolon", "1.2.3.4:", "1.2.3.4:99999", "::1:80", "[::1]80", "host:port"}) {
    auto l = Listener::Listen(bad, server_options_);
    EXPECT_EQ(l.status().code(), StatusCode::kInvalidArgument) << bad;
    auto d = Dial(bad, Options(tmp_.path(), "agent1"));
    EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST_F(ListenerTest, Ipv6Loopback) {
  auto l = Listener::Listen("[::1]:0", server_options_);
  if (!l.ok()) GTEST_SKIP() << "no ipv6 loopback: " << l.status().ToString();
  EXPECT_EQ((*l)->Address().rfind("[::1]:", 0), 0u) << (*l)->Address();
  auto r = DialAndAccept(**l, Options(tmp_.path(), "agent1"), "dr1");
  ASSERT_TRUE(r.client->ok()) << r.client->status().ToString();
  ASSERT_TRUE(r.server->ok()) << r.server->status().ToString();
  EXPECT_EQ((**r.server)->PeerName(), "agent1");
}

TEST_F(ListenerTest, AnyAddress) {
  auto l = Listener::Listen("0.0.0.0:0", server_options_);
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  std::string address = (*l)->Address();
  EXPECT_EQ(address.rfind("0.0.0.0:", 0), 0u);
  std::string port = address.substr(address.rfind(':') + 1);
  std::optional<Result<std::unique_ptr<Connection>>> accepted;
  std::thread acceptor([&] { accepted.emplace((*l)->Accept()); });
  auto conn = Dial("localhost:" + port, Options(tmp_.path(), "agent1"));
  acceptor.join();
  EXPECT_TRUE(conn.ok()) << conn.status().ToString();
  EXPECT_TRUE(accepted->ok()) << accepted->status().ToString();
}

}  // namespace
}  // namespace continuum::net
