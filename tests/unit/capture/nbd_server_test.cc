// Tests for capture/nbd_server: real NBD clients (nbdinfo, nbdcopy, qemu-io)
// run as subprocesses against an in-process server exporting memory targets.

#include "continuum/capture/nbd_server.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "capture/nbd_memory_target.h"
#include "capture/nbd_test_util.h"

namespace continuum::capture {
namespace {

using nbd_test::CommandResult;
using nbd_test::NbdMemoryTarget;
using nbd_test::RawNbdClient;
using nbd_test::RunCommand;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint16_t kRead = 0, kWrite = 1, kDisc = 2, kFlush = 3, kTrim = 4, kWriteZeroes = 6;
constexpr uint16_t kFua = 1;

class NbdServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    target_ = std::make_shared<NbdMemoryTarget>(64 * kMiB);
    auto server = NbdServer::Start({.listen = "unix:" + socket_path_});
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
    ASSERT_TRUE(server_->AddExport("disk0", target_).ok());
  }

  std::string Uri(const std::string& name = "") const { return "nbd+unix:///" + name + "?socket=" + socket_path_; }

  // Connects a raw client and completes NBD_OPT_GO on `name`.
  std::unique_ptr<RawNbdClient> Attach(const std::string& name = "") {
    auto client = std::make_unique<RawNbdClient>(socket_path_);
    EXPECT_TRUE(client->connected());
    EXPECT_EQ(client->Go(name), 1u) << "handshake for export '" << name << "'";
    return client;
  }

  nbd_test::ScratchDir dir_;  // declared first: removed after the server stops
  std::string socket_path_ = dir_.File("nbd.sock");
  std::shared_ptr<NbdMemoryTarget> target_;
  std::unique_ptr<NbdServer> server_;
};

std::string Describe(const CommandResult& r) {
  return "exit " + std::to_string(r.exit_code) + (r.timed_out ? " (timed out)" : "") + ", output:\n" + r.output;
}

