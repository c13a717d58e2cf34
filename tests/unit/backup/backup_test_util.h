#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../repo/immutable_util.h"
#include "continuum/repo/repository.h"

namespace continuum::backup::testing {

namespace fs = std::filesystem;

inline std::vector<uint8_t> RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(rng());
  return out;
}

inline void WriteFile(const fs::path& p, const std::vector<uint8_t>& data) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

inline std::vector<uint8_t> ReadFile(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// A fresh directory and repository per test (cheap Argon2id), removed afterwards.
class BackupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("continuum-backup-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    repo::testing::RemoveAllClearingImmutable(dir_);
    fs::create_directories(dir_);
    repo_path_ = (dir_ / "repo").string();
    repo::InitOptions init;
    init.kdf = {.ops_limit = 1, .mem_limit = 8192};
    init.fixed_chunk = 64 << 10;  // small chunks: many of them in small test images
    init.cdc_min = 64 << 10;
    init.cdc_avg = 128 << 10;
    init.cdc_max = 512 << 10;
    ASSERT_TRUE(repo::Repository::Init(repo_path_, {.password = "pw"}, init).ok());
    repo_ = Open();
    ASSERT_TRUE(repo_);
  }
  void TearDown() override {
    repo_.reset();
    repo::testing::RemoveAllClearingImmutable(dir_);
  }
  std::unique_ptr<repo::Repository> Open() {
    repo::OpenOptions o;
    o.pack_target_bytes = 256 << 10;
    auto r = repo::Repository::Open(repo_path_, {.password = "pw"}, std::move(o));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(*r) : nullptr;
  }

  fs::path dir_;
  std::string repo_path_;
  std::unique_ptr<repo::Repository> repo_;
};

}  // namespace continuum::backup::testing
