#include "cli/backup_jobs_command.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "cli/output.h"
#include "continuum/api/control_client.h"

namespace continuum::cli {
namespace {

constexpr const char* kDefaultControl = "/run/continuum/agent.sock";

std::string ResolveControl(CLI::App* root) {
  if (auto* o = root->get_option_no_throw("--control"); o && o->count() > 0) return o->as<std::string>();
  if (const char* env = std::getenv("CONTINUUM_CONTROL"); env && *env) return env;
  return kDefaultControl;
}

std::string Str(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return "-";
  return j[key].is_string() ? j[key].get<std::string>() : j[key].dump();
}

std::string LastResult(const nlohmann::json& r) {
  if (r.is_null()) return "-";
  if (r.value("status", "") == "ok") {
    std::string out = "ok point " + r.value("point", "").substr(0, 12);
    if (r.contains("forget_error")) out += " (forget failed: " + r["forget_error"].get<std::string>() + ")";
    return out;
  }
  return "failed: " + r.value("message", "");
}

void PrintJobs(const nlohmann::json& jobs) {
  if (jobs.empty()) {
    std::cout << "no backup jobs (add [[backup]] tables to the agent's config)\n";
    return;
  }
  std::printf("%-16s %-8s %-26s %-26s %-26s %s\n", "NAME", "STATE", "SCHEDULE", "NEXT RUN", "LAST RUN", "LAST RESULT");
  for (const auto& j : jobs) {
    std::string state = j.value("running", false) ? "running" : (j.value("due", false) ? "due" : "idle");
    std::printf("%-16s %-8s %-26s %-26s %-26s %s\n", Str(j, "name").c_str(), state.c_str(), Str(j, "schedule").c_str(),
                Str(j, "next_run").c_str(), Str(j, "last_run").c_str(), LastResult(j["last_result"]).c_str());
    std::printf("  %s -> %s\n", Str(j, "source").c_str(), Str(j, "repo").c_str());
  }
}

}  // namespace

void RegisterBackupJobsCommand(CLI::App* backup_cmd, std::function<int()>* action, const bool* json) {
  static std::string job_name;
  CLI::App* root = backup_cmd;
  while (root->get_parent()) root = root->get_parent();
  auto* jobs = backup_cmd->add_subcommand("jobs", "list the agent's scheduled backup jobs (asks the running agent)");
  jobs->callback([action, json, root, jobs] {
    // CLI11 runs a subcommand's callback before its parent's: leave `run` alone.
    if (jobs->got_subcommand("run")) return;
    *action = [json, root] {
      std::string control = ResolveControl(root);
      auto r = api::ControlClient::ForSocket(control).Call("GET", "/v1/backup-jobs");
      if (!r.ok()) return PrintError(r.status(), *json, control);
      if (*json) {
        PrintJson(*r);
      } else {
        PrintJobs(*r);
      }
      return 0;
    };
  });
  auto* run = jobs->add_subcommand("run", "start a backup job now");
  run->add_option("NAME", job_name, "job name")->required();
  run->callback([action, json, root] {
    *action = [json, root] {
      std::string control = ResolveControl(root);
      auto r = api::ControlClient::ForSocket(control).Call("POST", "/v1/backup-jobs/" + Esc(job_name) + "/run");
      if (!r.ok()) return PrintError(r.status(), *json, control);
      if (*json) {
        PrintJson(*r);
      } else {
        std::cout << "started backup job " << job_name << " (see 'continuum backup jobs' and 'continuum events')\n";
      }
      return 0;
    };
  });
}

}  // namespace continuum::cli