TEST(NbdServerStartTest, RejectsMalformedAddresses) {
  EXPECT_EQ(NbdServer::Start({.listen = "no-port"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(NbdServer::Start({.listen = "unix:"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(NbdServer::Start({.listen = "127.0.0.1:http"}).status().code(), StatusCode::kInvalidArgument);
}

TEST(NbdServerStartTest, TcpEphemeralPortServesNbdinfo) {
  auto server = NbdServer::Start({.listen = "127.0.0.1:0"});
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  std::string address = (*server)->Address();
  ASSERT_TRUE(address.starts_with("127.0.0.1:")) << address;
  EXPECT_NE(address, "127.0.0.1:0");
  ASSERT_TRUE((*server)->AddExport("tcpdisk", std::make_shared<NbdMemoryTarget>(kMiB)).ok());
  auto r = RunCommand({"nbdinfo", "--size", "nbd://" + address + "/tcpdisk"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.output, "1048576\n");
}

TEST_F(NbdServerTest, NbdinfoReportsSizeFlagsAndBlockSizes) {
  auto r = RunCommand({"nbdinfo", "--json", Uri()});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  auto json = nlohmann::json::parse(r.output, nullptr, false);
  ASSERT_FALSE(json.is_discarded()) << r.output;
  const auto& e = json["exports"][0];
  EXPECT_EQ(e["export-size"], 64 * kMiB);
  EXPECT_EQ(e["is_read_only"], false);
  EXPECT_EQ(e["can_flush"], true);
  EXPECT_EQ(e["can_fua"], true);
  EXPECT_EQ(e["can_trim"], true);
  EXPECT_EQ(e["can_zero"], true);
  EXPECT_EQ(e["can_multi_conn"], true);
  EXPECT_EQ(e["block_size_minimum"], 1);
  EXPECT_EQ(e["block_size_preferred"], 4096);
  EXPECT_EQ(e["block_size_maximum"], 32 * kMiB);
}

TEST_F(NbdServerTest, ListsExportsAndNeedsANameOnceThereAreTwo) {
  ASSERT_TRUE(server_->AddExport("disk1", std::make_shared<NbdMemoryTarget>(kMiB, true)).ok());
  EXPECT_EQ(server_->AddExport("disk1", target_).code(), StatusCode::kAlreadyExists);
  auto list = RunCommand({"nbdinfo", "--list", "--json", Uri()});
  ASSERT_EQ(list.exit_code, 0) << Describe(list);
  EXPECT_NE(list.output.find("\"disk0\""), std::string::npos) << list.output;
  EXPECT_NE(list.output.find("\"disk1\""), std::string::npos) << list.output;

  auto named = RunCommand({"nbdinfo", "--is", "read-only", Uri("disk1")});
  EXPECT_EQ(named.exit_code, 0) << Describe(named);
  auto unnamed = RunCommand({"nbdinfo", "--size", Uri()});
  EXPECT_NE(unnamed.exit_code, 0);
  EXPECT_NE(unnamed.output.find("no export named ''"), std::string::npos) << unnamed.output;
}

TEST_F(NbdServerTest, NbdcopyRoundTripsRandom64MiB) {
  std::vector<uint8_t> data(64 * kMiB);
  std::mt19937_64 rng(42);
  for (size_t i = 0; i < data.size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(&data[i], &v, 8);
  }
  std::string in = dir_.File("in.img"), out = dir_.File("out.img");
  std::ofstream(in, std::ios::binary).write(reinterpret_cast<const char*>(data.data()), data.size());

  auto up = RunCommand({"nbdcopy", "--flush", "--connections=4", in, Uri()});
  ASSERT_EQ(up.exit_code, 0) << Describe(up);
  EXPECT_TRUE(target_->Snapshot() == data) << "export differs from the uploaded file";
  EXPECT_GT(target_->flushes.load(), 0u);

  auto down = RunCommand({"nbdcopy", "--connections=4", Uri(), out});
  ASSERT_EQ(down.exit_code, 0) << Describe(down);
  std::ifstream f(out, std::ios::binary);
  std::vector<uint8_t> back((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(back == data) << "downloaded file differs, size " << back.size();
}

TEST_F(NbdServerTest, QemuIoWritesReadsFlushesAndDiscards) {
  target_->Fill(0x11);
  auto r = RunCommand({"qemu-io", "-f", "raw", "-d", "unmap", "-c", "write -P 0xab 0 1M", "-c",
                       "read -P 0xab 0 1M", "-c", "flush", "-c", "discard 0 64k", "-c", "read -P 0 0 64k",
                       Uri("disk0")});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.output.find("failed"), std::string::npos) << r.output;
  EXPECT_GE(target_->flushes.load(), 1u);
  EXPECT_GE(target_->trims.load() + target_->write_zeroes.load(), 1u);
  auto head = target_->Snapshot(0, 64 << 10);
  EXPECT_TRUE(std::all_of(head.begin(), head.end(), [](uint8_t b) { return b == 0; }));
  auto rest = target_->Snapshot(64 << 10, kMiB - (64 << 10));
  EXPECT_TRUE(std::all_of(rest.begin(), rest.end(), [](uint8_t b) { return b == 0xab; }));
  EXPECT_EQ(target_->Snapshot(kMiB, 1)[0], 0x11);
}

TEST_F(NbdServerTest, ReadOnlyExportRefusesWrites) {
  auto ro = std::make_shared<NbdMemoryTarget>(kMiB, /*read_only=*/true);
  ASSERT_TRUE(server_->AddExport("ro", ro).ok());
  auto qemu = RunCommand({"qemu-io", "-f", "raw", "-c", "write -P 0xab 0 4k", Uri("ro")});
  EXPECT_NE(qemu.exit_code, 0) << Describe(qemu);
  EXPECT_NE(qemu.output.find("Permission denied"), std::string::npos) << qemu.output;
  auto reader = RunCommand({"qemu-io", "-r", "-f", "raw", "-c", "read -P 0 0 4k", Uri("ro")});
  EXPECT_EQ(reader.exit_code, 0) << Describe(reader);
  auto copy = RunCommand({"nbdcopy", "/dev/zero", Uri("ro")});
  EXPECT_NE(copy.exit_code, 0) << Describe(copy);

  // A client that ignores the READ_ONLY flag gets EPERM, and the payload is
  // consumed so the next request still works.
  auto client = Attach("ro");
  EXPECT_TRUE(client->flags & 2);  // NBD_FLAG_READ_ONLY
  ASSERT_TRUE(client->SendRequest(kWrite, 1, 0, 4096, 0, std::vector<uint8_t>(4096, 0xab)));
  EXPECT_EQ(client->ReadReply().error, 1u);  // EPERM
  ASSERT_TRUE(client->SendRequest(kTrim, 2, 0, 4096));
  EXPECT_EQ(client->ReadReply().error, 1u);
  ASSERT_TRUE(client->SendRequest(kRead, 3, 0, 4096));
  EXPECT_EQ(client->ReadReply(nullptr, 4096).error, 0u);
  EXPECT_EQ(ro->writes.load(), 0u);
}

TEST_F(NbdServerTest, OutOfRangeRequestsFailAndTheConnectionSurvives) {
  auto client = Attach();
  const uint64_t size = 64 * kMiB;
  ASSERT_TRUE(client->SendRequest(kRead, 1, size - 512, 4096));
  auto reply = client->ReadReply(nullptr, 4096);
  ASSERT_TRUE(reply.ok);
  EXPECT_EQ(reply.error, 22u);  // EINVAL
  EXPECT_EQ(reply.cookie, 1u);
  ASSERT_TRUE(client->SendRequest(kRead, 2, UINT64_MAX - 10, 4096));  // offset + length overflows
  EXPECT_EQ(client->ReadReply().error, 22u);
  ASSERT_TRUE(client->SendRequest(kWrite, 3, size, 8, 0, std::vector<uint8_t>(8)));
  EXPECT_EQ(client->ReadReply().error, 28u);  // ENOSPC, as the spec asks for writes
  ASSERT_TRUE(client->SendRequest(kTrim, 4, size, 1));
  EXPECT_EQ(client->ReadReply().error, 22u);
  ASSERT_TRUE(client->SendRequest(kRead, 5, 33 * kMiB, static_cast<uint32_t>(33 * kMiB)));  // over the cap
  EXPECT_EQ(client->ReadReply().error, 22u);

  target_->Fill(0x5a);
  std::vector<uint8_t> data;
  ASSERT_TRUE(client->SendRequest(kRead, 6, size - 4096, 4096));
  reply = client->ReadReply(&data, 4096);
  ASSERT_TRUE(reply.ok);
  EXPECT_EQ(reply.error, 0u);
  EXPECT_EQ(data, std::vector<uint8_t>(4096, 0x5a));
}

TEST_F(NbdServerTest, OversizedWritePayloadIsConsumed) {
  auto client = Attach();
  const uint32_t length = static_cast<uint32_t>(33 * kMiB);
  ASSERT_TRUE(client->SendRequest(kWrite, 7, 0, length, 0, std::vector<uint8_t>(length, 0xcd)));
  EXPECT_EQ(client->ReadReply().error, 22u);
  ASSERT_TRUE(client->SendRequest(kRead, 8, 0, 512));
  auto reply = client->ReadReply(nullptr, 512);
  EXPECT_TRUE(reply.ok);
  EXPECT_EQ(reply.cookie, 8u);
  EXPECT_EQ(target_->writes.load(), 0u);
}

TEST_F(NbdServerTest, UnknownCommandsAndFlagsGetEinval) {
  auto client = Attach();
  ASSERT_TRUE(client->SendRequest(5, 1, 0, 4096));  // NBD_CMD_CACHE, not advertised
  EXPECT_EQ(client->ReadReply().error, 22u);
  ASSERT_TRUE(client->SendRequest(77, 2, 0, 0));
  EXPECT_EQ(client->ReadReply().error, 22u);
  ASSERT_TRUE(client->SendRequest(kRead, 3, 0, 512, 1 << 2));  // DF without structured replies
  EXPECT_EQ(client->ReadReply().error, 22u);
  ASSERT_TRUE(client->SendRequest(kFlush, 4, 0, 0));
  EXPECT_EQ(client->ReadReply().error, 0u);
}

TEST_F(NbdServerTest, FlushAndFuaReachTheTarget) {
  auto client = Attach();
  ASSERT_TRUE(client->SendRequest(kWrite, 1, 0, 4096, kFua, std::vector<uint8_t>(4096, 1)));
  EXPECT_EQ(client->ReadReply().error, 0u);
  EXPECT_EQ(target_->fua_writes.load(), 1u);
  ASSERT_TRUE(client->SendRequest(kFlush, 2, 0, 0));
  EXPECT_EQ(client->ReadReply().error, 0u);
  EXPECT_EQ(target_->flushes.load(), 1u);
  ASSERT_TRUE(client->SendRequest(kTrim, 3, 0, 4096, kFua));
  EXPECT_EQ(client->ReadReply().error, 0u);
  EXPECT_EQ(target_->trims.load(), 1u);
  EXPECT_EQ(target_->flushes.load(), 2u);  // FUA on trim becomes a flush
  ASSERT_TRUE(client->SendRequest(kWriteZeroes, 4, 0, 8192, kFua | 2 /*NO_HOLE*/));
  EXPECT_EQ(client->ReadReply().error, 0u);
  EXPECT_EQ(target_->write_zeroes.load(), 1u);
  EXPECT_EQ(target_->fua_writes.load(), 2u);
}

TEST_F(NbdServerTest, TargetErrorsMapToNbdErrors) {
  auto client = Attach();
  target_->fail_writes_with = ENOSPC;
  ASSERT_TRUE(client->SendRequest(kWrite, 1, 0, 16, 0, std::vector<uint8_t>(16)));
  EXPECT_EQ(client->ReadReply().error, 28u);
  target_->fail_writes_with = EIO;
  ASSERT_TRUE(client->SendRequest(kWrite, 2, 0, 16, 0, std::vector<uint8_t>(16)));
  EXPECT_EQ(client->ReadReply().error, 5u);
}

TEST_F(NbdServerTest, PipelinedRequestsAreAllAnswered) {
  auto client = Attach();
  constexpr int kCount = 256;
  constexpr uint32_t kLen = 4096;
  for (int i = 0; i < kCount; ++i) {
    ASSERT_TRUE(client->SendRequest(kWrite, 1000 + i, uint64_t{kLen} * i, kLen, 0,
                                    std::vector<uint8_t>(kLen, static_cast<uint8_t>(i))));
  }
  std::set<uint64_t> cookies;
  for (int i = 0; i < kCount; ++i) {
    auto reply = client->ReadReply();
    ASSERT_TRUE(reply.ok);
    EXPECT_EQ(reply.error, 0u);
    cookies.insert(reply.cookie);
  }
  EXPECT_EQ(cookies.size(), size_t{kCount});
  for (int i = 0; i < kCount; ++i) ASSERT_TRUE(client->SendRequest(kRead, i, uint64_t{kLen} * i, kLen));
  cookies.clear();
  for (int i = 0; i < kCount; ++i) {
    std::vector<uint8_t> data;
    auto reply = client->ReadReply(&data, kLen);
    ASSERT_TRUE(reply.ok);
    ASSERT_LT(reply.cookie, uint64_t{kCount});
    EXPECT_EQ(data, std::vector<uint8_t>(kLen, static_cast<uint8_t>(reply.cookie))) << reply.cookie;
    cookies.insert(reply.cookie);
  }
  EXPECT_EQ(cookies.size(), size_t{kCount});
}

TEST_F(NbdServerTest, ClientVanishingMidWriteLeavesServerHealthy) {
  for (int i = 0; i < 5; ++i) {
    auto client = Attach();
    ASSERT_TRUE(client->SendRequest(kWrite, 1, 0, kMiB, 0, std::vector<uint8_t>(100 << 10, 0xee)));
    client->Close();  // 100 KiB of a promised 1 MiB
  }
  auto half_handshake = std::make_unique<RawNbdClient>(socket_path_);
  half_handshake->Close();
  auto r = RunCommand({"nbdinfo", "--size", Uri()});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(target_->writes.load(), 0u);  // a torn payload never reaches the target
}

TEST_F(NbdServerTest, DiscCompletesPendingWritesThenCloses) {
  auto client = Attach();
  ASSERT_TRUE(client->SendRequest(kWrite, 1, 0, 4096, 0, std::vector<uint8_t>(4096, 0x77)));
  ASSERT_TRUE(client->SendRequest(kDisc, 2, 0, 0));
  EXPECT_EQ(client->ReadReply().cookie, 1u);
  EXPECT_TRUE(client->SeesEof());
  EXPECT_EQ(target_->Snapshot(0, 1)[0], 0x77);
}

TEST_F(NbdServerTest, RemoveExportDisconnectsOnlyItsClients) {
  ASSERT_TRUE(server_->AddExport("other", std::make_shared<NbdMemoryTarget>(kMiB)).ok());
  auto doomed = Attach("disk0");
  auto survivor = Attach("other");
  ASSERT_TRUE(server_->RemoveExport("disk0").ok());
  EXPECT_EQ(server_->RemoveExport("disk0").code(), StatusCode::kNotFound);
  EXPECT_TRUE(doomed->SeesEof());
  ASSERT_TRUE(survivor->SendRequest(kRead, 9, 0, 512));
  EXPECT_EQ(survivor->ReadReply(nullptr, 512).cookie, 9u);
  EXPECT_EQ(target_.use_count(), 1) << "server still references the removed target";
  auto r = RunCommand({"nbdinfo", "--size", Uri("disk0")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("no export named 'disk0'"), std::string::npos) << r.output;
}

TEST_F(NbdServerTest, StopDisconnectsClientsAndRemovesSocket) {
  auto client = Attach();
  server_->Stop();
  EXPECT_TRUE(client->SeesEof());
  EXPECT_FALSE(std::filesystem::exists(socket_path_));
  EXPECT_EQ(server_->AddExport("late", target_).code(), StatusCode::kFailedPrecondition);
  server_->Stop();  // idempotent
}

TEST_F(NbdServerTest, LiveSocketIsNotTakenOverButAStaleOneIs) {
  auto second = NbdServer::Start({.listen = "unix:" + socket_path_});
  EXPECT_EQ(second.status().code(), StatusCode::kAlreadyExists);

  std::string stale = dir_.File("stale.sock");
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un sun{.sun_family = AF_UNIX};
  stale.copy(sun.sun_path, sizeof(sun.sun_path) - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sun), sizeof(sun)), 0);
  ::close(fd);  // the file stays, nobody listens
  auto third = NbdServer::Start({.listen = "unix:" + stale});
  EXPECT_TRUE(third.ok()) << third.status().ToString();
}

}  // namespace
}  // namespace continuum::capture
