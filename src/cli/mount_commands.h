#pragma once

#include <functional>
#include <string>

#include <CLI/CLI.hpp>

namespace continuum::cli {

// Adds `continuum mount ID --repo R [--writable | --at DIR]` (standalone, no
// daemon). A parsed command stores its work in `*action`; `*json` is the
// global --json flag.
void RegisterMountCommands(CLI::App& app, std::function<int()>* action, const bool* json);

// `view close` for repo mounts: if `device_or_dir` is a repository mount,
// ends it, prints the outcome and returns true with the exit code in
// `*exit_code`; returns false (nothing done) when it is not one, so the
// caller asks the agent.
bool CloseRepoMount(const std::string& device_or_dir, bool json, int* exit_code);

}  // namespace continuum::cli
