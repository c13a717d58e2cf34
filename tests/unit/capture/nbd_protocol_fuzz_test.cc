// Deterministic fuzzing of capture/nbd_protocol and capture/nbd_connection:
// thousands of generated, mutated and random client byte streams are fed to a
// real connection over a socketpair. Every stream must end without a crash or
// hang, the server's output must be well-formed NBD, and (for generated
// streams, where an oracle knows the answer) every invalid option or request
// must get the right error reply or a clean disconnect.

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "capture/nbd_connection.h"
#include "capture/nbd_memory_target.h"
#include "capture/nbd_protocol.h"
#include "capture/nbd_test_util.h"
#include "continuum/common/log.h"

namespace continuum::capture {
namespace {

using nbd_test::Put16;
using nbd_test::Put32;
using nbd_test::Put64;
using Bytes = std::vector<uint8_t>;

constexpr uint64_t kRwSize = 1 << 20, kRoSize = 64 << 10;

// ---- pure parser checks ------------------------------------------------------

TEST(NbdProtocolTest, ValidatesRequestsAgainstGeometry) {
  nbd::ExportGeometry rw{.size = 1 << 20}, ro{.size = 1 << 20, .read_only = true};
  auto req = [](uint16_t type, uint64_t off, uint32_t len, uint16_t flags = 0) {
    return nbd::Request{.flags = flags, .type = type, .offset = off, .length = len};
  };
  EXPECT_EQ(nbd::ValidateRequest(req(nbd::kCmdRead, 0, 1 << 20), rw), 0u);
  EXPECT_EQ(nbd::ValidateRequest(req(nbd::kCmdRead, 1, 1 << 20), rw), nbd::kEinval);
  EXPECT_EQ(nbd::ValidateRequest(req(nbd::kCmdRead, UINT64_MAX, 2), rw), nbd::kEinval);
  EXPECT_EQ(nbd::ValidateRequest(req(nbd::kCmdWrite, 1 << 20, 1), rw), nbd::kEnospc);
  EXPECT_EQ(nbd::ValidateRequest(req(nbd::kCmdWrite, 0, 1), ro), nbd::kEperm);
  EXPECT_EQ(nbd::ValidateRequest(req(nbd::kCmdTrim, 0, 1), ro), nbd::kEperm);
  EXPECT_EQ(nbd::ValidateRequest(req(nbd::kCmdRead, 0, 1), ro), 0u);
  EXPECT_EQ(nbd::ValidateRequest(req(nbd::kCmdFlush, 99, 99), ro), 0u);
  EXPECT_EQ(nbd::ValidateRequest(req(nbd::kCmdWriteZeroes, 0, 8, nbd::kCmdFlagNoHole), rw), 0u);
  EXPECT_EQ(nbd::ValidateRequest(req(nbd::kCmdWrite, 0, 8, nbd::kCmdFlagNoHole), rw), nbd::kEinval);
  EXPECT_EQ(nbd::ValidateRequest(req(5 /*CACHE*/, 0, 8), rw), nbd::kEinval);
  nbd::ExportGeometry huge{.size = 1ull << 40};
  EXPECT_EQ(nbd::ValidateRequest(req(nbd::kCmdRead, 0, nbd::kMaxPayload + 1), huge), nbd::kEinval);
  EXPECT_EQ(nbd::ValidateRequest(req(nbd::kCmdTrim, 0, UINT32_MAX), huge), 0u);  // no payload, no cap
}

TEST(NbdProtocolTest, MapsTargetStatusToNbdErrors) {
  EXPECT_EQ(nbd::ErrorFromStatus(ResourceExhausted("journal full")), nbd::kEnospc);
  EXPECT_EQ(nbd::ErrorFromStatus(PosixError("write", EDQUOT)), nbd::kEnospc);
  EXPECT_EQ(nbd::ErrorFromStatus(PosixError("write", EROFS)), nbd::kEperm);
  EXPECT_EQ(nbd::ErrorFromStatus(FailedPrecondition("volume is down")), nbd::kEperm);
  EXPECT_EQ(nbd::ErrorFromStatus(InvalidArgument("bad")), nbd::kEinval);
  EXPECT_EQ(nbd::ErrorFromStatus(DataLoss("checksum")), nbd::kEio);
  EXPECT_EQ(nbd::ErrorFromStatus(PosixError("read", EBADMSG)), nbd::kEio);
}

TEST(NbdProtocolTest, RandomBytesNeverBreakTheParsers) {
  std::mt19937_64 rng(1);
  for (int i = 0; i < 200000; ++i) {
    Bytes b(rng() % 48);
    for (auto& x : b) x = static_cast<uint8_t>(rng());
    if (!b.empty() && rng() % 4 == 0) b[0] = 0;  // small name lengths, so parses get deep
    (void)nbd::ParseClientFlags(b);
    (void)nbd::ParseOptionHeader(b);
    auto info = nbd::ParseInfoRequest(b);
    if (info.ok()) {
      EXPECT_EQ(b.size(), 4 + info->name.size() + 2 + 2 * info->info_types.size());
    }
    Bytes r = b;
    r.resize(nbd::kRequestSize);
    r[0] = 0x25, r[1] = 0x60, r[2] = 0x95, r[3] = 0x13;
    auto req = nbd::ParseRequest(r);
    ASSERT_TRUE(req.ok());
    nbd::ExportGeometry g{.size = rng() % 2 ? rng() : rng() % 4096, .read_only = rng() % 2 == 0};
    if (nbd::ValidateRequest(*req, g) == 0 && req->type != nbd::kCmdFlush && req->type != nbd::kCmdDisc) {
      ASSERT_LE(req->offset, g.size);
      ASSERT_LE(req->length, g.size - req->offset);
    }
  }
}

// ---- connection-level fuzzing -----------------------------------------------

// A client stream and what the oracle expects the server to answer.
struct Case {
  Bytes input;
  bool strict = false;                    // the oracle below applies
  bool no_zeroes = true;                  // client flag sent
  std::vector<uint32_t> option_results;   // terminal option reply types, in order
  std::map<uint64_t, uint32_t> expected;  // cookie -> NBD error (transmission)
  std::map<uint64_t, uint32_t> read_len;  // cookie -> payload length of a READ
};

class NbdConnectionFuzzTest : public ::testing::Test {
 protected:
  void SetUp() override { SetLogLevel("off"); }
  void TearDown() override { SetLogLevel("info"); }

