#pragma once

#include <toml++/toml.h>

#include <string>
#include <vector>

#include "continuum/agent/backup_scheduler.h"
#include "continuum/common/result.h"

namespace continuum::agent {

// Reads and validates the [[backup]] array of the agent's config: unknown
// keys, a bad schedule or source, a missing repository or password file are
// errors naming the job and the key.
Result<std::vector<BackupJob>> ParseBackupJobs(const toml::table& config);

}  // namespace continuum::agent
