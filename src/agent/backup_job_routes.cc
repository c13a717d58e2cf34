#include "agent/backup_job_routes.h"

namespace continuum::agent {

void RegisterBackupJobRoutes(api::Router* r, BackupScheduler* s) {
  r->Get("/v1/backup-jobs", [s](const api::Request&) { return api::JsonResponse(s->List()); });
  r->Post("/v1/backup-jobs/{name}/run", [s](const api::Request& req) -> api::Response {
    auto j = s->RunNow(req.path_params.at("name"));
    if (!j.ok()) return api::ErrorResponse(j.status());
    return api::JsonResponse(*j, 202);
  });
}

}  // namespace continuum::agent
