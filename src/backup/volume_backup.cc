#include "continuum/backup/volume_backup.h"

#include <fcntl.h>
#include <unistd.h>

#include "continuum/backup/point_catalog.h"
#include "continuum/common/time_util.h"
#include "continuum/io/file.h"
#include "image_tree_writer.h"
#include "point_util.h"

namespace continuum::backup {
namespace {

// Closes the view on every path; Close() reports the error on the success path.
class ViewCloser {
 public:
  ViewCloser(VolumeControl& control, std::string id) : control_(control), id_(std::move(id)) {}
  ~ViewCloser() {
    // Deliberately ignored: this only runs when the backup already failed,
    // and that error is the one to report.
    if (!id_.empty()) control_.CloseView(id_).IgnoreError();
  }
  Status Close() {
    std::string id = std::move(id_);
    id_.clear();
    return control_.CloseView(id);
  }

 private:
  VolumeControl& control_;
  std::string id_;
};

// The bitmap name not used by the point before (names alternate between two,
// so the old one keeps tracking until the new point is saved).
std::string NextBitmap(const std::string& repo_id, bool full, const std::string& used) {
  std::string first = VolumeBitmapName(repo_id, full, false);
  return used == first ? VolumeBitmapName(repo_id, full, true) : first;
}

// Why the regions marked in `base` cannot stand for the changes since
// `parent` ("" when they can).
std::string BitmapProblem(const PointInfo& parent, uint64_t seq, const std::string& base,
                          const std::optional<VolumeControl::Bitmap>& bitmap) {
  std::string who = "point " + parent.id.Hex().substr(0, 12);
  // The parent's chunks stand for unchanged regions only if the parent is
  // not newer than the bookmark (an older --bookmark than the last backup).
  if (parent.volume.seq > seq) {
    return who + " (seq:" + std::to_string(parent.volume.seq) + ") is newer than the bookmark (seq:" +
           std::to_string(seq) + ")";
  }
  if (base.empty()) return who + " has no changed-block bitmap";
  if (!bitmap) return "changed-block bitmap " + base + " is missing (deleted, or the volume was recreated)";
  if (bitmap->base_seq > parent.volume.seq) {
    return "changed-block bitmap " + base + " starts at seq:" + std::to_string(bitmap->base_seq) + ", after " + who +
           " (seq:" + std::to_string(parent.volume.seq) + ")";
  }
  return "";
}

}  // namespace

std::string VolumeBitmapName(const std::string& repo_id, bool full, bool second) {
  return std::string(full ? "backup-full-" : "backup-") + repo_id + (second ? "-b" : "-a");
}

Result<PointInfo> BackupVolume(repo::Repository& repo, VolumeControl& control, const VolumeBackupOptions& options,
                               const ProgressFn& progress, const std::function<void(const std::string&)>& notice) {
  auto say = [&](const std::string& text) {
    if (notice) notice(text);
  };
  const int64_t start_wall = WallNowNs();
  const int64_t start = MonoNowNs();
  const repo::RepositoryStats before = repo.stats();
  const std::string& name = options.volume;
  const std::string rid = repo.repo_id();

  PointInfo info;
  info.time_ns = start_wall;
  info.type = PointType::kImage;
  info.sources = {"volume:" + name};
  info.host = HostName();
  info.tags = options.tags;
  info.files = 1;
  info.chunk_size = repo.FixedOptions().chunk_size;
  info.volume.name = name;
  CONTINUUM_ASSIGN_OR_RETURN(std::vector<PointInfo> points, ListPoints(repo));
  const ChainPlan plan = PlanChain(points, info, options.kind);
  ApplyPlan(plan, &info);
  const bool full = plan.kind == BackupKind::kFull;

  const std::string old_inc = plan.previous ? plan.previous->volume.bitmap : "";
  const std::string old_full = plan.last_full ? plan.last_full->volume.full_bitmap : "";
  const std::string new_inc = NextBitmap(rid, false, old_inc);
  const std::string new_full = full ? NextBitmap(rid, true, old_full) : "";

  // Ordering: the new bitmaps start before the bookmark, so every write after
  // the bookmark is marked in them (earlier writes marked too are harmless).
  // With an existing bookmark they can only start now: they are used later
  // only if nothing was written since the bookmark (checked below).
  uint64_t inc_seq = 0, full_seq = 0;
  auto create_bitmaps = [&]() -> Status {
    CONTINUUM_ASSIGN_OR_RETURN(inc_seq, control.CreateBitmap(name, new_inc));
    if (full) {
      CONTINUUM_ASSIGN_OR_RETURN(full_seq, control.CreateBitmap(name, new_full));
    }
    return Status::Ok();
  };
  std::string label = options.bookmark;
  if (label.empty()) {
    CONTINUUM_RETURN_IF_ERROR(create_bitmaps());
    label = "backup-" + rid.substr(0, 8) + "-" + std::to_string(start_wall);
    CONTINUUM_RETURN_IF_ERROR(control.AddBookmark(name, label).status());
  }
  CONTINUUM_ASSIGN_OR_RETURN(VolumeControl::View view, control.OpenView(name, label));
  ViewCloser closer(control, view.id);
  if (!options.bookmark.empty()) CONTINUUM_RETURN_IF_ERROR(create_bitmaps());
  info.volume.seq = view.seq;
  info.volume.bookmark = label;

  CONTINUUM_ASSIGN_OR_RETURN(auto file, io::File::Open(view.device, O_RDONLY | O_CLOEXEC));
  off_t end = ::lseek(file->fd(), 0, SEEK_END);
  if (end < 0) return PosixError("size of " + view.device, errno);
  info.size = static_cast<uint64_t>(end);

  ImageReadPlan read{.file = file.get(), .size = info.size};
  info.volume.read = "all";
  if (!full) {
    const PointInfo& parent = *plan.parent;
    const std::string& base = plan.kind == BackupKind::kIncremental ? old_inc : old_full;
    std::optional<VolumeControl::Bitmap> bitmap;
    if (!base.empty()) {
      CONTINUUM_ASSIGN_OR_RETURN(bitmap, control.GetBitmap(name, base));
    }
    std::string problem = BitmapProblem(parent, info.volume.seq, base, bitmap);
    repo::BlobId parent_root;
    if (problem.empty()) {
      CONTINUUM_ASSIGN_OR_RETURN(parent_root, PointRoot(repo, parent));
      CONTINUUM_ASSIGN_OR_RETURN(bool fits, ParentFits(repo, parent_root, info.size));
      if (!fits) problem = "the volume's size differs from point " + parent.id.Hex().substr(0, 12);
    }
    if (problem.empty()) {
      read.parent_root = parent_root;
      read.changed = std::move(bitmap->changed);
      info.volume.read = "changed";
    } else {
      say(problem + ": reading the whole volume");
    }
  }
  CONTINUUM_ASSIGN_OR_RETURN(ImageTrees trees, WriteImageTrees(repo, read, progress));
  info.bytes_read = trees.bytes_read;

  // Which bitmap tracks the changes after this point: the new one if it
  // started at or before the bookmark, else the old one if it still covers
  // them, else the new one anyway (the next point then reads everything).
  std::vector<std::string> unused;
  std::optional<VolumeControl::Bitmap> old_bitmap;
  if (!old_inc.empty() && inc_seq > info.volume.seq) {
    CONTINUUM_ASSIGN_OR_RETURN(old_bitmap, control.GetBitmap(name, old_inc));
  }
  if (inc_seq > info.volume.seq && old_bitmap && old_bitmap->base_seq <= info.volume.seq) {
    info.volume.bitmap = old_inc;
    unused.push_back(new_inc);
  } else {
    info.volume.bitmap = new_inc;
    if (!old_inc.empty()) unused.push_back(old_inc);
  }
  if (full) {
    info.volume.full_bitmap = new_full;
    if (!old_full.empty() && old_full != new_full) unused.push_back(old_full);
    if (full_seq > info.volume.seq) say("bitmap " + new_full + " starts after the bookmark: the next differential reads everything");
  }
  file.reset();
  CONTINUUM_ASSIGN_OR_RETURN(info, SavePoint(repo, std::move(info), trees.root, before, start));
  if (Status st = closer.Close(); !st.ok()) say("could not close view " + view.device + ": " + st.message());
  for (const auto& base : unused) {
    Status st = control.DeleteBitmap(name, base);
    if (!st.ok() && st.code() != StatusCode::kNotFound) say("could not delete bitmap " + base + ": " + st.message());
  }
  return info;
}

}  // namespace continuum::backup
