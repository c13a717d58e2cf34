// Tests continuum::net::Connection data transfer over real loopback sockets:
// full-duplex bulk transfer, peer close, Shutdown from another thread, timeouts.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "continuum/net/tls.h"
#include "net/net_test_util.h"
#include "net/socket_connection.h"

namespace continuum::net {
namespace {

using testing::DialAndAccept;
using testing::MakePki;
using testing::Options;
using testing::TempDir;

// A deterministic byte stream so the receiver can check every byte it gets.
class Pattern {
 public:
  explicit Pattern(uint64_t seed) : state_(seed | 1) {}
  void Fill(std::span<uint8_t> out) {
    for (auto& b : out) {
      state_ ^= state_ << 13;
      state_ ^= state_ >> 7;
      state_ ^= state_ << 17;
      b = static_cast<uint8_t>(state_);
    }
  }

 private:
  uint64_t state_;
};

constexpr size_t kDuplexBytes = 64ull << 20;
constexpr size_t kChunk = 1 << 20;

// Sends kDuplexBytes of Pattern(seed) in chunks of varied size.
Status SendPattern(Connection& conn, uint64_t seed) {
  Pattern p(seed);
  std::vector<uint8_t> buf(kChunk);
  size_t sent = 0, i = 0;
  while (sent < kDuplexBytes) {
    size_t n = std::min(kDuplexBytes - sent, kChunk - (i++ % 7) * 4099);
    p.Fill({buf.data(), n});
    CONTINUUM_RETURN_IF_ERROR(conn.SendAll({buf.data(), n}));
    sent += n;
  }
  return Status::Ok();
}

// Receives kDuplexBytes in chunks unrelated to the sender's and checks them.
Status RecvPattern(Connection& conn, uint64_t seed) {
  Pattern p(seed);
  std::vector<uint8_t> got(kChunk), want(kChunk);
  size_t received = 0, i = 0;
  while (received < kDuplexBytes) {
    size_t n = std::min(kDuplexBytes - received, kChunk - (i++ % 5) * 65537);
    CONTINUUM_RETURN_IF_ERROR(conn.RecvAll({got.data(), n}));
    p.Fill({want.data(), n});
    if (memcmp(got.data(), want.data(), n) != 0) return DataLoss("mismatch at " + std::to_string(received));
    received += n;
  }
  return Status::Ok();
}

class ConnectionTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    MakePki(tmp_.path(), {"dr1", "agent1"});
    server_options_ = Options(tmp_.path(), "dr1");
    client_options_ = Options(tmp_.path(), "agent1");
    server_options_.insecure = client_options_.insecure = GetParam();
    auto l = Listener::Listen("127.0.0.1:0", server_options_);
    ASSERT_TRUE(l.ok()) << l.status().ToString();
    listener_ = std::move(l).value();
    auto r = DialAndAccept(*listener_, client_options_);
    ASSERT_TRUE(r.client->ok()) << r.client->status().ToString();
    ASSERT_TRUE(r.server->ok()) << r.server->status().ToString();
    client_ = std::move(*r.client).value();
    server_ = std::move(*r.server).value();
  }
  TempDir tmp_;
  TlsOptions server_options_, client_options_;
  std::unique_ptr<Listener> listener_;
  std::unique_ptr<Connection> client_, server_;
};

INSTANTIATE_TEST_SUITE_P(TlsAndInsecure, ConnectionTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "insecure" : "tls"; });

TEST_P(ConnectionTest, FullDuplex64MiBEachWayOnBothEnds) {
  Status c_send, c_recv, s_send, s_recv;
  std::thread t1([&] { c_send = SendPattern(*client_, 1); });
  std::thread t2([&] { c_recv = RecvPattern(*client_, 2); });
  std::thread t3([&] { s_send = SendPattern(*server_, 2); });
  std::thread t4([&] { s_recv = RecvPattern(*server_, 1); });
  t1.join();
  t2.join();
  t3.join();
  t4.join();
  EXPECT_TRUE(c_send.ok()) << c_send.ToString();
  EXPECT_TRUE(c_recv.ok()) << c_recv.ToString();
  EXPECT_TRUE(s_send.ok()) << s_send.ToString();
  EXPECT_TRUE(s_recv.ok()) << s_recv.ToString();
}

