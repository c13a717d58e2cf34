#include "dir_listing.h"

#include <set>

#include <nlohmann/json.hpp>

namespace continuum::backup {
namespace {

using Json = nlohmann::json;

// Keys: n name, t type, m mode, u uid, g gid, mt/ct times (ns), s size,
// i inode, l nlink, r rdev, lt symlink target, c chunks, d subtree, x xattrs
// (name -> bytes), h hard-link group.
constexpr const char* kTypeNames[] = {"f", "d", "l", "c", "b", "p", "s"};

Result<EntryType> TypeFromName(const std::string& s) {
  for (size_t i = 0; i < std::size(kTypeNames); ++i) {
    if (s == kTypeNames[i]) return static_cast<EntryType>(i);
  }
  return DataLoss("unknown entry type '" + s + "'");
}

}  // namespace

bool IsSafeEntryName(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos && name.size() <= 255;
}

std::vector<uint8_t> EncodeDirListing(const std::vector<DirEntry>& entries) {
  Json list = Json::array();
  for (const auto& e : entries) {
    Json j{{"n", e.name},         {"t", kTypeNames[static_cast<int>(e.type)]},
           {"m", e.mode},         {"u", e.uid},
           {"g", e.gid},
           {"mt", e.mtime_ns},    {"ct", e.ctime_ns},
           {"s", e.size},         {"i", e.inode},
           {"l", e.nlink}};
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
  // CBOR keeps raw bytes in strings: names need not be UTF-8.
  return Json::to_cbor(Json{{"v", 1}, {"e", std::move(list)}});
}

Result<std::vector<DirEntry>> DecodeDirListing(const std::vector<uint8_t>& payload, size_t ref_count,
                                               const std::string& what) {
  Json doc = Json::from_cbor(payload, /*strict=*/true, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || doc.value("v", 0) != 1 || !doc.contains("e") ||
      !doc["e"].is_array()) {
    return DataLoss(what + ": not a directory listing");
  }
  std::vector<DirEntry> out;
  std::set<std::string> names;
  try {
    for (const auto& j : doc["e"]) {
      DirEntry e;
      e.name = j.at("n").get<std::string>();
      if (!IsSafeEntryName(e.name)) return DataLoss(what + ": unsafe entry name '" + e.name + "'");
      if (!names.insert(e.name).second) return DataLoss(what + ": duplicate entry name '" + e.name + "'");
      auto type = TypeFromName(j.at("t").get<std::string>());
      if (!type.ok()) return DataLoss(what + ": entry '" + e.name + "': " + type.status().message());
      e.type = *type;
      e.mode = j.at("m").get<uint32_t>() & 07777;
      e.uid = j.at("u").get<uint32_t>();
      e.gid = j.at("g").get<uint32_t>();
      e.mtime_ns = j.value("mt", int64_t{0});
      e.ctime_ns = j.value("ct", int64_t{0});
      e.size = j.value("s", uint64_t{0});
      e.inode = j.value("i", uint64_t{0});
      e.nlink = j.value("l", uint64_t{0});
      e.rdev = j.value("r", uint64_t{0});
      e.hardlink_group = j.value("h", uint64_t{0});
      if (e.type == EntryType::kSymlink) e.link_target = j.at("lt").get<std::string>();
      if (e.type == EntryType::kFile) {
        e.chunks = j.at("c").get<std::vector<int64_t>>();
        for (int64_t c : e.chunks) {
          if (c >= static_cast<int64_t>(ref_count)) return DataLoss(what + ": entry '" + e.name + "': ref out of range");
        }
      } else if (j.contains("c")) {
        return DataLoss(what + ": entry '" + e.name + "' has content but is not a file");
      }
      if (e.type == EntryType::kDir) {
        e.subtree = j.at("d").get<int64_t>();
        if (e.subtree < 0 || e.subtree >= static_cast<int64_t>(ref_count)) {
          return DataLoss(what + ": directory '" + e.name + "' has no valid subtree");
        }
      }
      if (j.contains("x")) {
        for (const auto& [k, v] : j["x"].items()) {
          if (!v.is_binary()) return DataLoss(what + ": entry '" + e.name + "': bad xattr");
          e.xattrs[k] = std::vector<uint8_t>(v.get_binary().begin(), v.get_binary().end());
        }
      }
      out.push_back(std::move(e));
    }
  } catch (const Json::exception& ex) {
    // Wrong field types from disk: an error, never a crash.
    return DataLoss(what + ": bad directory listing: " + ex.what());
  }
  return out;
}

}  // namespace continuum::backup
