#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace continuum::cli {

// Adds `backup jobs` (list the agent's scheduled backup jobs) and `backup jobs
// run NAME` (start one now) to the `backup` command. They ask the running
// agent: --control, then $CONTINUUM_CONTROL, then the default socket.
void RegisterBackupJobsCommand(CLI::App* backup_cmd, std::function<int()>* action, const bool* json);

}  // namespace continuum::cli
