#pragma once

#include "continuum/agent/event_log.h"
#include "continuum/agent/replication_manager.h"
#include "continuum/agent/volume_manager.h"
#include "continuum/api/control_server.h"

namespace continuum::agent {

// The agent's control API (docs/api.md): HTTP+JSON routes under /v1.
void RegisterRoutes(api::Router* router, VolumeManager* manager, EventLog* events,
                    ReplicationManager* replication, const std::string& role);

}  // namespace continuum::agent
