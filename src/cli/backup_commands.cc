#include "cli/backup_commands.h"

namespace continuum::cli {

void RegisterBackupCommands(CLI::App& app, std::function<int()>* action, const bool* json) {}

}  // namespace continuum::cli
