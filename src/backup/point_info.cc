#include "continuum/backup/point_info.h"

#include "continuum/common/time_util.h"

namespace continuum::backup {

std::string_view PointTypeName(PointType type) { return type == PointType::kImage ? "image" : "path"; }

nlohmann::json PointInfo::ToJson() const {
  nlohmann::json j{{"id", id.Hex()},
                        {"time", FormatRfc3339(time_ns)},
                        {"type", std::string(PointTypeName(type))},
                        {"kind", kind},
                        {"sources", sources},
                        {"host", host},
                        {"tags", tags},
                        {"size", size},
                        {"files", files},
                        {"bytes_read", bytes_read},
                        {"new_raw_bytes", new_raw_bytes},
                        {"new_stored_bytes", new_stored_bytes},
                        {"chunk_size", chunk_size},
                        {"duration_ns", duration_ns},
                        {"warnings", warnings},
                        {"pinned", pinned}};
  if (kind != "full") {
    j["parent"] = parent;
    j["full"] = full;
  }
  if (source_file.ino != 0) {
    j["source_file"] = {{"dev", source_file.dev},       {"ino", source_file.ino},
                        {"size", source_file.size},     {"mtime_ns", source_file.mtime_ns},
                        {"ctime_ns", source_file.ctime_ns}};
  }
  if (!volume.name.empty()) {
    j["volume"] = {{"name", volume.name},     {"seq", volume.seq},
                   {"bookmark", volume.bookmark}, {"bitmap", volume.bitmap},
                   {"full_bitmap", volume.full_bitmap}, {"read", volume.read}};
  }
  return j;
}

std::vector<uint8_t> PointInfo::Encode() const {
  nlohmann::json j = ToJson();
  j.erase("id");
  j.erase("time");  // the manifest carries the time
  j.erase("pinned");  // a pin is its own file
  j["format"] = "continuum-point-v1";
  // Source paths may hold bytes that are not UTF-8: replaced, never thrown on.
  std::string text = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return {text.begin(), text.end()};
}

Result<PointInfo> PointInfo::Decode(const repo::ManifestId& id, int64_t time_ns, const std::vector<uint8_t>& payload) {
  auto j = nlohmann::json::parse(payload.begin(), payload.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || j.value("format", "") != "continuum-point-v1") {
    return DataLoss("point " + id.Hex() + ": manifest payload is not a continuum point description");
  }
  PointInfo p;
  p.id = id;
  p.time_ns = time_ns;
  try {
    std::string type = j.at("type").get<std::string>();
    if (type == "image") {
      p.type = PointType::kImage;
    } else if (type == "path") {
      p.type = PointType::kPath;
    } else {
      return DataLoss("point " + id.Hex() + ": unknown type '" + type + "'");
    }
    p.kind = j.value("kind", "full");
    p.sources = j.value("sources", std::vector<std::string>{});
    p.host = j.value("host", "");
    p.tags = j.value("tags", std::vector<std::string>{});
    p.size = j.value("size", uint64_t{0});
    p.files = j.value("files", uint64_t{0});
    p.bytes_read = j.value("bytes_read", uint64_t{0});
    p.new_raw_bytes = j.value("new_raw_bytes", uint64_t{0});
    p.new_stored_bytes = j.value("new_stored_bytes", uint64_t{0});
    p.chunk_size = j.value("chunk_size", uint32_t{0});
    p.duration_ns = j.value("duration_ns", int64_t{0});
    p.warnings = j.value("warnings", uint64_t{0});
    p.parent = j.value("parent", "");
    p.full = j.value("full", "");
    if (j.contains("source_file")) {
      const auto& f = j.at("source_file");
      if (!f.is_object()) return DataLoss("point " + id.Hex() + ": 'source_file' is not an object");
      p.source_file = {.dev = f.value("dev", uint64_t{0}), .ino = f.value("ino", uint64_t{0}),
                       .size = f.value("size", uint64_t{0}), .mtime_ns = f.value("mtime_ns", int64_t{0}),
                       .ctime_ns = f.value("ctime_ns", int64_t{0})};
    }
    if (j.contains("volume")) {
      const auto& v = j.at("volume");
      if (!v.is_object()) return DataLoss("point " + id.Hex() + ": 'volume' is not an object");
      p.volume.name = v.value("name", "");
      p.volume.seq = v.value("seq", uint64_t{0});
      p.volume.bookmark = v.value("bookmark", "");
      p.volume.bitmap = v.value("bitmap", "");
      p.volume.full_bitmap = v.value("full_bitmap", "");
      p.volume.read = v.value("read", "");
    }
  } catch (const nlohmann::json::exception& e) {
    // Wrong field types in a payload read from disk: an error, never a crash.
    return DataLoss("point " + id.Hex() + ": bad point description: " + e.what());
  }
  return p;
}

}  // namespace continuum::backup
