#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "continuum/backup/point_info.h"
#include "continuum/common/result.h"
#include "continuum/repo/blob_id.h"

namespace continuum::backup {

// What an unfinished restore has made durable (docs/format/backup.md, "Restore
// progress file"). Image restores count fixed-size chunks of the image, path
// restores count non-directory entries in the order the restore visits them.
// Invariant kept by the writers: everything before `done` is durable in the
// target (fdatasync / syncfs) before a file saying so is renamed into place.
struct RestoreProgress {
  repo::ManifestId point;
  PointType type = PointType::kImage;
  // SHA-256 of what else decides the restore's output (see OptionsDigest).
  repo::BlobId options;
  uint64_t done = 0;
  uint64_t total = 0;  // images: chunks; paths: 0 (not known in advance)
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;  // images: image size; paths: 0
};

// The digest stored in RestoreProgress::options: binds a progress file to the
// --include patterns (paths) or the chunk size and image size (images).
repo::BlobId RestoreOptionsDigest(PointType type, const std::vector<std::string>& includes, uint64_t a, uint64_t b);

// Text, one "key value" per line, ending with a SHA-256 of the lines before it.
std::string EncodeRestoreProgress(const RestoreProgress& p);
// kDataLoss naming `path` and the line for anything malformed, truncated or
// with a wrong checksum; never crashes on any input.
Result<RestoreProgress> DecodeRestoreProgress(std::string_view text, const std::string& path);

// The progress file of one restore target. Image targets that are regular files
// keep it next to them (PATH.continuum-restore); block devices in `state_dir`
// (named after the device path); path restores inside the target directory.
// Writes never follow a symlink planted at its name. Not thread-safe.
class RestoreProgressFile {
 public:
  static constexpr std::string_view kTreeName = ".continuum-restore";

  explicit RestoreProgressFile(std::string path) : path_(std::move(path)) {}
  static std::string ForImage(const std::string& target, bool device, const std::string& state_dir);
  static std::string ForTree(const std::string& target);

  // kNotFound when there is none.
  Result<RestoreProgress> Load() const;
  // Decides how a restore described by `fresh` (done = 0) starts: the recorded
  // progress when the file is of the same point, type and options; nullopt when
  // there is no file, or with `restart` (the file is removed). A file of another
  // restore, or one that does not decode, is kFailedPrecondition naming it and
  // the two ways out (--restart, or deleting it).
  Result<std::optional<RestoreProgress>> Claim(const RestoreProgress& fresh, bool restart) const;
  // Atomic and durable: temp file, fsync, rename, fsync directory.
  Status Save(const RestoreProgress& p) const;
  // Succeeds when there is none.
  Status Remove() const;
  const std::string& path() const { return path_; }
  // `done` of the last Save through this object.
  uint64_t saved_done() const { return saved_done_; }

 private:
  std::string path_;
  mutable uint64_t saved_done_ = 0;
};

// Removes the progress file when a restore ends with an error before it
// recorded any progress: there is nothing to resume, and the file would only
// keep other restores out of the target. With recorded progress the file stays
// so that the same command resumes (a process killed runs no destructor).
class DropUnusedProgress {
 public:
  explicit DropUnusedProgress(const RestoreProgressFile& file) : file_(file) {}
  ~DropUnusedProgress() {
    if (file_.saved_done() == 0) file_.Remove().IgnoreError();  // best effort: an error is on its way already
  }
  DropUnusedProgress(const DropUnusedProgress&) = delete;
  DropUnusedProgress& operator=(const DropUnusedProgress&) = delete;

 private:
  const RestoreProgressFile& file_;
};

// Checkpoints a restore without stalling it. A checkpoint is "make durable,
// then record": a background thread runs `sync` (syncfs of the target, or
// fdatasync of an image) and then saves the record that was offered before
// the sync started, so a record never claims more than the sync covered. The
// restore goes on writing meanwhile, and the disk writes back while the
// restore decrypts and creates files instead of after it. An offer while a
// checkpoint runs is remembered and starts as soon as that one ends (the
// newest offer wins), so writeback stays continuous on a fast restore.
class BackgroundCheckpointer {
 public:
  BackgroundCheckpointer(const RestoreProgressFile& file, std::function<Status()> sync);
  // Waits for the running checkpoint; errors are dropped (call Drain first).
  ~BackgroundCheckpointer();
  BackgroundCheckpointer(const BackgroundCheckpointer&) = delete;
  BackgroundCheckpointer& operator=(const BackgroundCheckpointer&) = delete;

  // Queues a checkpoint of `record`. Returns the error of a checkpoint that
  // failed since the last call (the restore should stop: the target's disk is
  // failing or full).
  Status Offer(const RestoreProgress& record);
  // Waits until no checkpoint runs or is queued; the first error since the
  // last Offer/Drain. After it the file object may be used directly again.
  Status Drain();

 private:
  void Run();

  const RestoreProgressFile& file_;
  const std::function<Status()> sync_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<RestoreProgress> queued_;  // guarded by mu_
  bool busy_ = false;                      // guarded by mu_: a checkpoint runs
  bool stop_ = false;                      // guarded by mu_
  Status error_;                           // guarded by mu_
  std::thread thread_;
};

}  // namespace continuum::backup
