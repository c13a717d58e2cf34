#include "continuum/repo/blob_id.h"

#include <gtest/gtest.h>

namespace continuum::repo {
namespace {

TEST(BlobIdTest, HexRoundTrip) {
  BlobId id;
  for (int i = 0; i < 32; ++i) id.bytes[i] = static_cast<uint8_t>(i * 7);
  auto back = BlobId::FromHex(id.Hex());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, id);
  EXPECT_TRUE(IsHexName(id.Hex()));
  EXPECT_FALSE(BlobId::FromHex("xyz").ok());
  EXPECT_FALSE(BlobId::FromHex(std::string(64, 'g')).ok());
}

}  // namespace
}  // namespace continuum::repo
