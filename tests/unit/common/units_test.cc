#include "continuum/common/units.h"

#include <gtest/gtest.h>

#include "continuum/common/time_util.h"

namespace continuum {
namespace {

TEST(ParseSizeTest, AcceptsSuffixes) {
  EXPECT_EQ(ParseSize("512").value(), 512u);
  EXPECT_EQ(ParseSize("64K").value(), 64u * 1024);
  EXPECT_EQ(ParseSize("1.5G").value(), 1536ull * 1024 * 1024);
  EXPECT_EQ(ParseSize("2T").value(), 2ull << 40);
  EXPECT_EQ(ParseSize("4GiB").value(), 4ull << 30);
}

TEST(ParseSizeTest, RejectsGarbageWithMessageNamingInput) {
  auto r = ParseSize("12Q");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("12Q"), std::string::npos);
  EXPECT_FALSE(ParseSize("").ok());
  EXPECT_FALSE(ParseSize("-1").ok());
  EXPECT_FALSE(ParseSize("K").ok());
}

TEST(ParseDurationTest, AcceptsSuffixes) {
  EXPECT_EQ(ParseDuration("30s").value(), 30'000'000'000LL);
  EXPECT_EQ(ParseDuration("15m").value(), 900'000'000'000LL);
  EXPECT_EQ(ParseDuration("2h").value(), 7200'000'000'000LL);
  EXPECT_EQ(ParseDuration("7d").value(), 7 * 86400'000'000'000LL);
  EXPECT_FALSE(ParseDuration("5y").ok());
}

TEST(Rfc3339Test, ParsesFractionsAndOffsets) {
  auto a = ParseRfc3339("2026-11-21T10:00:00.123Z");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto b = ParseRfc3339("2026-11-21T12:00:00.123+02:00");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a.value(), b.value());
  EXPECT_EQ(FormatRfc3339(a.value()), "2026-11-21T10:00:00.123Z");
  auto c = ParseRfc3339("1970-01-01T00:00:01.000000001Z");
  EXPECT_EQ(c.value(), 1'000'000'001LL);
}

TEST(Rfc3339Test, RejectsMalformed) {
  EXPECT_FALSE(ParseRfc3339("2026-11-21").ok());
  EXPECT_FALSE(ParseRfc3339("2026-11-21T10:00:00").ok());
  EXPECT_FALSE(ParseRfc3339("2026-13-21T10:00:00Z").ok());
  EXPECT_FALSE(ParseRfc3339("2026-11-21T10:00:00Zjunk").ok());
}

}  // namespace
}  // namespace continuum
