// Tests continuum::net connections under network faults injected by a relay:
// a corrupted byte on the wire and a link cut mid-transfer.
#include <gtest/gtest.h>

#include <vector>

#include "continuum/net/tls.h"
#include "net/net_test_util.h"
#include "net/tcp_proxy.h"

namespace continuum::net {
namespace {

using testing::MakePki;
using testing::Options;
using testing::TcpProxy;
using testing::TempDir;

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MakePki(tmp_.path(), {"dr1", "agent1"});
    auto l = Listener::Listen("127.0.0.1:0", Options(tmp_.path(), "dr1"));
    ASSERT_TRUE(l.ok()) << l.status().ToString();
    listener_ = std::move(l).value();
    std::string address = listener_->Address();
    proxy_ = std::make_unique<TcpProxy>(std::stoi(address.substr(address.rfind(':') + 1)));
    std::optional<Result<std::unique_ptr<Connection>>> accepted;
    std::thread acceptor([&] { accepted.emplace(listener_->Accept()); });
    auto dialed = Dial(proxy_->Address(), Options(tmp_.path(), "agent1"), "dr1");
    acceptor.join();
    ASSERT_TRUE(dialed.ok()) << dialed.status().ToString();
    ASSERT_TRUE(accepted->ok()) << accepted->status().ToString();
    client_ = std::move(dialed).value();
    server_ = std::move(*accepted).value();
  }
  TempDir tmp_;
  std::unique_ptr<Listener> listener_;
  std::unique_ptr<TcpProxy> proxy_;
  std::unique_ptr<Connection> client_, server_;
};

TEST_F(FaultTest, CorruptedByteOnTheWireIsDataLoss) {
  proxy_->CorruptClientByteAt(proxy_->ClientBytes() + 1000);
  std::vector<uint8_t> data(64 << 10, 7), got(64 << 10);
  ASSERT_TRUE(client_->SendAll(data).ok());
  Status st = server_->RecvAll(got);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  EXPECT_NE(st.message().find("agent1"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("failed authentication"), std::string::npos) << st.message();
}

TEST_F(FaultTest, LinkCutMidTransferIsUnavailableOnBothSides) {
  Status send_status, recv_status;
  std::thread sender([&] {
    std::vector<uint8_t> chunk(1 << 20, 1);
    for (int i = 0; i < 1024 && send_status.ok(); ++i) send_status = client_->SendAll(chunk);
  });
  std::vector<uint8_t> got(1 << 20);
  ASSERT_TRUE(server_->RecvAll(got).ok());
  proxy_->Cut();
  while (recv_status.ok()) recv_status = server_->RecvAll(got);
  sender.join();
  EXPECT_EQ(recv_status.code(), StatusCode::kUnavailable) << recv_status.ToString();
  EXPECT_EQ(send_status.code(), StatusCode::kUnavailable) << send_status.ToString();
}

}  // namespace
}  // namespace continuum::net
