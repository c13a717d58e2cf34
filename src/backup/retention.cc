#include "continuum/backup/retention.h"

#include <time.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

#include "continuum/backup/chain.h"

namespace continuum::backup {
namespace {

struct tm LocalTime(int64_t time_ns) {
  time_t t = static_cast<time_t>(time_ns / 1000000000);
  struct tm tm {};
  ::localtime_r(&t, &tm);
  return tm;
}

int64_t Bucket(const struct tm& tm, const std::string& rule) {
  if (rule == "daily") return (tm.tm_year + 1900) * 10000ll + (tm.tm_mon + 1) * 100 + tm.tm_mday;
  if (rule == "monthly") return (tm.tm_year + 1900) * 100ll + tm.tm_mon + 1;
  if (rule == "yearly") return tm.tm_year + 1900;
  // weekly: ISO 8601 week-based year and week.
  char buf[16];
  ::strftime(buf, sizeof(buf), "%G%V", &tm);
  return std::atoll(buf);
}

// The newest point's time minus the span, in local calendar terms.
int64_t WithinCutoffNs(int64_t newest_ns, const CalendarSpan& span) {
  struct tm tm = LocalTime(newest_ns);
  tm.tm_year -= span.years;
  tm.tm_mon -= span.months;
  tm.tm_mday -= span.days;
  tm.tm_hour -= span.hours;
  tm.tm_isdst = -1;
  return static_cast<int64_t>(::mktime(&tm)) * 1000000000 + newest_ns % 1000000000;
}

}  // namespace

Result<CalendarSpan> ParseCalendarSpan(const std::string& text) {
  CalendarSpan span;
  size_t i = 0;
  bool any = false;
  while (i < text.size()) {
    size_t start = i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
    if (i == start || i == text.size() || i - start > 6) {
      return InvalidArgument("'" + text + "' is not a duration (like 1y6m, 2w3d or 36h)");
    }
    int n = std::stoi(text.substr(start, i - start));
    switch (text[i]) {
      case 'y': span.years += n; break;
      case 'm': span.months += n; break;
      case 'w': span.days += 7 * n; break;
      case 'd': span.days += n; break;
      case 'h': span.hours += n; break;
      default: return InvalidArgument("'" + text + "': unknown duration unit '" + text[i] + "' (use y, m, w, d, h)");
    }
    ++i;
    any = true;
  }
  if (!any) return InvalidArgument("empty duration");
  return span;
}

std::string RetentionGroup(const PointInfo& p) {
  std::vector<std::string> sources = p.sources;
  std::sort(sources.begin(), sources.end());
  std::string key = std::string(PointTypeName(p.type)) + " " + p.host + " ";
  for (size_t i = 0; i < sources.size(); ++i) key += (i ? "," : "") + sources[i];
  return key;
}

std::vector<RetentionDecision> ApplyRetention(const std::vector<PointInfo>& points, const RetentionPolicy& policy) {
  std::map<std::string, std::vector<PointInfo>> groups;
  for (const auto& p : points) groups[RetentionGroup(p)].push_back(p);
  std::vector<RetentionDecision> out;
  for (auto& [key, group] : groups) {
    std::stable_sort(group.begin(), group.end(),
                     [](const PointInfo& a, const PointInfo& b) { return a.time_ns > b.time_ns; });
    struct Rule {
      const char* name;
      uint32_t left;
      int64_t last = INT64_MIN;
    };
    std::vector<Rule> rules = {{"daily", policy.keep_daily},
                               {"weekly", policy.keep_weekly},
                               {"monthly", policy.keep_monthly},
                               {"yearly", policy.keep_yearly}};
    uint32_t last_left = policy.keep_last;
    int64_t newest = group.empty() ? 0 : group.front().time_ns;
    int64_t cutoff = policy.keep_within.empty() ? INT64_MAX : WithinCutoffNs(newest, policy.keep_within);
    // The N newest chains, by their newest point (the group is newest first).
    std::set<std::string> kept_chains;
    std::set<std::string> seen_chains;
    for (const auto& p : group) {
      std::string chain = ChainOf(p);
      if (!seen_chains.insert(chain).second) continue;
      if (kept_chains.size() < policy.keep_chains) kept_chains.insert(chain);
    }
    for (const auto& p : group) {
      RetentionDecision d{.point = p, .group = key};
      if (p.pinned) {
        // Pinned points are kept outside the rules: they use up no slot.
        d.keep = true;
        d.reasons.push_back("pinned");
        out.push_back(std::move(d));
        continue;
      }
      if (last_left > 0) {
        --last_left;
        d.reasons.push_back("last");
      }
      struct tm tm = LocalTime(p.time_ns);
      for (auto& r : rules) {
        if (r.left == 0) continue;
        int64_t b = Bucket(tm, r.name);
        if (b == r.last) continue;
        r.last = b;
        --r.left;
        d.reasons.push_back(r.name);
      }
      if (p.time_ns >= cutoff) d.reasons.push_back("within");
      if (kept_chains.count(ChainOf(p))) d.reasons.push_back("chain");
      d.keep = !d.reasons.empty();
      out.push_back(std::move(d));
    }
  }
  return out;
}

Result<ForgetReport> Forget(repo::Repository& repo, const ForgetOptions& options) {
  if (options.policy.empty()) {
    return InvalidArgument("no keep rule given: forget would remove every point (use --keep-last N, --keep-daily N ...)");
  }
  if (repo.append_only() && !options.dry_run) {
    return FailedPrecondition("repository " + repo.location() + " is append-only: forget cannot remove points");
  }
  std::vector<std::string> problems;
  CONTINUUM_ASSIGN_OR_RETURN(std::vector<PointInfo> points, ListPoints(repo, &problems));
  if (!problems.empty()) {
    // An undecodable point has no known source or time: stop rather than guess.
    return FailedPrecondition(problems[0] + ": run 'repo check' before forgetting points");
  }
  ForgetReport rep;
  rep.decisions = ApplyRetention(points, options.policy);
  if (options.dry_run) return rep;
  for (const auto& d : rep.decisions) {
    if (d.keep) continue;
    CONTINUUM_RETURN_IF_ERROR(repo.DeleteManifest(d.point.id));
    ++rep.removed;
  }
  if (options.prune) {
    CONTINUUM_ASSIGN_OR_RETURN(rep.prune, repo.Prune(options.prune_options));
    rep.pruned = true;
  }
  return rep;
}

}  // namespace continuum::backup
