// Covers src/repo/crypto.cc and src/repo/key_file.cc.
#include <gtest/gtest.h>

#include <fstream>

#include "continuum/common/checksum.h"

#include "repo/crypto.h"
#include "repo/key_file.h"
#include "repo_test_util.h"

namespace continuum::repo {
namespace {

using testing::FastKdf;
using testing::Pw;

MasterKey SomeKey(uint8_t fill) {
  MasterKey k;
  k.data_key.fill(fill);
  k.id_key.fill(static_cast<uint8_t>(fill + 1));
  return k;
}

TEST(CryptoTest, SealOpenRoundTripAndTamperDetection) {
  auto c = Crypto::Create(SomeKey(1));
  ASSERT_TRUE(c.ok());
  std::vector<uint8_t> msg = testing::RandomBytes(1000, 1);
  uint8_t aad[] = {1, 2, 3};
  auto sealed = (*c)->Seal(aad, msg);
  ASSERT_TRUE(sealed.ok());
  EXPECT_EQ(sealed->size(), msg.size() + kSealOverhead);
  auto back = (*c)->Open(aad, *sealed, "test");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, msg);
  // Fresh nonce per seal: the same plaintext never gives the same ciphertext.
  auto again = (*c)->Seal(aad, msg);
  EXPECT_NE(*again, *sealed);
  for (size_t pos : {size_t{0}, size_t{20}, sealed->size() - 1}) {
    auto bad = *sealed;
    bad[pos] ^= 0x40;
    EXPECT_EQ((*c)->Open(aad, bad, "test").status().code(), StatusCode::kDataLoss);
  }
  uint8_t other_aad[] = {1, 2, 4};
  EXPECT_FALSE((*c)->Open(other_aad, *sealed, "test").ok());
  EXPECT_FALSE((*c)->Open(aad, std::span<const uint8_t>(*sealed).first(10), "test").ok());
}

TEST(CryptoTest, IdsAreKeyedAndTyped) {
  auto a = Crypto::Create(SomeKey(1));
  auto b = Crypto::Create(SomeKey(7));
  std::vector<uint8_t> data = testing::RandomBytes(100, 2);
  BlobId ida = (*a)->Id(BlobType::kData, data);
  EXPECT_EQ(ida, (*a)->Id(BlobType::kData, data));
  EXPECT_NE(ida, (*b)->Id(BlobType::kData, data));  // another repository, another id
  EXPECT_NE(ida, (*a)->Id(BlobType::kTree, data));
  EXPECT_NE(ida, Sha256(data));                      // not a plain content hash
}

TEST(KeyFileTest, PasswordWrapUnwrap) {
  MasterKey k = SomeKey(3);
  auto file = KeyFile::Wrap(k, Pw("secret"), FastKdf());
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->size(), kKeyFileBytes);
  auto back = KeyFile::Unwrap(*file, Pw("secret"), "k");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->data_key, k.data_key);
  EXPECT_EQ(back->id_key, k.id_key);
  auto wrong = KeyFile::Unwrap(*file, Pw("Secret"), "k");
  EXPECT_EQ(wrong.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(wrong.status().message(), "wrong password");
  EXPECT_FALSE(KeyFile::Wrap(k, Pw(""), FastKdf()).ok());
}

TEST(KeyFileTest, DamageIsNotAWrongPassword) {
  auto file = KeyFile::Wrap(SomeKey(3), Pw("secret"), FastKdf());
  ASSERT_TRUE(file.ok());
  for (size_t pos = 0; pos < file->size(); pos += 7) {
    auto bad = *file;
    bad[pos] ^= 1;
    auto r = KeyFile::Unwrap(bad, Pw("secret"), "keys/x");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << pos << ": " << r.status().ToString();
  }
}

TEST(KeyFileTest, RefusesHugeArgonParametersFromDisk) {
  auto file = KeyFile::Wrap(SomeKey(3), Pw("secret"), FastKdf());
  ASSERT_TRUE(file.ok());
  // Forge mem_limit = 1 TiB with a valid checksum: open must refuse, not allocate.
  std::vector<uint8_t> bad = *file;
  uint64_t mem = 1ull << 40;
  std::memcpy(bad.data() + 16, &mem, 8);
  uint64_t sum = Checksum64(bad.data(), 164);
  std::memcpy(bad.data() + 164, &sum, 8);
  auto r = KeyFile::Unwrap(bad, Pw("secret"), "keys/x");
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("out of range"), std::string::npos) << r.status().message();
}

TEST(KeyFileTest, KeyFileCredentials) {
  std::string path = ::testing::TempDir() + "/continuum-keyfile-" + std::to_string(::getpid());
  {
    std::ofstream f(path, std::ios::binary);
    auto bytes = testing::RandomBytes(64, 9);
    f.write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  }
  Credentials creds{.key_file = path};
  auto file = KeyFile::Wrap(SomeKey(5), creds, FastKdf());
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_TRUE(KeyFile::Unwrap(*file, creds, "k").ok());
  EXPECT_EQ(KeyFile::Unwrap(*file, Pw("x"), "k").status().code(), StatusCode::kInvalidArgument);
  {
    std::ofstream f(path, std::ios::binary);
    f << "short";
  }
  EXPECT_EQ(KeyFile::Unwrap(*file, creds, "k").status().code(), StatusCode::kInvalidArgument);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace continuum::repo
namespace continuum::repo {
namespace {
TEST(CryptoTest, TwoObjectsSameKeyInteroperate) {
  auto a = Crypto::Create(SomeKey(1));
  auto b = Crypto::Create(SomeKey(1));
  std::vector<uint8_t> msg = testing::RandomBytes(100, 1);
  auto sealed = (*a)->Seal({}, msg);
  auto back = (*b)->Open({}, *sealed, "x");
  EXPECT_TRUE(back.ok());
  uint8_t aad[3] = {1, 2, 3};
  sealed = (*a)->Seal(aad, msg);
  back = (*b)->Open(aad, *sealed, "x");
  EXPECT_TRUE(back.ok());
  EXPECT_EQ((*a)->Id(BlobType::kData, msg), (*b)->Id(BlobType::kData, msg));
}
}  // namespace
}  // namespace continuum::repo