// TLS 1.3 key updates (normally every 64 GiB) while both directions run full:
// the receiver of a KeyUpdate must never need to write, or a saturated
// full-duplex link could deadlock.
TEST_P(ConnectionTest, FullDuplexWithFrequentKeyUpdates) {
  if (GetParam()) GTEST_SKIP() << "tls only";
  for (Connection* c : {client_.get(), server_.get()}) {
    auto* sc = dynamic_cast<SocketConnection*>(c);
    ASSERT_NE(sc, nullptr);
    sc->SetKeyUpdateIntervalForTesting(256 << 10);
  }
  Status c_send, c_recv, s_send, s_recv;
  std::thread t1([&] { c_send = SendPattern(*client_, 3); });
  std::thread t2([&] { c_recv = RecvPattern(*client_, 4); });
  std::thread t3([&] { s_send = SendPattern(*server_, 4); });
  std::thread t4([&] { s_recv = RecvPattern(*server_, 3); });
  t1.join();
  t2.join();
  t3.join();
  t4.join();
  EXPECT_TRUE(c_send.ok()) << c_send.ToString();
  EXPECT_TRUE(c_recv.ok()) << c_recv.ToString();
  EXPECT_TRUE(s_send.ok()) << s_send.ToString();
  EXPECT_TRUE(s_recv.ok()) << s_recv.ToString();
}

// Readable() tells the receiver whether more is already there (the replica
// flushes once for several frames while it is): false on an idle connection,
// true once the peer sent, false again when everything was read. With TLS the
// second message sits in OpenSSL's buffer after the first was read.
TEST_P(ConnectionTest, ReadableSaysWhetherBytesAreWaiting) {
  EXPECT_FALSE(server_->Readable());
  const uint8_t two[2] = {1, 2};
  ASSERT_TRUE(client_->SendAll({two, 1}).ok());
  ASSERT_TRUE(client_->SendAll({two + 1, 1}).ok());
  bool readable = false;
  for (int i = 0; i < 200 && !readable; ++i) {
    readable = server_->Readable();
    if (!readable) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(readable);
  uint8_t got[2] = {};
  ASSERT_TRUE(server_->RecvAll({got, 1}).ok());
  for (int i = 0; i < 200 && !server_->Readable(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_TRUE(server_->Readable()) << "the second byte is waiting";
  ASSERT_TRUE(server_->RecvAll({got + 1, 1}).ok());
  EXPECT_EQ(got[0], 1);
  EXPECT_EQ(got[1], 2);
  EXPECT_FALSE(server_->Readable());
}

TEST_P(ConnectionTest, PeerCloseEndsRecvWithClosed) {
  const uint8_t half[3] = {1, 2, 3};
  ASSERT_TRUE(server_->SendAll(half).ok());
  server_.reset();
  uint8_t got[8];
  Status st = client_->RecvAll(got);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("connection to "), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(" closed"), std::string::npos) << st.message();
  // The connection is dead; later calls repeat the first error.
  EXPECT_EQ(client_->RecvAll(got).message(), st.message());
  EXPECT_FALSE(client_->SendAll(half).ok());
}

TEST_P(ConnectionTest, ShutdownFromAnotherThreadUnblocksRecv) {
  std::atomic<bool> done{false};
  Status st;
  std::thread receiver([&] {
    uint8_t buf[16];
    st = client_->RecvAll(buf);
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(done.load());
  auto start = std::chrono::steady_clock::now();
  client_->Shutdown();
  receiver.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("shut down"), std::string::npos) << st.message();
  // The peer sees the connection end.
  uint8_t b;
  EXPECT_EQ(server_->RecvAll({&b, 1}).code(), StatusCode::kUnavailable);
}

TEST_P(ConnectionTest, ShutdownUnblocksSendToAPeerThatDoesNotRead) {
  Status st;
  std::thread sender([&] {
    std::vector<uint8_t> big(64 << 20);
    st = client_->SendAll(big);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  client_->Shutdown();
  sender.join();
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("shut down"), std::string::npos) << st.message();
}

TEST_P(ConnectionTest, RecvTimesOutWithoutData) {
  client_->SetIoTimeout(200);
  uint8_t buf[4];
  auto start = std::chrono::steady_clock::now();
  Status st = client_->RecvAll(buf);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("timed out receiving from "), std::string::npos) << st.message();
  EXPECT_GE(took, std::chrono::milliseconds(190));
  EXPECT_LT(took, std::chrono::seconds(2));
}

TEST_P(ConnectionTest, SendTimesOutWhenPeerStopsReading) {
  client_->SetIoTimeout(300);
  std::vector<uint8_t> big(256 << 20);
  Status st = client_->SendAll(big);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("timed out sending to "), std::string::npos) << st.message();
}

TEST_P(ConnectionTest, SmallMessagesInterleaved) {
  // Request/response ping-pong: many small records in both directions.
  for (uint32_t i = 0; i < 2000; ++i) {
    uint8_t req[4], resp[4];
    memcpy(req, &i, 4);
    ASSERT_TRUE(client_->SendAll(req).ok());
    ASSERT_TRUE(server_->RecvAll(resp).ok());
    ASSERT_EQ(0, memcmp(req, resp, 4));
    ASSERT_TRUE(server_->SendAll(resp).ok());
    ASSERT_TRUE(client_->RecvAll(req).ok());
  }
}

}  // namespace
}  // namespace continuum::net
