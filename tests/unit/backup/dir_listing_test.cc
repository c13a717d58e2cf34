// Covers src/backup/dir_listing.cc: the hand-written CBOR codec of directory
// listings writes exactly the bytes the first versions wrote through
// nlohmann::json (same directory, same tree id, across versions), reads what
// they wrote, and turns every damaged or crafted listing into kDataLoss (a
// mutation fuzz over valid listings and random bytes).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "backup/dir_listing.h"

namespace continuum::backup {
namespace {

using Json = nlohmann::json;
constexpr const char* kTypes[] = {"f", "d", "l", "c", "b", "p", "s"};

// The encoder of the first versions, kept as the reference.
std::vector<uint8_t> ReferenceEncode(const std::vector<DirEntry>& entries) {
  Json list = Json::array();
  for (const auto& e : entries) {
    Json j{{"n", e.name},      {"t", kTypes[static_cast<int>(e.type)]},
           {"m", e.mode},      {"u", e.uid},
           {"g", e.gid},       {"mt", e.mtime_ns},
           {"ct", e.ctime_ns}, {"s", e.size},
           {"i", e.inode},     {"l", e.nlink}};
    if (e.rdev) j["r"] = e.rdev;
    if (e.type == EntryType::kSymlink) j["lt"] = e.link_target;
    if (e.type == EntryType::kFile) j["c"] = e.chunks;
    if (e.type == EntryType::kDir) j["d"] = e.subtree;
    if (!e.xattrs.empty()) {
      Json x = Json::object();
      for (const auto& [k, v] : e.xattrs) x[k] = Json::binary(v);
      j["x"] = std::move(x);
    }
    if (e.hardlink_group) j["h"] = e.hardlink_group;
    list.push_back(std::move(j));
  }
  return Json::to_cbor(Json{{"v", 1}, {"e", std::move(list)}});
}

// Values around every CBOR length boundary.
uint64_t Edge(std::mt19937_64& rng) {
  static const uint64_t kEdges[] = {0,       1,          23,         24,          255,         256,
                                    65535,   65536,      0xffffffff, 0x100000000, UINT64_MAX / 3, 07777};
  return rng() % 3 == 0 ? rng() : kEdges[rng() % std::size(kEdges)];
}

std::vector<DirEntry> RandomEntries(std::mt19937_64& rng, size_t n, size_t refs) {
  std::vector<DirEntry> out;
  for (size_t i = 0; i < n; ++i) {
    DirEntry e;
    e.name = "entry-" + std::to_string(i) + std::string(rng() % 300 == 0 ? 240 : rng() % 30, 'x');
    e.name[0] = static_cast<char>(0x80 + rng() % 100);  // not UTF-8: raw bytes
    e.type = static_cast<EntryType>(rng() % 7);
    e.mode = static_cast<uint32_t>(Edge(rng)) & 07777;
    e.uid = static_cast<uint32_t>(Edge(rng));
    e.gid = static_cast<uint32_t>(Edge(rng));
    e.mtime_ns = static_cast<int64_t>(Edge(rng)) * (rng() % 2 ? 1 : -1);
    e.ctime_ns = static_cast<int64_t>(rng() >> 1);
    e.size = Edge(rng);
    e.inode = Edge(rng);
    e.nlink = rng() % 4;
    e.rdev = rng() % 3 == 0 ? Edge(rng) : 0;
    if (e.type == EntryType::kSymlink) e.link_target = std::string(rng() % 300, 't');
    if (e.type == EntryType::kFile) {
      for (size_t c = rng() % 40; c > 0; --c) {
        e.chunks.push_back(rng() % 2 ? static_cast<int64_t>(rng() % refs) : -static_cast<int64_t>(Edge(rng) >> 1) - 1);
      }
    }
    if (e.type == EntryType::kDir) e.subtree = static_cast<int64_t>(rng() % refs);
    if (rng() % 4 == 0) {
      e.xattrs["user.a"] = {1, 2, 3};
      e.xattrs["security.selinux"] = std::vector<uint8_t>(rng() % 300, 7);
    }
    e.hardlink_group = rng() % 5 == 0 ? Edge(rng) : 0;
    out.push_back(std::move(e));
  }
  std::sort(out.begin(), out.end(), [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
  return out;
}

void ExpectSame(const DirEntry& a, const DirEntry& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.type, b.type);
  EXPECT_EQ(a.mode, b.mode);
  EXPECT_EQ(a.uid, b.uid);
  EXPECT_EQ(a.gid, b.gid);
  EXPECT_EQ(a.mtime_ns, b.mtime_ns);
  EXPECT_EQ(a.ctime_ns, b.ctime_ns);
  EXPECT_EQ(a.size, b.size);
  EXPECT_EQ(a.inode, b.inode);
  EXPECT_EQ(a.nlink, b.nlink);
  EXPECT_EQ(a.rdev, b.rdev);
  EXPECT_EQ(a.link_target, b.link_target);
  EXPECT_EQ(a.chunks, b.chunks);
  if (a.type == EntryType::kDir) {
    EXPECT_EQ(a.subtree, b.subtree);
  }
  EXPECT_EQ(a.xattrs, b.xattrs);
  EXPECT_EQ(a.hardlink_group, b.hardlink_group);
}

TEST(DirListingCodecTest, WritesTheBytesOfTheFirstVersionsAndReadsThemBack) {
  std::mt19937_64 rng(42);
  for (size_t round = 0; round < 200; ++round) {
    const size_t refs = 1 + rng() % 50;
    auto entries = RandomEntries(rng, rng() % 40, refs);
    auto bytes = EncodeDirListing(entries);
    ASSERT_EQ(bytes, ReferenceEncode(entries)) << "round " << round;
    auto back = DecodeDirListing(bytes, refs, "t");
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    ASSERT_EQ(back->size(), entries.size());
    for (size_t i = 0; i < entries.size(); ++i) ExpectSame((*back)[i], entries[i]);
  }
  // Large directories: the array length takes two and four bytes.
  for (size_t n : {300u, 70000u}) {
    auto entries = RandomEntries(rng, n, 10);
    EXPECT_EQ(EncodeDirListing(entries), ReferenceEncode(entries));
    EXPECT_TRUE(DecodeDirListing(EncodeDirListing(entries), 10, "t").ok());
  }
}

TEST(DirListingCodecTest, ReadsOtherKeyOrdersAndIgnoresUnknownKeys) {
  Json j = Json::parse(R"({"v": 1, "e": [{"zz": [1, {"a": 2.5}, null], "n": "a", "t": "f", "m": 420,
                           "u": 0, "g": 0, "c": [0, -5]}]})");
  auto got = DecodeDirListing(Json::to_cbor(j), 1, "t");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ((*got)[0].chunks, (std::vector<int64_t>{0, -5}));
  EXPECT_EQ((*got)[0].mode, 0644u);
}

