// Deterministic fuzzing of every repository file parser (src/repo/*_format.cc,
// *_file.cc, *_codec.cc, lock_manager.cc): mutated input gives an error, never a
// crash, a hang or a huge allocation. Plaintext behind encryption is mutated and
// then sealed with the right key, so the parsers themselves are reached.
#include <gtest/gtest.h>

#include <random>

#include "continuum/common/checksum.h"
#include "repo/bytes.h"
#include "repo/index_file.h"
#include "repo/key_file.h"
#include "repo/lock_manager.h"
#include "repo/manifest_codec.h"
#include "repo/pack_format.h"
#include "repo/repo_config.h"
#include "repo/sealed_file.h"
#include "repo_test_util.h"

namespace continuum::repo {
namespace {

constexpr int kIterations = 3000;

std::vector<uint8_t> Mutate(std::vector<uint8_t> in, std::mt19937_64& rng) {
  auto pick = [&](size_t n) { return n == 0 ? 0 : static_cast<size_t>(rng() % n); };
  int ops = 1 + static_cast<int>(rng() % 3);
  for (int k = 0; k < ops; ++k) {
    switch (rng() % 7) {
      case 0:  // flip bits
        if (!in.empty()) in[pick(in.size())] ^= static_cast<uint8_t>(1u << (rng() % 8));
        break;
      case 1:  // random byte
        if (!in.empty()) in[pick(in.size())] = static_cast<uint8_t>(rng());
        break;
      case 2:  // truncate
        in.resize(pick(in.size() + 1));
        break;
      case 3: {  // append junk
        size_t n = pick(64);
        for (size_t i = 0; i < n; ++i) in.push_back(static_cast<uint8_t>(rng()));
        break;
      }
      case 4: {  // extreme integer in a field
        static const uint64_t kValues[] = {0, 1, 0x7f, 0xff, 0xffff, 0x7fffffff, 0xffffffff, 0xffffffffffffffffull,
                                           1ull << 32, 1ull << 40};
        if (in.size() >= 8) {
          size_t at = pick(in.size() - 7);
          uint64_t v = kValues[rng() % 10];
          size_t w = (rng() % 2) ? 4 : 8;
          std::memcpy(in.data() + at, &v, w);
        }
        break;
      }
      case 5: {  // insert bytes
        size_t at = pick(in.size() + 1);
        in.insert(in.begin() + static_cast<long>(at), pick(16) + 1, static_cast<uint8_t>(rng()));
        break;
      }
      default:  // duplicate a region
        if (in.size() > 2) {
          size_t a = pick(in.size()), n = std::min<size_t>(pick(100) + 1, in.size() - a);
          std::vector<uint8_t> region(in.begin() + static_cast<long>(a), in.begin() + static_cast<long>(a + n));
          in.insert(in.begin() + static_cast<long>(pick(in.size())), region.begin(), region.end());
        }
        break;
    }
  }
  return in;
}

class FormatFuzzTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MasterKey k;
    k.data_key.fill(3);
    k.id_key.fill(4);
    crypto_ = std::move(*Crypto::Create(k));
  }
  BlobId Id(int i) {
    BlobId id;
    id.bytes[0] = static_cast<uint8_t>(i);
    id.bytes[31] = static_cast<uint8_t>(i * 7);
    return id;
  }
  std::unique_ptr<Crypto> crypto_;
  std::mt19937_64 rng_{12345};
};

