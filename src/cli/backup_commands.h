#pragma once

#include <functional>

#include <CLI/CLI.hpp>

namespace continuum::cli {

// Adds the standalone backup commands (repo, backup, restore, ls, mount,
// forget, prune) to `app`. A parsed command stores its work in `*action`;
// `*json` is the global --json flag.
void RegisterBackupCommands(CLI::App& app, std::function<int()>* action, const bool* json);

}  // namespace continuum::cli
