#include "agent/backup_job_config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

namespace continuum::agent {
namespace {

const std::set<std::string> kJobKeys = {"name", "source", "paths",   "repo",     "password_file",
                                        "kind", "tags",   "exclude", "schedule", "forget"};
const std::set<std::string> kForgetKeys = {"keep_last",   "keep_daily",  "keep_weekly", "keep_monthly",
                                           "keep_yearly", "keep_chains", "keep_within", "prune"};

// Errors name the job (or its index) and the key.
class JobReader {
 public:
  JobReader(const toml::table& t, size_t index) : t_(t), where_("[[backup]] #" + std::to_string(index + 1)) {}

  Status Err(const std::string& key, const std::string& msg) const {
    return InvalidArgument("backup job " + where_ + ": " + key + ": " + msg);
  }
  void Named(const std::string& name) { where_ = "'" + name + "'"; }

  Result<std::string> Str(const std::string& key, bool required) const {
    auto n = t_.get(key);
    if (!n) {
      if (required) return Err(key, "is required");
      return std::string();
    }
    auto v = n->value<std::string>();
    if (!v) return Err(key, "must be a string");
    if (required && v->empty()) return Err(key, "must not be empty");
    return *v;
  }

  Result<std::vector<std::string>> Strings(const std::string& key) const {
    std::vector<std::string> out;
    auto n = t_.get(key);
    if (!n) return out;
    auto a = n->as_array();
    if (!a) return Err(key, "must be an array of strings");
    for (const auto& e : *a) {
      auto v = e.value<std::string>();
      if (!v || v->empty()) return Err(key, "must be an array of non-empty strings");
      out.push_back(*v);
    }
    return out;
  }

