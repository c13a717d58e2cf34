#pragma once

#include <functional>
#include <memory>

#include <CLI/CLI.hpp>

#include "continuum/backup/point_info.h"
#include "continuum/backup/progress.h"
#include "continuum/common/result.h"
#include "continuum/repo/repository.h"

namespace continuum::cli {

// What `backup volume` borrows from the other backup commands, so options,
// errors, progress and summaries look the same everywhere.
struct BackupCommandHooks {
  std::function<void(CLI::App*)> add_repo_options;  // --repo, --password-file
  // Opens the repository under a shared lock; sets *usage for usage errors.
  std::function<Result<std::unique_ptr<repo::Repository>>(bool* usage)> open_repo;
  std::function<int(const Status&, bool json, bool usage)> fail;
  std::function<void(const backup::PointInfo&, bool json)> print_summary;
  // Runs `body` with a terminal progress display (none with --json).
  std::function<Result<backup::PointInfo>(bool json,
                                          const std::function<Result<backup::PointInfo>(const backup::ProgressFn&)>&)>
      with_progress;
};

// Adds `backup volume NAME` (a protected volume, through the running agent) to
// the `backup` command. The agent's control socket comes from the global
// --control, then $CONTINUUM_CONTROL, then the default.
void RegisterBackupVolumeCommand(CLI::App* backup_cmd, std::function<int()>* action, const bool* json,
                                 BackupCommandHooks hooks);

}  // namespace continuum::cli
