// libFuzzer entry point for the NBD server's protocol handling.
//
// Build and run (not part of the CMake build; needs clang with libFuzzer):
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined \
//     -Iinclude -Isrc -Itests/unit tests/fuzz/nbd_protocol_fuzz.cc \
//     src/capture/nbd_protocol.cc src/capture/nbd_socket.cc \
//     src/capture/nbd_handshake.cc src/capture/nbd_connection.cc \
//     src/common/status.cc src/common/log.cc -lspdlog -lfmt -o /tmp/nbd_protocol_fuzz
//   /tmp/nbd_protocol_fuzz -max_total_time=60
//
// The first input byte picks the entry: the handshake from its first byte,
// or the transmission phase behind a valid NBD_OPT_GO. The rest is the
// client's byte stream, fed to a real NbdConnection over a socketpair.

#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>

#include "capture/nbd_connection.h"
#include "capture/nbd_memory_target.h"
#include "capture/nbd_protocol.h"
#include "continuum/common/log.h"

namespace {

using continuum::capture::NbdConnection;
using continuum::capture::NbdExportHooks;
using continuum::capture::NbdExportRef;
namespace nbd = continuum::capture::nbd;

std::vector<uint8_t> GoPrefix() {
  std::vector<uint8_t> out;
  nbd::Append32(out, nbd::kClientFlagFixedNewstyle | nbd::kClientFlagNoZeroes);
  nbd::Append64(out, nbd::kOptMagic);
  nbd::Append32(out, nbd::kOptGo);
  nbd::Append32(out, 4 + 2 + 2);
  nbd::Append32(out, 2);
  out.push_back('r');
  out.push_back('w');
  nbd::Append16(out, 0);
  return out;
}

void RunStream(const std::vector<uint8_t>& input) {
  static auto target = std::make_shared<continuum::capture::nbd_test::NbdMemoryTarget>(256 << 10);
  NbdExportHooks hooks;
  hooks.find = [](const std::string& name) -> std::optional<NbdExportRef> {
    if (name.empty() || name == "rw") return NbdExportRef{.name = "rw", .target = target};
    return std::nullopt;
  };
  hooks.bind = hooks.find;
  hooks.list = [] { return std::vector<std::string>{"rw"}; };

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  NbdConnection conn(sv[0], "fuzz", {.workers = 0, .handshake_timeout_ms = 0}, hooks);
  std::thread server([&] { conn.Serve().IgnoreError(); });
  std::thread drain([&] {
    char buf[65536];
    while (::recv(sv[1], buf, sizeof(buf), 0) > 0) {
    }
  });
  for (size_t done = 0; done < input.size();) {
    ssize_t n = ::send(sv[1], input.data() + done, input.size() - done, MSG_NOSIGNAL);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  ::shutdown(sv[1], SHUT_WR);
  server.join();  // a hang here is a finding: libFuzzer reports the timeout
  drain.join();
  ::close(sv[1]);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool quiet = (continuum::SetLogLevel("off"), true);
  (void)quiet;
  if (size == 0) return 0;
  std::span<const uint8_t> rest(data + 1, size - 1);
  // The parsers on their own, where most mutations land.
  (void)nbd::ParseOptionHeader(rest);
  (void)nbd::ParseInfoRequest(rest);
  if (auto req = nbd::ParseRequest(rest); req.ok()) {
    (void)nbd::ValidateRequest(*req, {.size = 1 << 20});
  }
  std::vector<uint8_t> stream;
  if (data[0] & 1) stream = GoPrefix();
  stream.insert(stream.end(), rest.begin(), rest.end());
  RunStream(stream);
  return 0;
}
