#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "continuum/common/result.h"
#include "continuum/repo/manifest.h"

namespace continuum::backup {

// What a point holds: a disk image (offset -> chunk map) or directory trees.
enum class PointType { kImage, kPath };
std::string_view PointTypeName(PointType type);

// One backup point as the backup layer describes it. Stored as the manifest
// payload (JSON text, docs/user-guide/backup.md "Point format"); `id` is not
// stored, it is the manifest's id.
struct PointInfo {
  repo::ManifestId id;
  int64_t time_ns = 0;
  PointType type = PointType::kImage;
  // "full", "incremental" (taken against the previous point of the same
  // source) or "differential" (against the newest full of the source). Every
  // point is still a complete map: the kind only says what was read.
  std::string kind = "full";
  std::string parent;  // hex id of the point this one was taken against; "" for full points
  std::string full;    // hex id of the full point whose chain this is; "" for full points
  std::vector<std::string> sources;  // absolute paths
  std::string host;
  std::vector<std::string> tags;
  uint64_t size = 0;            // image size, or the sum of file sizes
  uint64_t files = 0;           // path points: entries of any type
  uint64_t bytes_read = 0;      // read from the source
  uint64_t new_raw_bytes = 0;   // plaintext of blobs this point added to the repository
  uint64_t new_stored_bytes = 0;  // the same after compression and encryption
  uint32_t chunk_size = 0;      // image points: fixed chunk size
  int64_t duration_ns = 0;
  uint64_t warnings = 0;        // entries that could not be read (path points)
  // Volume points (`backup volume`): where in the volume's history the point
  // was taken and which changed-block bitmaps track the changes since it.
  struct Volume {
    std::string name;         // empty: not a volume point
    uint64_t seq = 0;         // the bookmark's seq; the point holds the volume as of it
    std::string bookmark;     // the bookmark's label
    std::string bitmap;       // bitmap base with every change after `seq` ("" none)
    std::string full_bitmap;  // full points: the same, kept for later differentials
    std::string read;         // "changed" (only bitmap regions) or "all"
  } volume;
  // Image points of a regular file: the file's identity and times when read.
  // An incremental of the same file with all of them unchanged reads nothing
  // and reuses the parent's maps (as restic and path points do for files).
  struct SourceFile {
    uint64_t dev = 0, ino = 0, size = 0;  // ino 0: not recorded
    int64_t mtime_ns = 0, ctime_ns = 0;
    bool operator==(const SourceFile&) const = default;
  } source_file;
  // Not part of the payload: a pin is a separate file (docs/format/backup.md,
  // "Pins"), so pinning does not change the point's id. Set by ListPoints.
  bool pinned = false;

  nlohmann::json ToJson() const;
  std::vector<uint8_t> Encode() const;
  // kDataLoss when `payload` is not a point description (input from disk).
  static Result<PointInfo> Decode(const repo::ManifestId& id, int64_t time_ns, const std::vector<uint8_t>& payload);
};

}  // namespace continuum::backup
