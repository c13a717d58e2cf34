#pragma once

#include "continuum/agent/backup_scheduler.h"
#include "continuum/api/control_server.h"

namespace continuum::agent {

// GET /v1/backup-jobs and POST /v1/backup-jobs/{name}/run (docs/api.md).
// Kept apart from routes.cc: the scheduler is optional and owned by RunAgent.
void RegisterBackupJobRoutes(api::Router* router, BackupScheduler* scheduler);

}  // namespace continuum::agent
