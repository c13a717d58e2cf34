#pragma once

#include <optional>
#include <string>
#include <vector>

#include "continuum/backup/point_info.h"
#include "continuum/common/result.h"

namespace continuum::backup {

// What a backup asked for: full reads everything, incremental what changed
// since the previous point of the same source, differential what changed since
// the newest full of that source.
enum class BackupKind { kFull, kIncremental, kDifferential };
std::string_view BackupKindName(BackupKind kind);
// kInvalidArgument naming the text.
Result<BackupKind> ParseBackupKind(const std::string& text);

// The chain a point belongs to: its own id for a full point, else the full it
// was taken against (`PointInfo::full`). Points of older versions are full.
std::string ChainOf(const PointInfo& point);

// Where a new point of a source goes in its chain.
struct ChainPlan {
  BackupKind kind = BackupKind::kFull;  // what is taken (a first point is full)
  std::optional<PointInfo> parent;      // the point to take it against (not for full)
  std::optional<PointInfo> previous;    // the newest point of the source, any kind
  std::optional<PointInfo> last_full;   // the newest full point of the source
  std::string full;                     // hex id of the chain's full ("" for full)
};

// Pure. `points` are any points of the repository (any order); only those of
// the same source group (RetentionGroup of type, host, sources) count.
// Incremental without any earlier point, or differential without an earlier
// full, becomes full.
ChainPlan PlanChain(const std::vector<PointInfo>& points, const PointInfo& source, BackupKind requested);

// Sets kind, parent and full of `info` from the plan.
void ApplyPlan(const ChainPlan& plan, PointInfo* info);

}  // namespace continuum::backup
