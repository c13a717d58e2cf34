#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "continuum/repo/backend.h"
#include "continuum/repo/local_backend.h"
#include "continuum/repo/repository.h"
#include "immutable_util.h"

namespace continuum::repo::testing {

namespace fs = std::filesystem;

// Cheapest Argon2id parameters libsodium accepts: tests must not spend seconds per open.
inline KdfParams FastKdf() { return {.ops_limit = 1, .mem_limit = 8192}; }
inline Credentials Pw(const std::string& p = "correct horse") { return {.password = p}; }
inline InitOptions FastInit(bool append_only = false) {
  InitOptions o;
  o.kdf = FastKdf();
  o.append_only = append_only;
  return o;
}
inline OpenOptions SmallPacks(LockMode lock = LockMode::kShared) {
  OpenOptions o;
  o.lock = lock;
  o.pack_target_bytes = 256 << 10;
  return o;
}

inline std::vector<uint8_t> RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    for (size_t j = 0; j < 8 && i + j < n; ++j) out[i + j] = static_cast<uint8_t>(v >> (8 * j));
  }
  return out;
}

// Compressible bytes: words from a small vocabulary.
inline std::vector<uint8_t> TextBytes(size_t n, uint64_t seed) {
  static const char* kWords[] = {"backup ", "volume ", "restore ", "the ", "chunk ", "of ", "data\n", "index ",
                                 "pack ", "manifest ", "snapshot ", "repository "};
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> out;
  out.reserve(n);
  while (out.size() < n) {
    const char* w = kWords[rng() % 12];
    for (const char* p = w; *p && out.size() < n; ++p) out.push_back(static_cast<uint8_t>(*p));
  }
  return out;
}

// A fresh directory per test, removed afterwards.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("continuum-repo-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    RemoveAllClearingImmutable(dir_);
    fs::create_directories(dir_);
    repo_ = (dir_ / "repo").string();
  }
  void TearDown() override { RemoveAllClearingImmutable(dir_); }

  std::unique_ptr<Repository> InitAndOpen(OpenOptions o = SmallPacks(), bool append_only = false) {
    Status st = Repository::Init(repo_, Pw(), FastInit(append_only));
    EXPECT_TRUE(st.ok()) << st.ToString();
    auto r = Repository::Open(repo_, Pw(), std::move(o));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(*r) : nullptr;
  }
  std::unique_ptr<Repository> Reopen(OpenOptions o = SmallPacks()) {
    auto r = Repository::Open(repo_, Pw(), std::move(o));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(*r) : nullptr;
  }
  std::vector<fs::path> Files(const std::string& sub) {
    std::vector<fs::path> out;
    if (!fs::exists(fs::path(repo_) / sub)) return out;
    for (auto& e : fs::recursive_directory_iterator(fs::path(repo_) / sub)) {
      if (e.is_regular_file()) out.push_back(e.path());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  fs::path dir_;
  std::string repo_;
};

// Wraps a backend to inject faults: a full disk after a byte budget, or a crash
// after N mutating calls (later calls fail without touching the disk, as if the
// process had died at that instant).
class FaultBackend : public Backend {
 public:
  explicit FaultBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}
  int64_t write_budget = -1;  // bytes until ENOSPC; -1 = unlimited
  int64_t ops_until_crash = -1;
  bool crashed = false;

  std::string Location() const override { return inner_->Location(); }
  std::string Describe(FileKind k, const std::string& n) const override { return inner_->Describe(k, n); }
  Status Create() override { return inner_->Create(); }
  Status Write(FileKind k, const std::string& n, std::span<const uint8_t> d, bool replace) override {
    CONTINUUM_RETURN_IF_ERROR(Tick());
    if (write_budget >= 0) {
      if (static_cast<int64_t>(d.size()) > write_budget) {
        return PosixError("store " + Describe(k, n), ENOSPC);
      }
      write_budget -= static_cast<int64_t>(d.size());
    }
    return inner_->Write(k, n, d, replace);
  }
  Result<std::vector<uint8_t>> Read(FileKind k, const std::string& n, uint64_t m) override { return inner_->Read(k, n, m); }
  Result<std::vector<uint8_t>> ReadAt(FileKind k, const std::string& n, uint64_t o, uint64_t l) override {
    return inner_->ReadAt(k, n, o, l);
  }
  Result<uint64_t> Size(FileKind k, const std::string& n) override { return inner_->Size(k, n); }
  Result<std::vector<std::string>> List(FileKind k) override { return inner_->List(k); }
  Status Remove(FileKind k, const std::string& n) override {
    CONTINUUM_RETURN_IF_ERROR(Tick());
    return inner_->Remove(k, n);
  }
  Result<size_t> CleanTemporary(int64_t t) override { return inner_->CleanTemporary(t); }
  void SetWriteOnce(bool on) override { inner_->SetWriteOnce(on); }
  Result<Immutability> GetImmutability(FileKind k, const std::string& n) override { return inner_->GetImmutability(k, n); }

 private:
  Status Tick() {
    if (crashed) return Unavailable("simulated crash");
    if (ops_until_crash == 0) {
      crashed = true;
      return Unavailable("simulated crash");
    }
    if (ops_until_crash > 0) --ops_until_crash;
    return Status::Ok();
  }
  std::unique_ptr<Backend> inner_;
};

}  // namespace continuum::repo::testing