TEST(DirListingCodecTest, CraftedListingsAreDataLossNamingTheProblem) {
  auto cbor = [](const char* text) { return Json::to_cbor(Json::parse(text)); };
  struct Case {
    const char* json;
    const char* message;
  } cases[] = {
      {R"({"v": 2, "e": []})", "not a directory listing"},
      {R"({"e": []})", "not a directory listing"},
      {R"({"v": 1, "e": [{"n": "a", "t": "f", "m": 1, "u": 0, "g": 0}]})", "without content list"},
      {R"({"v": 1, "e": [{"n": "a", "t": "d", "m": 1, "u": 0, "g": 0, "d": 7}]})", "no valid subtree"},
      {R"({"v": 1, "e": [{"n": "a", "t": "p", "m": 1, "u": 0, "g": 0, "c": []}]})", "not a file"},
      {R"({"v": 1, "e": [{"n": "..", "t": "p", "m": 1, "u": 0, "g": 0}]})", "unsafe entry name '..'"},
      {R"({"v": 1, "e": [{"n": "a/b", "t": "p", "m": 1, "u": 0, "g": 0}]})", "unsafe entry name"},
      {R"({"v": 1, "e": [{"n": "a", "t": "q", "m": 1, "u": 0, "g": 0}]})", "unknown entry type 'q'"},
      {R"({"v": 1, "e": [{"n": "a", "t": "p", "m": "x", "u": 0, "g": 0}]})", "field 'm' has the wrong type"},
      {R"({"v": 1, "e": [{"n": "a", "t": "p", "m": 1, "u": 4294967296, "g": 0}]})", "field 'u'"},
      {R"({"v": 1, "e": [{"n": "a", "t": "f", "m": 1, "u": 0, "g": 0, "c": [3]}]})", "ref out of range"},
      {R"({"v": 1, "e": [{"n": "a", "t": "p", "m": 1, "u": 0, "g": 0},
                          {"n": "a", "t": "p", "m": 1, "u": 0, "g": 0}]})", "duplicate entry name 'a'"},
  };
  for (const auto& c : cases) {
    auto got = DecodeDirListing(cbor(c.json), 2, "tree X");
    ASSERT_FALSE(got.ok()) << c.json;
    EXPECT_EQ(got.status().code(), StatusCode::kDataLoss);
    EXPECT_NE(got.status().message().find(c.message), std::string::npos) << got.status().message();
    EXPECT_NE(got.status().message().find("tree X"), std::string::npos);
  }
  // Trailing bytes, truncation, indefinite lengths.
  auto good = EncodeDirListing({{.name = "a", .type = EntryType::kFifo}});
  auto longer = good;
  longer.push_back(0);
  EXPECT_FALSE(DecodeDirListing(longer, 0, "t").ok());
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(DecodeDirListing(std::vector<uint8_t>(good.begin(), good.begin() + n), 0, "t").ok()) << n;
  }
  EXPECT_FALSE(DecodeDirListing({0xbf, 0x61, 'v', 0x01, 0xff}, 0, "t").ok());
  // A length claiming more items than bytes left does not allocate for them.
  EXPECT_FALSE(DecodeDirListing({0xa1, 0x61, 'e', 0x9b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 0, "t").ok());
}

