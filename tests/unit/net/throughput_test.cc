// Measures single-stream throughput of continuum::net connections over
// loopback. Disabled by default (it moves 1 GiB per mode); run with
//   continuum_tests_net --gtest_also_run_disabled_tests --gtest_filter='*Throughput*'
#include <gtest/gtest.h>

#include <chrono>
#include <vector>

#include "continuum/net/tls.h"
#include "net/net_test_util.h"

namespace continuum::net {
namespace {

using testing::DialAndAccept;
using testing::MakePki;
using testing::Options;
using testing::TempDir;

constexpr size_t kTotal = 1ull << 30;
constexpr size_t kChunk = 1 << 20;  // what a batching sender would hand over

double MeasureMiBps(bool insecure) {
  TempDir tmp;
  MakePki(tmp.path(), {"dr1", "agent1"});
  TlsOptions server = Options(tmp.path(), "dr1"), client = Options(tmp.path(), "agent1");
  server.insecure = client.insecure = insecure;
  auto l = Listener::Listen("127.0.0.1:0", server);
  EXPECT_TRUE(l.ok());
  if (!l.ok()) return 0;
  auto r = DialAndAccept(**l, client);
  EXPECT_TRUE(r.client->ok() && r.server->ok());
  if (!r.client->ok() || !r.server->ok()) return 0;
  Connection& tx = ***r.client;
  Connection& rx = ***r.server;

  auto start = std::chrono::steady_clock::now();
  Status recv_status;
  std::thread receiver([&] {
    std::vector<uint8_t> buf(kChunk);
    for (size_t got = 0; got < kTotal && recv_status.ok(); got += kChunk) recv_status = rx.RecvAll(buf);
  });
  std::vector<uint8_t> data(kChunk, 0x5a);
  Status send_status;
  for (size_t sent = 0; sent < kTotal && send_status.ok(); sent += kChunk) send_status = tx.SendAll(data);
  receiver.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TRUE(send_status.ok()) << send_status.ToString();
  EXPECT_TRUE(recv_status.ok()) << recv_status.ToString();
  return (kTotal >> 20) / secs;
}

TEST(NetThroughput, DISABLED_OneGiBLoopbackTlsAndPlaintext) {
  double tls = MeasureMiBps(false);
  double plain = MeasureMiBps(true);
  std::printf("1 GiB single stream over loopback: tls %.0f MiB/s, plaintext %.0f MiB/s (tls/plain %.2f)\n", tls, plain,
              plain > 0 ? tls / plain : 0);
}

}  // namespace
}  // namespace continuum::net
