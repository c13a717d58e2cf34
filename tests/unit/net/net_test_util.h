#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "continuum/net/pki.h"
#include "continuum/net/tls.h"

namespace continuum::net::testing {

// A directory removed with everything in it when the test ends.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/continuum-net-XXXXXX";
    if (mkdtemp(tmpl) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline TlsOptions Options(const std::string& pki_dir, const std::string& name) {
  return TlsOptions{.pki_dir = pki_dir, .name = name, .connect_timeout_ms = 5000, .io_timeout_ms = 10000};
}

using ConnResult = Result<std::unique_ptr<Connection>>;

// The outcome of one Dial and the Accept that answers it.
struct DialAccept {
  std::optional<ConnResult> client;
  std::optional<ConnResult> server;
};

// Dials `listener` while another thread accepts one connection (success or error).
inline DialAccept DialAndAccept(Listener& listener, const TlsOptions& client_options,
                                const std::string& expected_peer = "") {
  DialAccept out;
  std::thread acceptor([&] { out.server.emplace(listener.Accept()); });
  out.client.emplace(Dial(listener.Address(), client_options, expected_peer));
  acceptor.join();
  return out;
}

// A PKI directory with a CA and certificates for `names`.
inline void MakePki(const std::string& dir, std::initializer_list<std::string> names) {
  ASSERT_TRUE(PkiInit(dir).ok());
  for (const std::string& name : names) {
    Status st = PkiIssue(dir, name);
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
}

}  // namespace continuum::net::testing