TEST(DirListingCodecTest, MutatedListingsNeverCrash) {
  std::mt19937_64 rng(7);
  size_t decoded = 0, rejected = 0;
  for (size_t round = 0; round < 3000; ++round) {
    auto bytes = EncodeDirListing(RandomEntries(rng, 1 + rng() % 6, 4));
    for (size_t m = 1 + rng() % 4; m > 0; --m) {
      switch (rng() % 4) {
        case 0:
          bytes[rng() % bytes.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
          break;
        case 1:
          bytes[rng() % bytes.size()] = static_cast<uint8_t>(rng());
          break;
        case 2:
          bytes.resize(rng() % bytes.size());
          break;
        default:
          bytes.insert(bytes.begin() + static_cast<long>(rng() % (bytes.size() + 1)), static_cast<uint8_t>(rng()));
      }
      if (bytes.empty()) bytes.push_back(0xa0);
    }
    auto got = DecodeDirListing(bytes, 4, "t");
    if (got.ok()) {
      ++decoded;
      for (const auto& e : *got) EXPECT_TRUE(IsSafeEntryName(e.name));
    } else {
      ++rejected;
      EXPECT_EQ(got.status().code(), StatusCode::kDataLoss);
    }
  }
  EXPECT_GT(rejected, 1000u);
  std::vector<uint8_t> noise(512);
  for (size_t round = 0; round < 2000; ++round) {
    for (auto& b : noise) b = static_cast<uint8_t>(rng());
    noise.resize(rng() % 512);
    EXPECT_FALSE(DecodeDirListing(noise, 4, "t").ok() && noise.empty());
    noise.resize(512);
  }
  (void)decoded;
}

}  // namespace
}  // namespace continuum::backup
