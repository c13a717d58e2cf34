// Point-in-time operations of Volume: resolve, view, rollback.

#include <fcntl.h>

#include "continuum/common/time_util.h"
#include "continuum/journal/record.h"
#include "continuum/volume/volume.h"
#include "continuum/volume/volume_view.h"

namespace continuum::volume {

Result<cdp::Point> Volume::ResolvePoint(const std::string& text) {
  if (!cdp_) return FailedPrecondition("volume " + cfg_.name + " has no CDP journal (created with --no-cdp)");
  // Points name applied writes; wait for the queue so "now" means now.
  CONTINUUM_RETURN_IF_ERROR(Drain());
  return cdp_->ResolvePoint(text);
}

Result<std::shared_ptr<VolumeView>> Volume::OpenView(const cdp::Point& point,
                                                     const std::string& overlay_path) {
  if (!cdp_) return FailedPrecondition("volume " + cfg_.name + " has no CDP journal");
  CONTINUUM_RETURN_IF_ERROR(Drain());
  std::unique_ptr<io::File> overlay;
  if (!overlay_path.empty()) {
    CONTINUUM_ASSIGN_OR_RETURN(overlay, io::File::Open(overlay_path, O_RDWR | O_CREAT | O_TRUNC, 0600));
    CONTINUUM_RETURN_IF_ERROR(overlay->Truncate(cfg_.size));
  }
  std::shared_ptr<cdp::ViewMap> map;
  {
    // Exclusive: no mirror write may slip between building the map and use.
    std::unique_lock lock(mirror_mu_);
    CONTINUUM_ASSIGN_OR_RETURN(map, cdp_->OpenViewMap(point.seq));
  }
  return std::make_shared<VolumeView>(shared_from_this(), std::move(map), point, std::move(overlay));
}

Result<cdp::Bookmark> Volume::Rollback(const cdp::Point& point) {
  if (!cdp_) return FailedPrecondition("volume " + cfg_.name + " has no CDP journal");
  // The state before the rollback stays restorable through this bookmark, so
  // the rollback itself can be undone.
  std::string label = "pre-rollback-" + FormatRfc3339(WallNowNs());
  CONTINUUM_ASSIGN_OR_RETURN(cdp::Point before, AddBookmark(label, journal::kFlagRollbackMark));
  CONTINUUM_ASSIGN_OR_RETURN(auto view, OpenView(point, ""));
  std::vector<uint64_t> blocks = view->ChangedBlocks();
  const uint32_t bs = cfg_.block_size;
  std::vector<uint8_t> buf;
  size_t i = 0;
  while (i < blocks.size()) {
    size_t j = i + 1;
    while (j < blocks.size() && blocks[j] == blocks[j - 1] + 1 && (j - i) < 256) ++j;
    buf.resize((j - i) * bs);
    CONTINUUM_RETURN_IF_ERROR(view->Read(blocks[i] * bs, buf));
    CONTINUUM_RETURN_IF_ERROR(Write(blocks[i] * bs, buf, false));
    i = j;
  }
  view.reset();
  CONTINUUM_RETURN_IF_ERROR(Flush());
  CONTINUUM_RETURN_IF_ERROR(Drain());
  CONTINUUM_RETURN_IF_ERROR(
      AddBookmark("rollback-to-seq-" + std::to_string(point.seq), journal::kFlagRollbackMark).status());
  cdp::Bookmark b;
  b.seq = before.seq;
  b.ts_ns = before.ts_ns;
  b.label = label;
  b.rollback_mark = true;
  return b;
}

}  // namespace continuum::volume
