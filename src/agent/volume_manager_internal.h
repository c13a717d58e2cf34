#pragma once

#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "continuum/agent/volume_manager.h"

namespace continuum::agent {

struct VolumeManager::Managed {
  std::mutex op_mu;  // serializes up/down/rollback/restore of this volume
  volume::VolumeConfig cfg;
  bool desired_up = false;
  std::vector<Schedule> schedules;
  uint64_t next_schedule_id = 1;
  std::vector<std::string> exports;
  // Guarded by op_mu for writes; read under the manager's mu_ for status.
  std::shared_ptr<volume::Volume> volume;  // null when it failed to open
  std::string error;
  std::unique_ptr<io::LoopDevice> loop;
  std::string device;  // loop->path() while up
  // Replica (server side): written only by the replication stream.
  bool replica = false;
  std::string source;         // peer name of the source agent
  std::string source_volume;
  bool attached = false;      // a source is streaming into it now
  bool resync_active = false;
  uint64_t resync_first = 0;
  uint64_t consistent_from = 0;  // points before this (and inside a resync) are not crash-consistent
};

struct VolumeManager::View {
  std::string id;
  std::string volume;
  std::string device;
  std::string overlay;
  cdp::Point point;
  bool writable = false;
  // A view that ends with the process that opened it (a `backup volume` run):
  // its pid and start time (so a reused pid is not taken for it). 0: none.
  pid_t owner_pid = 0;
  uint64_t owner_start = 0;
  std::shared_ptr<volume::VolumeView> view;
  std::unique_ptr<io::LoopDevice> loop;
};

// The start time of a process (field 22 of /proc/PID/stat, clock ticks since
// boot); 0 when there is no such process.
uint64_t ProcessStartTime(pid_t pid);

std::string FullPolicyName(cdp::FullPolicy p);
nlohmann::json PointJson(const cdp::Point& p);
std::string FuseVolumeFile(const std::string& name);
std::string FuseViewFile(const std::string& id);
Status ValidateVolumeName(const std::string& name);
Status ValidateLabel(const std::string& label);

}  // namespace continuum::agent
