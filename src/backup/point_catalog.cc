#include "continuum/backup/point_catalog.h"

#include <algorithm>
#include <set>

namespace continuum::backup {

Result<std::vector<PointInfo>> ListPoints(repo::Repository& repo, std::vector<std::string>* problems) {
  CONTINUUM_ASSIGN_OR_RETURN(std::vector<repo::ManifestId> ids, repo.ListManifests());
  std::vector<std::string> pin_problems;
  CONTINUUM_ASSIGN_OR_RETURN(std::vector<repo::ManifestId> pin_list, repo.ListPins(&pin_problems));
  if (problems) problems->insert(problems->end(), pin_problems.begin(), pin_problems.end());
  std::set<repo::ManifestId> pins(pin_list.begin(), pin_list.end());
  std::vector<PointInfo> points;
  for (const auto& id : ids) {
    auto m = repo.LoadManifest(id);
    if (!m.ok()) {
      if (problems) problems->push_back(m.status().message());
      continue;
    }
    auto p = PointInfo::Decode(id, m->time_ns, m->payload);
    if (!p.ok()) {
      if (problems) problems->push_back(p.status().message());
      continue;
    }
    p->pinned = pins.count(id) != 0;
    points.push_back(std::move(*p));
  }
  std::stable_sort(points.begin(), points.end(),
                   [](const PointInfo& a, const PointInfo& b) { return a.time_ns < b.time_ns; });
  return points;
}

Result<PointInfo> FindPoint(repo::Repository& repo, const std::string& text) {
  CONTINUUM_ASSIGN_OR_RETURN(std::vector<PointInfo> points, ListPoints(repo));
  if (text == "latest") {
    if (points.empty()) return NotFound("no points in repository " + repo.location());
    return points.back();
  }
  std::string lower = text;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower.size() < 4 || lower.size() > 64 ||
      lower.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return InvalidArgument("'" + text + "' is not a point id (at least 4 hex digits, or 'latest')");
  }
  const PointInfo* found = nullptr;
  for (const auto& p : points) {
    if (p.id.Hex().compare(0, lower.size(), lower) != 0) continue;
    if (found) return InvalidArgument("point id prefix '" + text + "' is ambiguous");
    found = &p;
  }
  if (!found) return NotFound("no point " + text + " in repository " + repo.location());
  return *found;
}

}  // namespace continuum::backup