TEST_F(FormatFuzzTest, Config) {
  RepoConfig c;
  c.repo_id.fill(9);
  c.cdc_min = 512 << 10;
  c.cdc_avg = 1 << 20;
  c.cdc_max = 8 << 20;
  c.fixed_chunk = 1 << 20;
  auto file = c.Encode(*crypto_);
  ASSERT_TRUE(file.ok());
  ASSERT_TRUE(RepoConfig::Decode(*file, *crypto_, "config").ok());
  // The plaintext body, sealed properly after mutation.
  std::vector<uint8_t> header(file->begin(), file->begin() + 24);
  auto body = crypto_->Open(header, std::span<const uint8_t>(*file).subspan(24), "config");
  ASSERT_TRUE(body.ok());
  for (int i = 0; i < kIterations; ++i) {
    auto raw = Mutate(*file, rng_);
    // Every byte is authenticated (header as AAD, body sealed): any change is
    // refused. A mutation can give the file back unchanged (a truncation to
    // its own size, a byte set to its own value): that one decodes.
    EXPECT_EQ(RepoConfig::Decode(raw, *crypto_, "config").ok(), raw == *file) << "iteration " << i;
    std::vector<uint8_t> sealed = header;
    ASSERT_TRUE(crypto_->SealAppend(header, Mutate(*body, rng_), &sealed).ok());
    auto r = RepoConfig::Decode(sealed, *crypto_, "config");
    if (!r.ok()) {
      EXPECT_NE(r.status().message().find("config"), std::string::npos);
    }
  }
}

TEST_F(FormatFuzzTest, KeyFile) {
  MasterKey k;
  auto file = KeyFile::Wrap(k, testing::Pw("pw"), testing::FastKdf());
  ASSERT_TRUE(file.ok());
  for (int i = 0; i < kIterations / 3; ++i) {
    auto raw = Mutate(*file, rng_);
    if (raw.size() == kKeyFileBytes && (rng_() % 2)) {
      // Get past the checksum, but keep the Argon2 cost fields cheap: a crafted
      // 1 GiB / 32-pass key is accepted by design and would only be slow.
      std::memcpy(raw.data() + 8, file->data() + 8, 16);
      uint64_t sum = Checksum64(raw.data(), 164);
      std::memcpy(raw.data() + 164, &sum, 8);
    }
    auto r = KeyFile::Unwrap(raw, testing::Pw("pw"), "keys/k");
    if (r.ok()) {
      EXPECT_EQ(raw, *file);
    }
  }
}

TEST_F(FormatFuzzTest, IndexFile) {
  IndexContents c;
  c.created_ns = 77;
  c.supersedes = {Id(1)};
  for (int p = 0; p < 3; ++p) {
    IndexPack pack{Id(10 + p), 10000, {}};
    for (int b = 0; b < 4; ++b) {
      pack.entries.push_back({Id(100 + p * 10 + b), BlobType::kData, 0, 1028, 1000, static_cast<uint64_t>(b) * 1028});
    }
    c.packs.push_back(pack);
  }
  auto file = IndexFile::Encode(*crypto_, c);
  ASSERT_TRUE(file.ok());
  auto ok = IndexFile::Decode(*crypto_, *file, "index");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  std::vector<uint8_t> head(file->begin(), file->begin() + 8);
  auto body = crypto_->Open(head, std::span<const uint8_t>(*file).subspan(8), "index");
  ASSERT_TRUE(body.ok());
  for (int i = 0; i < kIterations; ++i) {
    IndexFile::Decode(*crypto_, Mutate(*file, rng_), "index").status().IgnoreError();
    auto sealed = SealedFile::Encode(*crypto_, Magic("CIDX"), 1, Mutate(*body, rng_));
    ASSERT_TRUE(sealed.ok());
    auto r = IndexFile::Decode(*crypto_, *sealed, "index");
    if (r.ok()) {
      for (const auto& p : r->packs) {
        for (const auto& e : p.entries) EXPECT_LE(e.offset + e.stored_len, p.pack_size);
      }
    }
  }
}

