#pragma once

#include <string>

#include "continuum/common/result.h"

namespace continuum::agent {

struct AgentOptions {
  std::string state_dir = "/var/lib/continuum";
  std::string control = "/run/continuum/agent.sock";
  std::string control_group;
  std::string config_path;  // optional TOML file
  std::string log_level = "info";
  // Replication identity: certificate <pki_dir>/<name>.crt signed by <pki_dir>/ca.crt.
  std::string pki_dir;
  std::string name;
  bool insecure = false;  // plaintext replication (explicit opt-in)
  std::string listen;     // server: HOST:PORT for replication streams
  bool server = false;    // run as `continuum server` (DR site)
};

// Runs the agent daemon in the foreground until SIGTERM or SIGINT, then shuts
// down cleanly (flush, detach devices, unmount). Returns the exit code.
// Command-line values in `cli` win over the config file; `cli_set` names the
// fields given on the command line.
int RunAgent(AgentOptions cli, bool state_dir_set, bool control_set);

}  // namespace continuum::agent