  NbdExportHooks Hooks() {
    auto find = [this](const std::string& name) -> std::optional<NbdExportRef> {
      if (name == "rw") return NbdExportRef{.name = "rw", .target = rw_};
      if (name == "ro") return NbdExportRef{.name = "ro", .target = ro_};
      return std::nullopt;  // two exports: the empty name is not a default
    };
    return {.find = find, .bind = find, .list = [] { return std::vector<std::string>{"ro", "rw"}; }};
  }

  // Runs one stream; returns the server's whole output. Fails on a hang.
  Bytes Run(const Bytes& input, int workers) {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    NbdConnection conn(sv[0], "fuzz", {.workers = workers, .max_inflight_bytes = 256 << 10}, Hooks());
    std::thread server([&] { conn.Serve().IgnoreError(); });
    std::thread writer([&] {
      for (size_t done = 0; done < input.size();) {
        ssize_t n = ::send(sv[1], input.data() + done, input.size() - done, MSG_NOSIGNAL);
        if (n <= 0) break;  // the server hung up first: fine
        done += static_cast<size_t>(n);
      }
      ::shutdown(sv[1], SHUT_WR);
    });
    Bytes out;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    uint8_t buf[65536];
    while (true) {
      pollfd pfd{.fd = sv[1], .events = POLLIN, .revents = 0};
      if (std::chrono::steady_clock::now() > deadline || ::poll(&pfd, 1, 1000) < 0) {
        ADD_FAILURE() << "server hung on a stream of " << input.size() << " bytes";
        conn.Shutdown();
        break;
      }
      if (pfd.revents == 0) continue;
      ssize_t n = ::recv(sv[1], buf, sizeof(buf), 0);
      if (n <= 0) break;
      out.insert(out.end(), buf, buf + n);
    }
    writer.join();
    server.join();
    ::close(sv[1]);
    return out;
  }