 private:
  const toml::table& t_;
  std::string where_;
};

Result<ForgetPolicy> ReadForget(const JobReader& r, const toml::node& n) {
  auto t = n.as_table();
  if (!t) return r.Err("forget", "must be a table, e.g. { keep_daily = 7, prune = true }");
  ForgetPolicy p;
  bool any_keep = false;
  for (const auto& [k, v] : *t) {
    std::string key(k.str());
    if (!kForgetKeys.count(key)) return r.Err("forget." + key, "unknown key");
    if (key == "prune") {
      auto b = v.value<bool>();
      if (!b) return r.Err("forget.prune", "must be true or false");
      p.prune = *b;
      continue;
    }
    if (key == "keep_within") {
      auto s = v.value<std::string>();
      if (!s || s->empty()) return r.Err("forget.keep_within", "must be a duration string such as \"30d\"");
      p.keep_within = *s;
      any_keep = true;
      continue;
    }
    auto i = v.value<int64_t>();
    if (!i || *i < 0 || *i > 1000000) return r.Err("forget." + key, "must be a number from 0 to 1000000");
    uint32_t u = static_cast<uint32_t>(*i);
    any_keep = any_keep || u > 0;
    if (key == "keep_last") p.keep_last = u;
    if (key == "keep_daily") p.keep_daily = u;
    if (key == "keep_weekly") p.keep_weekly = u;
    if (key == "keep_monthly") p.keep_monthly = u;
    if (key == "keep_yearly") p.keep_yearly = u;
    if (key == "keep_chains") p.keep_chains = u;
  }
  // forget without any keep rule would remove every unpinned point.
  if (!any_keep) return r.Err("forget", "needs at least one keep_* rule");
  return p;
}

Status ReadSource(const JobReader& r, BackupJob* job) {
  CONTINUUM_ASSIGN_OR_RETURN(std::string source, r.Str("source", false));
  CONTINUUM_ASSIGN_OR_RETURN(std::vector<std::string> paths, r.Strings("paths"));
  if (source.empty() && paths.empty()) {
    return r.Err("source", "is required (\"volume:NAME\", \"image:PATH\" or \"path:DIR\"; or paths = [...])");
  }
  if (!source.empty() && !paths.empty()) return r.Err("paths", "give either source or paths, not both");
  if (!paths.empty()) {
    job->source_type = "path";
    job->paths = paths;
    std::string joined;
    for (const auto& p : paths) joined += (joined.empty() ? "" : ",") + p;
    job->source = "path:" + joined;
    return Status::Ok();
  }
  auto colon = source.find(':');
  std::string type = colon == std::string::npos ? "" : source.substr(0, colon);
  std::string rest = colon == std::string::npos ? "" : source.substr(colon + 1);
  if ((type != "volume" && type != "image" && type != "path") || rest.empty()) {
    return r.Err("source", "'" + source + "' is not \"volume:NAME\", \"image:PATH\" or \"path:DIR\"");
  }
  if (type != "volume" && rest[0] != '/') return r.Err("source", "'" + source + "' needs an absolute path");
  job->source_type = type;
  job->source = source;
  job->paths = {rest};
  return Status::Ok();
}

Result<BackupJob> ReadJob(const toml::table& t, size_t index) {
  JobReader r(t, index);
  BackupJob job;
  CONTINUUM_ASSIGN_OR_RETURN(job.name, r.Str("name", true));
  if (job.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
      std::string::npos) {
    return r.Err("name", "'" + job.name + "' may hold only letters, digits, '.', '_' and '-'");
  }
  r.Named(job.name);
  for (const auto& [k, v] : t) {
    if (!kJobKeys.count(std::string(k.str()))) return r.Err(std::string(k.str()), "unknown key");
  }
  if (Status st = ReadSource(r, &job); !st.ok()) return st;
  CONTINUUM_ASSIGN_OR_RETURN(job.repo, r.Str("repo", true));
  struct stat sb {};
  if (::stat(job.repo.c_str(), &sb) != 0 || !S_ISDIR(sb.st_mode)) {
    return r.Err("repo", "repository directory " + job.repo + " does not exist");
  }
  CONTINUUM_ASSIGN_OR_RETURN(job.password_file, r.Str("password_file", true));
  if (::access(job.password_file.c_str(), R_OK) != 0) {
    return r.Err("password_file", "cannot read " + job.password_file + ": " + strerror(errno));
  }
  CONTINUUM_ASSIGN_OR_RETURN(job.kind, r.Str("kind", false));
  if (!job.kind.empty() && job.kind != "full" && job.kind != "incremental" && job.kind != "differential") {
    return r.Err("kind", "'" + job.kind + "' is not full, incremental or differential");
  }
  CONTINUUM_ASSIGN_OR_RETURN(job.tags, r.Strings("tags"));
  CONTINUUM_ASSIGN_OR_RETURN(job.excludes, r.Strings("exclude"));
  if (!job.excludes.empty() && job.source_type != "path") return r.Err("exclude", "only path sources have excludes");
  CONTINUUM_ASSIGN_OR_RETURN(std::string sched, r.Str("schedule", true));
  auto s = ParseBackupSchedule(sched);
  if (!s.ok()) return r.Err("schedule", s.status().message());
  job.schedule = *s;
  if (auto f = t.get("forget")) {
    CONTINUUM_ASSIGN_OR_RETURN(ForgetPolicy p, ReadForget(r, *f));
    job.forget = p;
  }
  return job;
}

}  // namespace

Result<std::vector<BackupJob>> ParseBackupJobs(const toml::table& config) {
  std::vector<BackupJob> jobs;
  auto node = config.get("backup");
  if (!node) return jobs;
  auto arr = node->as_array();
  if (!arr) return InvalidArgument("backup: must be an array of tables ([[backup]])");
  std::set<std::string> names;
  for (size_t i = 0; i < arr->size(); ++i) {
    auto t = (*arr)[i].as_table();
    if (!t) return InvalidArgument("backup job [[backup]] #" + std::to_string(i + 1) + ": must be a table");
    CONTINUUM_ASSIGN_OR_RETURN(BackupJob job, ReadJob(*t, i));
    if (!names.insert(job.name).second) {
      return InvalidArgument("backup job '" + job.name + "': name: another job has the same name");
    }
    jobs.push_back(std::move(job));
  }
  return jobs;
}

}  // namespace continuum::agent
