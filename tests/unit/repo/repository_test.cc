// Covers src/repo/repository*.cc: init/open, blobs, dedup, trees, manifests.
#include "continuum/repo/repository.h"

#include <gtest/gtest.h>

#include <fcntl.h>

#include <set>

#include "continuum/io/file.h"
#include "repo_test_util.h"

namespace continuum::repo {
namespace {

namespace fs = std::filesystem;
using testing::Pw;
using testing::RandomBytes;
using testing::TextBytes;

class RepositoryTest : public testing::TempDirTest {};

TEST_F(RepositoryTest, InitTwiceFails) {
  ASSERT_TRUE(Repository::Init(repo_, Pw(), testing::FastInit()).ok());
  Status st = Repository::Init(repo_, Pw(), testing::FastInit());
  EXPECT_EQ(st.code(), StatusCode::kAlreadyExists);
  EXPECT_NE(st.message().find(repo_), std::string::npos) << st.message();
}

TEST_F(RepositoryTest, OpenMissingRepository) {
  auto r = Repository::Open(repo_, Pw());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(r.status().message(), "no repository at " + repo_);
}

TEST_F(RepositoryTest, WrongPasswordIsAClearError) {
  ASSERT_TRUE(Repository::Init(repo_, Pw("right"), testing::FastInit()).ok());
  auto r = Repository::Open(repo_, Pw("wrong"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "wrong password for repository " + repo_);
  EXPECT_TRUE(Repository::Open(repo_, Pw("right")).ok());
}

TEST_F(RepositoryTest, PutGetRoundTripAcrossReopen) {
  std::vector<std::pair<BlobId, std::vector<uint8_t>>> blobs;
  {
    auto r = InitAndOpen();
    ASSERT_TRUE(r);
    for (int i = 0; i < 40; ++i) {
      auto data = i % 2 ? RandomBytes(10000 + i * 1000, i) : TextBytes(50000 + i, i);
      auto id = r->Put(BlobType::kData, data);
      ASSERT_TRUE(id.ok()) << id.status().ToString();
      // Readable before the pack is sealed, from memory.
      auto got = r->Get(*id);
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      EXPECT_EQ(*got, data);
      blobs.emplace_back(*id, std::move(data));
    }
    auto empty = r->Put(BlobType::kData, {});
    ASSERT_TRUE(empty.ok());
    blobs.emplace_back(*empty, std::vector<uint8_t>{});
    ASSERT_TRUE(r->Flush().ok());
    EXPECT_GT(r->stats().packs_written, 1u);
    EXPECT_LT(r->stats().stored_bytes_new, r->stats().raw_bytes_new);  // text compressed
  }
  auto r = Reopen();
  ASSERT_TRUE(r);
  for (const auto& [id, data] : blobs) {
    EXPECT_TRUE(r->Has(id));
    auto got = r->Get(id);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, data);
  }
  BlobId unknown;
  EXPECT_FALSE(r->Has(unknown));
  EXPECT_EQ(r->Get(unknown).status().code(), StatusCode::kNotFound);
}

TEST_F(RepositoryTest, SameDataTwiceIsStoredOnce) {
  auto r = InitAndOpen();
  ASSERT_TRUE(r);
  auto data = RandomBytes(100000, 1);
  auto a = r->Put(BlobType::kData, data);
  auto b = r->Put(BlobType::kData, data);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  ASSERT_TRUE(r->Flush().ok());
  EXPECT_EQ(r->stats().blobs_new, 1u);
  EXPECT_EQ(r->stats().blobs_deduplicated, 1u);
  uint64_t pack_bytes = 0;
  for (auto& p : Files("data")) pack_bytes += fs::file_size(p);
  EXPECT_LT(pack_bytes, data.size() + 1000);
  // Dedup also holds across processes: a new session finds the blob in the index.
  r.reset();
  r = Reopen();
  auto c = r->Put(BlobType::kData, data);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, *a);
  EXPECT_EQ(r->stats().blobs_new, 0u);
  ASSERT_TRUE(r->Flush().ok());
  EXPECT_EQ(Files("data").size(), 1u);
}

TEST_F(RepositoryTest, IncompressibleBlobsDoNotGrow) {
  auto r = InitAndOpen();
  auto data = RandomBytes(1 << 20, 3);
  ASSERT_TRUE(r->Put(BlobType::kData, data).ok());
  EXPECT_EQ(r->stats().stored_bytes_new, data.size() + 28);
}

TEST_F(RepositoryTest, BlobLargerThanPackTarget) {
  auto r = InitAndOpen();
  auto data = TextBytes(3 << 20, 4);
  auto id = r->Put(BlobType::kData, data);
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(r->Flush().ok());
  r.reset();
  r = Reopen();
  auto got = r->Get(*id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, data);
  std::vector<uint8_t> too_big((64u << 20) + 1);
  EXPECT_EQ(r->Put(BlobType::kData, too_big).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(RepositoryTest, TreesAndManifests) {
  auto r = InitAndOpen();
  auto d1 = r->Put(BlobType::kData, RandomBytes(5000, 1));
  auto d2 = r->Put(BlobType::kData, RandomBytes(5000, 2));
  auto d3 = r->Put(BlobType::kData, RandomBytes(5000, 3));
  ASSERT_TRUE(d1.ok() && d2.ok() && d3.ok());
  auto leaf = r->PutTree({.refs = {*d1, *d2}, .payload = {'l', 'e', 'a', 'f'}});
  ASSERT_TRUE(leaf.ok());
  auto root = r->PutTree({.refs = {*leaf, *d3, *d1}, .payload = {'r'}});
  ASSERT_TRUE(root.ok());
  BlobId missing;
  missing.bytes[0] = 1;
  EXPECT_EQ(r->PutTree({.refs = {missing}}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r->SaveManifest({.roots = {missing}}).status().code(), StatusCode::kInvalidArgument);

  std::string json = R"({"source":"vol1","kind":"full"})";
  Manifest m{.time_ns = 1234, .roots = {*root}, .payload = {json.begin(), json.end()}};
  auto mid = r->SaveManifest(m);
  ASSERT_TRUE(mid.ok()) << mid.status().ToString();
  r.reset();

  r = Reopen();
  auto list = r->ListManifests();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0], *mid);
  auto back = r->LoadManifest(*mid);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->time_ns, 1234);
  EXPECT_EQ(back->roots, m.roots);
  EXPECT_EQ(back->payload, m.payload);
  auto tree = r->GetTree(*leaf);
  ASSERT_TRUE(tree.ok());
  EXPECT_EQ(tree->refs, (std::vector<BlobId>{*d1, *d2}));
  EXPECT_EQ(r->GetTree(*d1).status().code(), StatusCode::kInvalidArgument);
  auto needed = r->ManifestBlobs(*mid);
  ASSERT_TRUE(needed.ok()) << needed.status().ToString();
  std::set<BlobId> got(needed->begin(), needed->end());
  EXPECT_EQ(got, (std::set<BlobId>{*root, *leaf, *d1, *d2, *d3}));

  ASSERT_TRUE(r->DeleteManifest(*mid).ok());
  EXPECT_TRUE(r->ListManifests()->empty());
  EXPECT_EQ(r->LoadManifest(*mid).status().code(), StatusCode::kNotFound);
}

TEST_F(RepositoryTest, AppendOnlyFilesAreImmutableWhereSupported) {
  auto r = InitAndOpen(testing::SmallPacks(), /*append_only=*/true);
  ASSERT_TRUE(r);
  auto d = r->Put(BlobType::kData, RandomBytes(100, 1));
  auto mid = r->SaveManifest({.roots = {*d}});
  ASSERT_TRUE(mid.ok());
  ASSERT_TRUE(r->SetPinned(*mid, true).ok());
  auto state = r->backend().GetImmutability(FileKind::kManifest, mid->Hex());
  ASSERT_TRUE(state.ok()) << state.status().ToString();
  auto check = r->Check(false);
  ASSERT_TRUE(check.ok()) << check.status().ToString();
  EXPECT_TRUE(check->append_only);
  if (*state == Immutability::kUnsupported || (*state == Immutability::kMutable && ::geteuid() != 0)) {
    EXPECT_FALSE(check->immutability_supported && *state == Immutability::kUnsupported);
    GTEST_SKIP() << "no immutable flag here (filesystem or privileges)";
  }
  EXPECT_EQ(*state, Immutability::kImmutable);
  // config, key, pack, index, manifest, pin; the lock stays mutable and is not counted.
  EXPECT_TRUE(check->immutability_supported);
  EXPECT_EQ(check->immutable_files, 6u);
  EXPECT_TRUE(check->mutable_files.empty());
  EXPECT_EQ(r->backend().GetImmutability(FileKind::kConfig, "config").value(), Immutability::kImmutable);
  std::error_code ec;
  EXPECT_FALSE(fs::remove(Files("manifests").at(0), ec));
  EXPECT_EQ(ec, std::errc::operation_not_permitted);

  // A file that lost its flag is reported by name, and a rewrite attempt with
  // the same content (a writer that crashed before sealing) seals it again.
  ASSERT_TRUE(testing::ClearImmutable(Files("manifests").at(0)));
  check = r->Check(false);
  ASSERT_EQ(check->mutable_files.size(), 1u);
  EXPECT_NE(check->mutable_files[0].find(mid->Hex()), std::string::npos);
  auto bytes = r->backend().Read(FileKind::kManifest, mid->Hex(), 1 << 20);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(r->backend().Write(FileKind::kManifest, mid->Hex(), *bytes, false).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(r->Check(false)->mutable_files.size(), 0u);
}

TEST_F(RepositoryTest, OrdinaryRepositoriesStayMutable) {
  auto r = InitAndOpen(testing::SmallPacks());
  ASSERT_TRUE(r);
  auto d = r->Put(BlobType::kData, RandomBytes(100, 1));
  auto mid = r->SaveManifest({.roots = {*d}});
  ASSERT_TRUE(mid.ok());
  EXPECT_NE(r->backend().GetImmutability(FileKind::kManifest, mid->Hex()).value(), Immutability::kImmutable);
  auto check = r->Check(false);
  ASSERT_TRUE(check.ok());
  EXPECT_FALSE(check->append_only);
}

TEST_F(RepositoryTest, AppendOnlyRefusesDeletes) {
  auto r = InitAndOpen(testing::SmallPacks(LockMode::kExclusive), /*append_only=*/true);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->append_only());
  auto d = r->Put(BlobType::kData, RandomBytes(100, 1));
  auto mid = r->SaveManifest({.roots = {*d}});
  ASSERT_TRUE(mid.ok());
  Status st = r->DeleteManifest(*mid);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("append-only"), std::string::npos);
  EXPECT_EQ(r->ListManifests()->size(), 1u);
  // Repair may add an index but leaves the old files (the supersede list retires them).
  size_t before = Files("index").size();
  auto rep = r->RebuildIndex();
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_EQ(rep->index_files_removed, 0u);
  EXPECT_EQ(Files("index").size(), before + 1);
  r.reset();
  r = Reopen();
  EXPECT_TRUE(r->Get(*d).ok());
}

