// End-to-end fuzzing of a repository on disk (src/repo/repository*.cc): mutate one
// file at a time and run open, check, get and repair. Every outcome must be a
// Status, and an undamaged point must still restore.
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "continuum/repo/repository.h"
#include "repo_test_util.h"

namespace continuum::repo {
namespace {

namespace fs = std::filesystem;
using testing::Pw;
using testing::RandomBytes;
using testing::SmallPacks;

std::vector<uint8_t> ReadAll(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}
void WriteAll(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

class RepositoryFuzzTest : public testing::TempDirTest {};

TEST_F(RepositoryFuzzTest, MutatedFilesNeverCrash) {
  std::vector<BlobId> ids;
  {
    auto r = InitAndOpen();
    ASSERT_TRUE(r);
    for (int p = 0; p < 3; ++p) {
      std::vector<BlobId> mine;
      for (int i = 0; i < 4; ++i) mine.push_back(*r->Put(BlobType::kData, RandomBytes(3000 + i, p * 10 + i)));
      auto tree = r->PutTree({.refs = mine, .payload = {1, 2}});
      ASSERT_TRUE(r->SaveManifest({.time_ns = p, .roots = {*tree}}).ok());
      ids.insert(ids.end(), mine.begin(), mine.end());
    }
  }
  std::vector<fs::path> targets;
  for (auto& e : fs::recursive_directory_iterator(repo_)) {
    if (e.is_regular_file()) targets.push_back(e.path());
  }
  std::sort(targets.begin(), targets.end());
  std::mt19937_64 rng(777);
  int opened = 0;
  for (int iter = 0; iter < 300; ++iter) {
    const fs::path& target = targets[rng() % targets.size()];
    std::vector<uint8_t> original = ReadAll(target);
    std::vector<uint8_t> bad = original;
    switch (rng() % 4) {
      case 0:
        if (!bad.empty()) bad[rng() % bad.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
        break;
      case 1:
        bad.resize(bad.empty() ? 0 : rng() % bad.size());
        break;
      case 2:
        for (int i = 0; i < 50; ++i) bad.push_back(static_cast<uint8_t>(rng()));
        break;
      default:
        for (auto& b : bad) b = static_cast<uint8_t>(rng());
        break;
    }
    WriteAll(target, bad);
    {
      auto r = Repository::Open(repo_, Pw(), SmallPacks(LockMode::kExclusive));
      if (r.ok()) {
        ++opened;
        auto rep = (*r)->Check(true);
        ASSERT_TRUE(rep.ok()) << target << ": " << rep.status().ToString();
        for (const auto& id : ids) (*r)->Get(id).status().IgnoreError();
        auto list = (*r)->ListManifests();
        ASSERT_TRUE(list.ok());
        for (const auto& m : *list) (*r)->ManifestBlobs(m).status().IgnoreError();
        if (iter % 10 == 0) {
          auto rebuilt = (*r)->RebuildIndex();
          ASSERT_TRUE(rebuilt.ok()) << target << ": " << rebuilt.status().ToString();
        }
      } else {
        EXPECT_NE(r.status().message().find(repo_), std::string::npos) << r.status().message();
      }
    }
    WriteAll(target, original);
    // Repair may have replaced index files: re-list the targets.
    if (iter % 10 == 0) {
      targets.clear();
      for (auto& e : fs::recursive_directory_iterator(repo_)) {
        if (e.is_regular_file() && e.path().parent_path().filename() != "locks") targets.push_back(e.path());
      }
      std::sort(targets.begin(), targets.end());
    }
  }
  EXPECT_GT(opened, 150);
  // A repair that ran while a pack was damaged left it out of the index; with the
  // pack restored, another repair adopts it again.
  auto r = Reopen(SmallPacks(LockMode::kExclusive));
  ASSERT_TRUE(r->RebuildIndex().ok());
  auto rep = r->Check(true);
  ASSERT_TRUE(rep.ok());
  EXPECT_TRUE(rep->ok());
  for (const auto& id : ids) EXPECT_TRUE(r->Get(id).ok());
}

}  // namespace
}  // namespace continuum::repo
