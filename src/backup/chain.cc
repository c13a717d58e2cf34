#include "continuum/backup/chain.h"

#include "continuum/backup/retention.h"

namespace continuum::backup {

std::string_view BackupKindName(BackupKind kind) {
  switch (kind) {
    case BackupKind::kFull: return "full";
    case BackupKind::kIncremental: return "incremental";
    case BackupKind::kDifferential: return "differential";
  }
  return "full";
}

Result<BackupKind> ParseBackupKind(const std::string& text) {
  if (text == "full") return BackupKind::kFull;
  if (text == "incremental") return BackupKind::kIncremental;
  if (text == "differential") return BackupKind::kDifferential;
  return InvalidArgument("--kind must be full, incremental or differential, not '" + text + "'");
}

std::string ChainOf(const PointInfo& p) {
  if (p.kind == "full" || p.full.empty()) return p.id.Hex();
  return p.full;
}

ChainPlan PlanChain(const std::vector<PointInfo>& points, const PointInfo& source, BackupKind requested) {
  const std::string group = RetentionGroup(source);
  ChainPlan plan;
  for (const auto& p : points) {
    if (RetentionGroup(p) != group) continue;
    if (!plan.previous || p.time_ns >= plan.previous->time_ns) plan.previous = p;
    if (p.kind == "full" && (!plan.last_full || p.time_ns >= plan.last_full->time_ns)) plan.last_full = p;
  }
  plan.kind = requested;
  if (requested == BackupKind::kIncremental) plan.parent = plan.previous;
  if (requested == BackupKind::kDifferential) plan.parent = plan.last_full;
  if (!plan.parent) plan.kind = BackupKind::kFull;
  if (plan.kind != BackupKind::kFull) plan.full = ChainOf(*plan.parent);
  return plan;
}

void ApplyPlan(const ChainPlan& plan, PointInfo* info) {
  info->kind = std::string(BackupKindName(plan.kind));
  info->parent = plan.kind == BackupKind::kFull ? "" : plan.parent->id.Hex();
  info->full = plan.full;
}

}  // namespace continuum::backup