TEST_F(RepositoryTest, ChunkerSettingsComeFromTheConfig) {
  InitOptions o = testing::FastInit();
  o.cdc_min = 128 << 10;
  o.cdc_avg = 256 << 10;
  o.cdc_max = 1 << 20;
  o.fixed_chunk = 64 << 10;
  ASSERT_TRUE(Repository::Init(repo_, Pw(), o).ok());
  auto r = Reopen();
  EXPECT_EQ(r->CdcOptions().avg_size, 256u << 10);
  EXPECT_EQ(r->FixedOptions().chunk_size, 64u << 10);
  EXPECT_EQ(r->repo_id().size(), 32u);
  auto again = Reopen();
  EXPECT_EQ(again->CdcOptions().seed, r->CdcOptions().seed);
  o.cdc_avg = 300000;  // not a power of two
  EXPECT_EQ(Repository::Init((dir_ / "other").string(), Pw(), o).code(), StatusCode::kInvalidArgument);
}

TEST_F(RepositoryTest, KeyFileRepository) {
  std::string key = (dir_ / "keyfile").string();
  {
    auto bytes = RandomBytes(64, 5);
    auto f = io::File::Open(key, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE((*f)->PWrite(0, bytes).ok());
  }
  ASSERT_TRUE(Repository::Init(repo_, {.key_file = key}, testing::FastInit()).ok());
  EXPECT_TRUE(Repository::Open(repo_, {.key_file = key}).ok());
  auto wrong = Repository::Open(repo_, Pw("guess"));
  EXPECT_EQ(wrong.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace continuum::repo

namespace continuum::repo {
namespace {

class RepositoryKeysTest : public testing::TempDirTest {};

TEST_F(RepositoryKeysTest, KeyLeftByAnInterruptedInitIsSkipped) {
  // An init that died after writing its key: same password, another master key.
  ASSERT_TRUE(Repository::Init(repo_, Pw(), testing::FastInit()).ok());
  std::filesystem::remove(std::filesystem::path(repo_) / "config");
  ASSERT_TRUE(Repository::Init(repo_, Pw(), testing::FastInit()).ok());
  EXPECT_EQ(Files("keys").size(), 2u);
  auto r = Repository::Open(repo_, Pw());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto id = (*r)->Put(BlobType::kData, RandomBytes(100, 1));
  EXPECT_TRUE((*r)->Get(*id).ok());
}

TEST_F(RepositoryKeysTest, DamagedKeyFileIsDataLossNotWrongPassword) {
  ASSERT_TRUE(Repository::Init(repo_, Pw(), testing::FastInit()).ok());
  auto keys = Files("keys");
  ASSERT_EQ(keys.size(), 1u);
  std::filesystem::resize_file(keys[0], 100);
  auto r = Repository::Open(repo_, Pw());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find(keys[0].string()), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace continuum::repo
