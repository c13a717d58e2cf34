#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "continuum/backup/chain.h"
#include "continuum/backup/image_backup.h"
#include "continuum/backup/point_info.h"
#include "continuum/backup/progress.h"
#include "continuum/common/result.h"
#include "continuum/repo/repository.h"

namespace continuum::backup {

// The agent operations a volume backup needs (the control API in production,
// a fake in tests). Calls may block; none is retried here.
class VolumeControl {
 public:
  struct Bitmap {
    uint64_t base_seq = 0;  // every write with a larger seq is marked
    std::vector<ChangedRange> changed;
  };
  struct View {
    std::string id;
    std::string device;  // read-only block device of the volume at the point
    uint64_t seq = 0;
  };

  virtual ~VolumeControl() = default;
  // Starts (or restarts) bitmap `base`; returns its base_seq.
  virtual Result<uint64_t> CreateBitmap(const std::string& volume, const std::string& base) = 0;
  // std::nullopt when the volume has no such bitmap.
  virtual Result<std::optional<Bitmap>> GetBitmap(const std::string& volume, const std::string& base) = 0;
  virtual Status DeleteBitmap(const std::string& volume, const std::string& base) = 0;
  // Adds a crash-consistent bookmark; returns its seq.
  virtual Result<uint64_t> AddBookmark(const std::string& volume, const std::string& label) = 0;
  // Opens a read-only view at `at` (a bookmark label or seq:N).
  virtual Result<View> OpenView(const std::string& volume, const std::string& at) = 0;
  virtual Status CloseView(const std::string& id) = 0;
};

struct VolumeBackupOptions {
  std::string volume;
  std::vector<std::string> tags;
  BackupKind kind = BackupKind::kIncremental;
  // Back up at this existing bookmark (e.g. one made with `bookmark add
  // --consistent`) instead of adding a crash-consistent one.
  std::string bookmark;
};

// Backs up a protected volume as an image point with source "volume:<name>":
//  1. creates the next changed-block bitmap (so nothing after the point is missed),
//  2. adds a bookmark (unless options.bookmark names one) and opens a view at it,
//  3. incremental/differential: reads only the regions the previous bitmap
//     marks (the rest of the map comes from the parent point); full, or when
//     the bitmap is missing or younger than the parent: reads everything,
//  4. saves the point, then drops the bitmaps it no longer needs.
// The view is closed on every path. `notice` receives operator messages
// (such as "bitmap missing, reading the whole volume").
Result<PointInfo> BackupVolume(repo::Repository& repo, VolumeControl& control, const VolumeBackupOptions& options,
                               const ProgressFn& progress = {},
                               const std::function<void(const std::string&)>& notice = {});

// The bitmap names a repository uses on a volume: "backup-<repo id>-a|b" for
// changes since the previous point, "backup-full-<repo id>-a|b" since the full.
std::string VolumeBitmapName(const std::string& repo_id, bool full, bool second);

}  // namespace continuum::backup