TEST_F(FormatFuzzTest, PackHeaderAndTrailer) {
  std::vector<PackEntry> entries;
  uint64_t off = 0;
  for (int b = 0; b < 5; ++b) {
    entries.push_back({Id(b), BlobType::kData, 1, 500, 1000, off});
    off += 500;
  }
  auto tail = PackFormat::EncodeTail(*crypto_, entries);
  ASSERT_TRUE(tail.ok());
  std::span<const uint8_t> sealed_header(tail->data(), tail->size() - kPackTrailerBytes);
  std::vector<uint8_t> trailer(tail->end() - kPackTrailerBytes, tail->end());
  ASSERT_TRUE(PackFormat::DecodeTrailer(trailer, "pack").ok());
  ASSERT_TRUE(PackFormat::DecodeHeader(*crypto_, sealed_header, off, "pack").ok());
  auto plain = crypto_->Open(PackFormat::HeaderAad(), sealed_header, "pack");
  ASSERT_TRUE(plain.ok());
  for (int i = 0; i < kIterations; ++i) {
    auto t = Mutate(trailer, rng_);
    if (t.size() == kPackTrailerBytes && (rng_() % 2)) {
      uint64_t sum = Checksum64(t.data(), 12);
      std::memcpy(t.data() + 12, &sum, 8);
    }
    PackFormat::DecodeTrailer(t, "pack").status().IgnoreError();
    std::vector<uint8_t> resealed;
    ASSERT_TRUE(crypto_->SealAppend(PackFormat::HeaderAad(), Mutate(*plain, rng_), &resealed).ok());
    uint64_t data_end = (rng_() % 4) ? off : rng_();
    auto r = PackFormat::DecodeHeader(*crypto_, resealed, data_end, "pack");
    if (r.ok()) {
      uint64_t total = 0;
      for (const auto& e : *r) total += e.stored_len;
      EXPECT_EQ(total, data_end);
    }
    PackFormat::DecodeHeader(*crypto_, Mutate(std::vector<uint8_t>(sealed_header.begin(), sealed_header.end()), rng_),
                             off, "pack")
        .status()
        .IgnoreError();
  }
}

TEST_F(FormatFuzzTest, ManifestAndTree) {
  std::string json = R"({"kind":"full","source":"/srv"})";
  Manifest m{.time_ns = 5, .roots = {Id(1), Id(2)}, .payload = {json.begin(), json.end()}};
  auto file = ManifestCodec::Encode(*crypto_, m);
  ASSERT_TRUE(file.ok());
  std::vector<uint8_t> head(file->begin(), file->begin() + 8);
  auto body = crypto_->Open(head, std::span<const uint8_t>(*file).subspan(8), "manifest");
  ASSERT_TRUE(body.ok());
  auto tree = ManifestCodec::EncodeTree({.refs = {Id(3), Id(4), Id(5)}, .payload = {1, 2, 3}});
  for (int i = 0; i < kIterations; ++i) {
    ManifestCodec::Decode(*crypto_, Mutate(*file, rng_), "manifest").status().IgnoreError();
    auto sealed = SealedFile::Encode(*crypto_, Magic("CMAN"), 1, Mutate(*body, rng_));
    ASSERT_TRUE(sealed.ok());
    auto r = ManifestCodec::Decode(*crypto_, *sealed, "manifest");
    if (r.ok()) {
      EXPECT_LE(r->payload.size(), kMaxManifestPayload);
    }
    ManifestCodec::DecodeTree(Mutate(tree, rng_), "tree").status().IgnoreError();
  }
}

TEST_F(FormatFuzzTest, Lock) {
  auto file = LockManager::Encode({LockMode::kExclusive, "host-a", 42, 7, 1000});
  ASSERT_TRUE(LockManager::Decode(file, "lock").ok());
  for (int i = 0; i < kIterations; ++i) {
    auto raw = Mutate(file, rng_);
    if (raw.size() >= 8 && (rng_() % 2)) {
      uint64_t sum = Checksum64(raw.data(), raw.size() - 8);
      std::memcpy(raw.data() + raw.size() - 8, &sum, 8);
    }
    auto r = LockManager::Decode(raw, "lock");
    if (r.ok()) {
      EXPECT_GE(r->host.size(), 1u);
      EXPECT_LE(r->host.size(), 255u);
    }
  }
}

}  // namespace
}  // namespace continuum::repo