  // Checks framing (always) and the oracle (strict cases). Empty when fine.
  std::string Check(const Case& c, const Bytes& out) {
    auto get = [&](size_t pos, int n) { return nbd_test::Get(out.data() + pos, n); };
    if (out.size() < 18 || get(0, 8) != nbd::kInitPasswd) return "no greeting";
    size_t pos = 18;
    std::vector<uint32_t> results;
    bool transmission = false;
    while (pos < out.size() && !transmission) {
      if (out.size() - pos >= 8 && get(pos, 8) != nbd::kOptReplyMagic) {
        // Only the reply to NBD_OPT_EXPORT_NAME lacks the magic.
        size_t len = 10 + (c.no_zeroes ? 0 : nbd::kZeroPadSize);
        uint64_t size = get(pos, 8);
        if (!c.strict) return "";  // a mutated client may have changed its flags
        if (out.size() - pos < len || (size != kRwSize && size != kRoSize)) return "garbage in handshake";
        pos += len;
        transmission = true;
        break;
      }
      if (out.size() - pos < 20) return "torn option reply";
      uint32_t option = static_cast<uint32_t>(get(pos + 8, 4)), type = static_cast<uint32_t>(get(pos + 12, 4));
      size_t len = get(pos + 16, 4);
      if (out.size() - pos - 20 < len) return "torn option reply data";
      pos += 20 + len;
      static const std::set<uint32_t> kKnown = {nbd::kRepAck, nbd::kRepServer, nbd::kRepInfo,
                                                nbd::kRepErrUnsup, nbd::kRepErrInvalid, nbd::kRepErrUnknown,
                                                nbd::kRepErrTooBig};
      if (!kKnown.count(type)) return "unexpected option reply type " + std::to_string(type);
      if (type == nbd::kRepServer || type == nbd::kRepInfo) continue;
      results.push_back(type);
      if (option == nbd::kOptGo && type == nbd::kRepAck) transmission = true;
    }
    std::map<uint64_t, uint32_t> replies;
    while (pos < out.size()) {
      if (out.size() - pos < 16 || get(pos, 4) != nbd::kSimpleReplyMagic) return "bad simple reply";
      uint32_t error = static_cast<uint32_t>(get(pos + 4, 4));
      uint64_t cookie = get(pos + 8, 8);
      pos += 16;
      if (!c.expected.count(cookie)) {
        if (c.strict) return "reply to unknown cookie " + std::to_string(cookie);
        return "";  // mutated request: its payload length is unknown here
      }
      if (error == 0 && c.read_len.count(cookie)) pos += c.read_len.at(cookie);
      if (pos > out.size()) return "torn read payload";
      if (!replies.emplace(cookie, error).second) return "two replies for one cookie";
    }
    if (!c.strict) return "";
    if (results != c.option_results) {
      std::string got, want;
      for (uint32_t r : results) got += " " + std::to_string(r & 0xff) + (r & nbd::kRepErrBit ? "e" : "");
      for (uint32_t r : c.option_results) want += " " + std::to_string(r & 0xff) + (r & nbd::kRepErrBit ? "e" : "");
      return "option replies [" + got + " ] differ from the oracle's [" + want + " ]";
    }
    if (replies != c.expected) return "request replies differ from the oracle";
    return "";
  }

