#pragma once

#include <string>
#include <vector>

#include "continuum/backup/point_info.h"
#include "continuum/common/result.h"
#include "continuum/repo/repository.h"

namespace continuum::backup {

// Every point of the repository, oldest first. A manifest that does not
// decode is skipped and reported through `problems` (if given).
Result<std::vector<PointInfo>> ListPoints(repo::Repository& repo, std::vector<std::string>* problems = nullptr);

// Finds a point by its id, a unique id prefix (>= 4 hex digits) or "latest".
// kNotFound or kInvalidArgument (ambiguous prefix) naming the text.
Result<PointInfo> FindPoint(repo::Repository& repo, const std::string& text);

}  // namespace continuum::backup
