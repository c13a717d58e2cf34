#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "continuum/backup/point_catalog.h"
#include "continuum/backup/point_info.h"
#include "continuum/common/result.h"
#include "continuum/repo/prune_report.h"
#include "continuum/repo/repository.h"

namespace continuum::backup {

// A calendar span for --keep-within: "1y6m", "2w3d", "36h" (y years, m months,
// w weeks, d days, h hours). Subtracted in local calendar terms, as restic does.
struct CalendarSpan {
  int years = 0;
  int months = 0;
  int days = 0;
  int hours = 0;
  bool empty() const { return years == 0 && months == 0 && days == 0 && hours == 0; }
};
// kInvalidArgument naming the text.
Result<CalendarSpan> ParseCalendarSpan(const std::string& text);

// Which points to keep, per group of points of the same source (type, host and
// source paths). Each rule walks the group newest first: keep_last keeps the N
// newest; keep_daily keeps the newest point of each of the N newest days that
// have points (local time), and so on for ISO weeks, months and years;
// keep_within keeps every point younger than the span, measured back from the
// group's newest point. A point is kept if any rule keeps it. Pinned points are
// always kept and use up no rule's slots. keep_chains keeps every point of the
// N newest chains of the group (a chain is a full point and the points taken
// against it, ChainOf; chains are ordered by their newest point).
struct RetentionPolicy {
  uint32_t keep_last = 0;
  uint32_t keep_daily = 0;
  uint32_t keep_weekly = 0;
  uint32_t keep_monthly = 0;
  uint32_t keep_yearly = 0;
  uint32_t keep_chains = 0;
  CalendarSpan keep_within;
  bool empty() const {
    return keep_last == 0 && keep_daily == 0 && keep_weekly == 0 && keep_monthly == 0 && keep_yearly == 0 &&
           keep_chains == 0 && keep_within.empty();
  }
};

struct RetentionDecision {
  PointInfo point;
  std::string group;
  bool keep = false;
  std::vector<std::string> reasons;  // "pinned", "last", "daily", "weekly", "monthly", "yearly", "within", "chain"
};

// The grouping key of a point: "<type> <host> <sources joined by ','>".
std::string RetentionGroup(const PointInfo& point);
// Pure: decides for every point (any order in; out grouped, newest first per group).
std::vector<RetentionDecision> ApplyRetention(const std::vector<PointInfo>& points, const RetentionPolicy& policy);

struct ForgetOptions {
  RetentionPolicy policy;
  bool dry_run = false;  // decide and report, remove nothing
  bool prune = false;    // prune after removing points
  repo::PruneOptions prune_options;
};

struct ForgetReport {
  std::vector<RetentionDecision> decisions;
  uint64_t removed = 0;
  bool pruned = false;
  repo::PruneReport prune;
};

// Applies the policy to every point of the repository and removes the points
// no rule keeps. Errors: kInvalidArgument for an empty policy (that would remove
// everything), kFailedPrecondition in append-only repositories (unless dry_run).
// Removing points needs an exclusive lock, as prune does.
Result<ForgetReport> Forget(repo::Repository& repo, const ForgetOptions& options);

}  // namespace continuum::backup
