// Covers include/continuum/common/json_field.h: fields of JSON from a peer or
// a file never throw; a wrong type or range is an error naming the field.
#include "continuum/common/json_field.h"

#include <gtest/gtest.h>

namespace continuum {
namespace {

using nlohmann::json;

TEST(JsonField, ReadsPresentFieldsAndDefaultsForAbsentOrNull) {
  json j = json::parse(R"({"n": 42, "big": 18446744073709551615, "neg": -3, "s": "x", "b": true, "z": null})");
  EXPECT_EQ(*JsonField<uint64_t>(j, "n", 0), 42u);
  EXPECT_EQ(*JsonField<uint64_t>(j, "big", 0), UINT64_MAX);
  EXPECT_EQ(*JsonField<int>(j, "neg", 0), -3);
  EXPECT_EQ(*JsonField<int64_t>(j, "n", 0), 42);
  EXPECT_EQ(*JsonField<std::string>(j, "s", ""), "x");
  EXPECT_TRUE(*JsonField<bool>(j, "b", false));
  EXPECT_EQ(*JsonField<uint64_t>(j, "missing", 7), 7u);
  EXPECT_EQ(*JsonField<std::string>(j, "z", "d"), "d");
}

TEST(JsonField, RefusesOtherTypesAndOutOfRangeNumbersNamingTheField) {
  json j = json::parse(R"({"s": "12", "f": 1e300, "a": [1], "o": {}, "neg": -1, "big": 18446744073709551615,
                           "b": true, "n": 5})");
  for (const char* key : {"s", "f", "a", "o", "b"}) {
    auto v = JsonField<uint64_t>(j, key, 0);
    ASSERT_FALSE(v.ok()) << key;
    EXPECT_EQ(v.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(v.status().message().find(std::string("\"") + key + "\""), std::string::npos) << v.status().message();
  }
  EXPECT_FALSE(JsonField<uint64_t>(j, "neg", 0).ok());
  EXPECT_FALSE(JsonField<uint32_t>(j, "big", 0).ok());
  EXPECT_FALSE(JsonField<int>(j, "big", 0).ok());
  EXPECT_FALSE(JsonField<int64_t>(j, "big", 0).ok());
  EXPECT_FALSE(JsonField<bool>(j, "n", false).ok());
  EXPECT_FALSE(JsonField<std::string>(j, "n", "").ok());
  EXPECT_FALSE(JsonField<int>(json::array(), "n", 0).ok());
  EXPECT_FALSE(JsonField<int>(json::parse("[", nullptr, false), "n", 0).ok());  // not JSON at all
}

}  // namespace
}  // namespace continuum