  std::shared_ptr<nbd_test::NbdMemoryTarget> rw_ = std::make_shared<nbd_test::NbdMemoryTarget>(kRwSize);
  std::shared_ptr<nbd_test::NbdMemoryTarget> ro_ = std::make_shared<nbd_test::NbdMemoryTarget>(kRoSize, true);
};

// Appends one option; records the terminal reply the spec demands, or returns
// false when the option ends the handshake (the caller stops adding options).
bool AddOption(std::mt19937_64& rng, Case& c, bool must_go) {
  static const std::string kNames[] = {"rw", "ro", "", "zz", std::string("rw\0x", 4)};
  std::string name = kNames[rng() % 5];
  if (rng() % 5 == 0) name = std::string(rng() % 5000, 'n');
  uint32_t option = must_go ? nbd::kOptGo : static_cast<uint32_t>(rng() % 12);
  Bytes data;
  uint32_t expect = nbd::kRepErrUnsup;
  bool known = name == "rw" || name == "ro";
  switch (option) {
    case nbd::kOptInfo:
    case nbd::kOptGo: {
      uint16_t count = static_cast<uint16_t>(rng() % 4);
      Put32(data, static_cast<uint32_t>(name.size()));
      data.insert(data.end(), name.begin(), name.end());
      Put16(data, count);
      for (int i = 0; i < count; ++i) Put16(data, static_cast<uint16_t>(rng() % 5));
      bool corrupt = !must_go && rng() % 4 == 0;
      if (corrupt) data.resize(data.size() - 1 - rng() % std::min<size_t>(data.size(), 3));
      bool valid = !corrupt && name.size() <= nbd::kMaxStringLength && name.find('\0') == std::string::npos;
      expect = !valid ? nbd::kRepErrInvalid : known ? nbd::kRepAck : nbd::kRepErrUnknown;
      if (must_go && expect != nbd::kRepAck) return AddOption(rng, c, true);  // retry for a usable export
      break;
    }
    case nbd::kOptList:
      if (rng() % 3 == 0) data.push_back(1);
      expect = data.empty() ? nbd::kRepAck : nbd::kRepErrInvalid;
      break;
    case nbd::kOptExportName:
      data.assign(name.begin(), name.end());
      break;
    default:
      data.resize(rng() % 64);
      break;
  }
  if (!must_go && option != nbd::kOptExportName && rng() % 50 == 0) {
    data.resize(nbd::kMaxOptionLength + 1 + rng() % 100);
    expect = nbd::kRepErrTooBig;
  }
  Put64(c.input, nbd::kOptMagic);
  Put32(c.input, option);
  Put32(c.input, static_cast<uint32_t>(data.size()));
  c.input.insert(c.input.end(), data.begin(), data.end());
  if (option == nbd::kOptExportName) return false;  // known: transmission; unknown: hang up
  // An oversized option is refused before the server looks at what it is.
  bool aborts = option == nbd::kOptAbort && expect != nbd::kRepErrTooBig;
  c.option_results.push_back(aborts ? nbd::kRepAck : expect);
  return !aborts && !(option == nbd::kOptGo && expect == nbd::kRepAck);
}

// The spec's rules, written independently of ValidateRequest.
uint32_t Oracle(uint16_t type, uint16_t flags, uint64_t offset, uint64_t length, uint64_t size, bool ro) {
  if (type != 0 && type != 1 && type != 3 && type != 4 && type != 6) return nbd::kEinval;
  if (flags & ~(type == 6 ? 3 : 1)) return nbd::kEinval;
  if (type == 3) return 0;
  if (ro && type != 0) return nbd::kEperm;
  if (type <= 1 && length > (32u << 20)) return nbd::kEinval;
  if (static_cast<unsigned __int128>(offset) + length > size) return (type == 1 || type == 6) ? nbd::kEnospc : nbd::kEinval;
  return 0;
}

Case GenerateSession(std::mt19937_64& rng, bool to_transmission) {
  Case c{.strict = true};
  uint32_t flags = rng() % 10 == 0 ? static_cast<uint32_t>(rng()) : (rng() % 4 ? 3 : 1);
  c.no_zeroes = flags & 2;
  Put32(c.input, flags);
  if (flags & ~3u) return c;  // the server must hang up after the greeting
  int options = 1 + static_cast<int>(rng() % 6);
  for (int i = 0; i < options; ++i) {
    if (!AddOption(rng, c, false)) return c;
  }
  if (!to_transmission) return c;
  size_t before = c.input.size();
  AddOption(rng, c, true);
  bool ro = c.input.size() > before + 22 && c.input[before + 20] == 'r' && c.input[before + 21] == 'o';
  uint64_t size = ro ? kRoSize : kRwSize;
  int requests = 1 + static_cast<int>(rng() % 40);
  for (int i = 0; i < requests; ++i) {
    static const uint16_t kTypes[] = {0, 0, 1, 1, 2, 3, 4, 6, 5, 7, 99};
    uint16_t type = kTypes[rng() % 11];
    uint16_t cflags = rng() % 8 ? static_cast<uint16_t>(rng() % 2) : static_cast<uint16_t>(rng() % 64);
    uint64_t offset = rng() % 8 ? rng() % size : rng();
    uint32_t length = static_cast<uint32_t>(rng() % 4 ? rng() % 70000 : rng() % (size + 4096));
    if (type == 1 && rng() % 8 != 0) length %= 16384;  // keeps the streams small
    if (type == 1 && rng() % 30 == 0) length = (32u << 20) + 1;  // over the cap
    uint64_t cookie = 1000 + i;
    Put32(c.input, nbd::kRequestMagic);
    Put16(c.input, cflags);
    Put16(c.input, type);
    Put64(c.input, cookie);
    Put64(c.input, offset);
    Put32(c.input, length);
    if (type == 2) return c;  // DISC: no reply, nothing after it is read
    bool last = i + 1 == requests;
    if (type == 1 && (length > 1 << 20 || (last && rng() % 3 == 0))) {
      c.input.resize(c.input.size() + rng() % 512);  // torn payload: a clean disconnect
      return c;
    }
    if (type == 1) c.input.resize(c.input.size() + length, static_cast<uint8_t>(i));
    c.expected[cookie] = Oracle(type, cflags, offset, length, size, ro);
    if (type == 0) c.read_len[cookie] = length;
  }
  return c;
}

TEST_F(NbdConnectionFuzzTest, GeneratedHandshakesGetTheRepliesTheSpecDemands) {
  std::mt19937_64 rng(2);
  for (int i = 0; i < 3000; ++i) {
    Case c = GenerateSession(rng, false);
    ASSERT_EQ(Check(c, Run(c.input, 0)), "") << "case " << i;
  }
}

TEST_F(NbdConnectionFuzzTest, GeneratedRequestsGetTheRepliesTheSpecDemands) {
  std::mt19937_64 rng(3);
  for (int i = 0; i < 3000; ++i) {
    Case c = GenerateSession(rng, true);
    ASSERT_EQ(Check(c, Run(c.input, i % 3)), "") << "case " << i;
  }
}

TEST_F(NbdConnectionFuzzTest, MutatedAndRandomStreamsEndCleanly) {
  std::mt19937_64 rng(4);
  for (int i = 0; i < 6000; ++i) {
    Case c = GenerateSession(rng, rng() % 2);
    c.strict = false;
    if (i % 3 == 0) {
      c.input.resize(rng() % 300);
      for (auto& b : c.input) b = static_cast<uint8_t>(rng());
    } else {
      int edits = 1 + static_cast<int>(rng() % 8);
      for (int e = 0; e < edits && !c.input.empty(); ++e) {
        size_t at = rng() % c.input.size();
        switch (rng() % 4) {
          case 0: c.input[at] ^= static_cast<uint8_t>(1 << (rng() % 8)); break;
          case 1: c.input[at] = static_cast<uint8_t>(rng()); break;
          case 2: c.input.erase(c.input.begin() + static_cast<ptrdiff_t>(at)); break;
          default: c.input.resize(at); break;
        }
      }
    }
    ASSERT_EQ(Check(c, Run(c.input, i % 2)), "") << "case " << i;
  }
}

}  // namespace
}  // namespace continuum::capture
