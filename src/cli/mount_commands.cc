#include "cli/mount_commands.h"

#include <cstdlib>
#include <iostream>

#include "cli/output.h"
#include "continuum/backup/mount.h"
#include "continuum/common/units.h"
#include "continuum/io/file.h"

namespace continuum::cli {
namespace {

struct MountArgs {
  std::string point;
  std::string repo;
  std::string password_file;
  std::string at;
  std::string cache = "256M";
  bool writable = false;
};

// Same rules as the backup commands: --repo or $CONTINUUM_REPO, a password
// from --password-file (one trailing newline ignored) or $CONTINUUM_PASSWORD.
Result<backup::MountRequest> MakeRequest(const MountArgs& a) {
  backup::MountRequest req;
  req.repo_path = a.repo;
  if (req.repo_path.empty()) {
    if (const char* env = std::getenv("CONTINUUM_REPO"); env && *env) req.repo_path = env;
  }
  if (req.repo_path.empty()) return InvalidArgument("no repository given: use --repo PATH or set $CONTINUUM_REPO");
  if (!a.password_file.empty()) {
    auto text = io::ReadFileToString(a.password_file);
    if (!text.ok()) return InvalidArgument("cannot read password file: " + text.status().message());
    std::string pw = *text;
    if (!pw.empty() && pw.back() == '\n') pw.pop_back();
    if (!pw.empty() && pw.back() == '\r') pw.pop_back();
    if (pw.empty()) return InvalidArgument("password file " + a.password_file + " is empty");
    req.creds.password = pw;
  } else if (const char* env = std::getenv("CONTINUUM_PASSWORD"); env && *env) {
    req.creds.password = env;
  } else {
    return InvalidArgument("no password given: use --password-file FILE or set $CONTINUUM_PASSWORD");
  }
  auto cache = ParseSize(a.cache);
  if (!cache.ok() || *cache < (1u << 20)) return InvalidArgument("--cache-size must be a size of at least 1M");
  if (a.writable && !a.at.empty()) return InvalidArgument("--writable is for image points; --at mounts are read-only");
  req.cache_bytes = *cache;
  req.point = a.point;
  req.at_dir = a.at;
  req.writable = a.writable;
  return req;
}

// Usage errors exit 2, failed operations 1 (a wrong password is a failure).
int Fail(const Status& st, bool json, bool usage) {
  if (json) {
    PrintError(st, true, "");
  } else {
    std::cerr << "error: " << st.message() << std::endl;
  }
  return usage ? kExitUsage : kExitFailed;
}

}  // namespace

void RegisterMountCommands(CLI::App& app, std::function<int()>* action, const bool* json) {
  static MountArgs a;
  auto* mount = app.add_subcommand(
      "mount", "mount a backup point: an image point as a block device, a path point (--at DIR) as a directory");
  mount->add_option("ID", a.point, "point id, unique id prefix, or 'latest'")->required();
  mount->add_option("--repo", a.repo, "repository directory (default: $CONTINUUM_REPO)");
  mount->add_option("--password-file", a.password_file, "file holding the password (default: $CONTINUUM_PASSWORD)");
  mount->add_option("--at", a.at, "path points: an existing empty directory to show the files at");
  mount->add_flag("--writable", a.writable, "image points: writes go to a scratch overlay, never to the repository");
  mount->add_option("--cache-size", a.cache, "chunk cache of the mount (default 256M)");
  mount->callback([action, json] {
    *action = [json] {
      auto req = MakeRequest(a);
      if (!req.ok()) return Fail(req.status(), *json, true);
      auto rec = backup::StartMount(*req);
      if (!rec.ok()) return Fail(rec.status(), *json, false);
      if (*json) {
        PrintJson(rec->ToJson());
      } else {
        std::cout << (rec->kind == "image" ? rec->device : rec->mountpoint) << std::endl;
      }
      return 0;
    };
  });
}

bool CloseRepoMount(const std::string& device_or_dir, bool json, int* exit_code) {
  auto rec = backup::FindMount(device_or_dir);
  // Not a repo mount, or a registry this user cannot read (a non-root user
  // closing an agent view): the agent decides.
  if (!rec.ok()) return false;
  Status st = backup::CloseMount(*rec);
  if (!st.ok()) {
    *exit_code = Fail(st, json, false);
    return true;
  }
  if (json) {
    PrintJson({{"closed", device_or_dir}, {"point", rec->point}});
  } else {
    std::cout << "closed " << device_or_dir << std::endl;
  }
  *exit_code = 0;
  return true;
}

}  // namespace continuum::cli
