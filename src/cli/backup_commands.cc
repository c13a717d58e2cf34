#include "cli/backup_commands.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>

#include "cli/output.h"
#include "cli/backup_jobs_command.h"
#include "cli/backup_volume_command.h"
#include "continuum/backup/chain.h"
#include "continuum/backup/image_backup.h"
#include "continuum/backup/path_backup.h"
#include "continuum/backup/point_catalog.h"
#include "continuum/backup/mount.h"
#include "continuum/backup/point_files.h"
#include "continuum/backup/retention.h"
#include "continuum/backup/restore.h"
#include "continuum/common/time_util.h"
#include "continuum/common/units.h"
#include "continuum/io/file.h"
#include "continuum/repo/repository.h"

namespace continuum::cli {
namespace {

using backup::PointInfo;

// Options shared by every command that opens a repository.
struct RepoArgs {
  std::string repo;
  std::string password_file;
};

void AddRepoOptions(CLI::App* cmd, RepoArgs* a) {
  cmd->add_option("--repo", a->repo, "repository directory (default: $CONTINUUM_REPO)");
  cmd->add_option("--password-file", a->password_file, "file holding the password (default: $CONTINUUM_PASSWORD)");
}

Result<std::string> ResolveRepo(const RepoArgs& a) {
  if (!a.repo.empty()) return a.repo;
  if (const char* env = std::getenv("CONTINUUM_REPO"); env && *env) return std::string(env);
  return InvalidArgument("no repository given: use --repo PATH or set $CONTINUUM_REPO");
}

Result<repo::Credentials> ResolveCredentials(const RepoArgs& a) {
  repo::Credentials c;
  if (!a.password_file.empty()) {
    auto text = io::ReadFileToString(a.password_file);
    if (!text.ok()) return InvalidArgument("cannot read password file: " + text.status().message());
    c.password = *text;
    // One trailing newline is how editors and `echo` end a password file.
    if (!c.password.empty() && c.password.back() == '\n') c.password.pop_back();
    if (!c.password.empty() && c.password.back() == '\r') c.password.pop_back();
    if (c.password.empty()) return InvalidArgument("password file " + a.password_file + " is empty");
    return c;
  }
  if (const char* env = std::getenv("CONTINUUM_PASSWORD"); env && *env) {
    c.password = env;
    return c;
  }
  return InvalidArgument("no password given: use --password-file FILE or set $CONTINUUM_PASSWORD");
}

// Prints an error; usage errors exit 2, every failed operation 1. (Not
// PrintError's mapping: a wrong password is kInvalidArgument but not a usage
// error, and kUnavailable here means a lock, not a missing daemon.)
int Fail(const Status& st, bool json, bool usage = false) {
  if (json) {
    PrintError(st, true, "");
  } else {
    std::cerr << "error: " << st.message() << std::endl;
  }
  return usage ? kExitUsage : kExitFailed;
}

std::string ShortId(const repo::BlobId& id) { return id.Hex().substr(0, 12); }

std::string Join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

// --progress of backup and restore: "auto" draws a line on stderr when it is a
// terminal, "json" writes one JSON object per line to stderr (for scripts and
// agents), "none" is silent. Set by the option before any command runs.
std::string g_progress_mode = "auto";

void AddProgressOption(CLI::App* cmd) {
  cmd->add_option("--progress", g_progress_mode,
                  "auto (a line when stderr is a terminal), json (one JSON object per line on stderr) or none")
      ->check(CLI::IsMember({"auto", "json", "none"}));
}

// Progress on stderr: a line redrawn at most 4 times a second when stderr is a
// terminal, or with --progress json one object per line at most twice a second
// ({"bytes_done", "bytes_total", "files", "new_bytes", "rate", "elapsed_s",
// "eta_s"}; bytes_total 0 and eta_s null when unknown) and a last one with
// "done": true.
class TermProgress {
 public:
  explicit TermProgress(bool json)
      : json_lines_(g_progress_mode == "json"),
        enabled_(json_lines_ || (g_progress_mode == "auto" && !json && ::isatty(STDERR_FILENO))),
        start_(MonoNowNs()) {}
  ~TermProgress() {
    if (json_lines_ && seen_) EmitJson(MonoNowNs(), true);
  }
  TermProgress(const TermProgress&) = delete;
  TermProgress& operator=(const TermProgress&) = delete;

  void operator()(const backup::Progress& p) {
    if (!enabled_) return;
    last_p_ = p;
    seen_ = true;
    int64_t now = MonoNowNs();
    if (now - last_ < (json_lines_ ? 500'000'000 : 250'000'000)) return;
    last_ = now;
    if (json_lines_) return EmitJson(now, false);
    double secs = (now - start_) / 1e9;
    double rate = secs > 0 ? p.bytes_done / secs : 0;
    std::string line = FormatSize(p.bytes_done);
    if (p.bytes_total) {
      line += " / " + FormatSize(p.bytes_total) + " (" + std::to_string(p.bytes_done * 100 / p.bytes_total) + "%)";
    }
    line += "  " + FormatSize(static_cast<uint64_t>(rate)) + "/s";
    if (p.files_done) line += "  " + std::to_string(p.files_done) + " files";
    if (p.new_bytes) line += "  new " + FormatSize(p.new_bytes);
    if (p.bytes_total && rate > 0 && p.bytes_done < p.bytes_total) {
      line += "  ETA " + FormatDuration(static_cast<int64_t>((p.bytes_total - p.bytes_done) / rate * 1e9) + 1000000000);
    }
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
    drawn_ = true;
  }

  void Done() {
    if (drawn_) std::fprintf(stderr, "\r\033[K");
    drawn_ = false;
  }

 private:
  void EmitJson(int64_t now, bool done) {
    const backup::Progress& p = last_p_;
    double secs = (now - start_) / 1e9;
    double rate = secs > 0 ? p.bytes_done / secs : 0;
    nlohmann::json j{{"bytes_done", p.bytes_done}, {"bytes_total", p.bytes_total}, {"files", p.files_done},
                     {"new_bytes", p.new_bytes}, {"rate", static_cast<uint64_t>(rate)}, {"elapsed_s", secs}};
    j["eta_s"] = p.bytes_total && rate > 0 && p.bytes_done <= p.bytes_total
                     ? nlohmann::json((p.bytes_total - p.bytes_done) / rate)
                     : nlohmann::json(nullptr);
    if (done) j["done"] = true;
    std::fprintf(stderr, "%s\n", j.dump().c_str());
    std::fflush(stderr);
  }

  bool json_lines_;
  bool enabled_;
  int64_t start_;
  int64_t last_ = 0;
  bool drawn_ = false;
  bool seen_ = false;
  backup::Progress last_p_;
};

Result<std::unique_ptr<repo::Repository>> OpenRepo(const RepoArgs& a, repo::LockMode lock, bool* usage) {
  auto path = ResolveRepo(a);
  if (!path.ok()) {
    *usage = true;
    return path.status();
  }
  auto creds = ResolveCredentials(a);
  if (!creds.ok()) {
    *usage = true;
    return creds.status();
  }
  repo::OpenOptions o;
  o.lock = lock;
  return repo::Repository::Open(*path, *creds, std::move(o));
}

void PrintSummary(const PointInfo& p, bool json) {
  if (json) return PrintJson(p.ToJson());
  double secs = p.duration_ns / 1e9;
  std::printf("saved %s point %s (%s)\n", std::string(backup::PointTypeName(p.type)).c_str(), ShortId(p.id).c_str(),
              p.id.Hex().c_str());
  std::printf("  kind:       %s%s\n", p.kind.c_str(),
              p.parent.empty() ? "" : (" (against " + p.parent.substr(0, 12) + ", chain " + p.full.substr(0, 12) + ")").c_str());
  if (!p.volume.name.empty()) {
    std::printf("  volume:     %s at seq:%llu (bookmark %s), read %s\n", p.volume.name.c_str(),
                (unsigned long long)p.volume.seq, p.volume.bookmark.c_str(),
                p.volume.read == "changed" ? "changed regions only" : "everything");
  }
  if (p.type == backup::PointType::kPath) std::printf("  entries:    %llu\n", (unsigned long long)p.files);
  std::printf("  read:       %s in %.1fs (%s/s)\n", FormatSize(p.bytes_read).c_str(), secs,
              FormatSize(secs > 0 ? static_cast<uint64_t>(p.bytes_read / secs) : p.bytes_read).c_str());
  std::printf("  new data:   %s (%s stored after compression and encryption)\n", FormatSize(p.new_raw_bytes).c_str(),
              FormatSize(p.new_stored_bytes).c_str());
  if (p.warnings) std::printf("  warnings:   %llu entries could not be read (see above)\n", (unsigned long long)p.warnings);
}

void PrintPoints(const std::vector<PointInfo>& points) {
  if (points.empty()) {
    std::cout << "no points (take one with 'continuum backup image|path ... --repo PATH')\n";
    return;
  }
  std::printf("%-12s  %-3s  %-24s  %-5s  %-12s  %10s  %10s  %-30s %s\n", "ID", "PIN", "TIME", "TYPE", "KIND", "SIZE",
              "NEW", "SOURCE", "TAGS");
  for (const auto& p : points) {
    std::printf("%-12s  %-3s  %-24s  %-5s  %-12s  %10s  %10s  %-30s %s\n", ShortId(p.id).c_str(), p.pinned ? "*" : "",
                FormatRfc3339(p.time_ns).c_str(), std::string(backup::PointTypeName(p.type)).c_str(), p.kind.c_str(),
                FormatSize(p.size).c_str(), FormatSize(p.new_stored_bytes).c_str(), Join(p.sources, ",").c_str(),
                Join(p.tags, ",").c_str());
  }
}

void PrintCheck(const repo::CheckReport& r, const std::map<repo::ManifestId, PointInfo>& points, bool json) {
  auto describe = [&](const repo::ManifestId& id) {
    auto it = points.find(id);
    if (it == points.end()) return ShortId(id);
    return ShortId(id) + " (" + std::string(backup::PointTypeName(it->second.type)) + " of " +
           Join(it->second.sources, ",") + " at " + FormatRfc3339(it->second.time_ns) + ")";
  };
  if (json) {
    nlohmann::json j{{"ok", r.ok()}, {"packs_checked", r.packs_checked}, {"blobs_checked", r.blobs_checked},
                     {"manifests_checked", r.manifests_checked}, {"index_problems", r.index_problems},
                     {"unindexed_packs", r.unindexed_packs}, {"lock_problems", r.lock_problems}};
    j["pack_problems"] = nlohmann::json::array();
    for (const auto& p : r.pack_problems) {
      j["pack_problems"].push_back({{"pack", p.pack}, {"problem", p.problem}, {"lost_blobs", p.lost_blobs.size()}});
    }
    if (r.append_only) {
      j["append_only"] = {{"immutability_supported", r.immutability_supported},
                          {"immutable_files", r.immutable_files},
                          {"mutable_files", r.mutable_files.size()},
                          {"mutable_file_names", r.mutable_files}};
    } else {
      j["append_only"] = nullptr;
    }
    j["damaged_points"] = nlohmann::json::array();
    for (const auto& m : r.manifest_problems) {
      j["damaged_points"].push_back({{"id", m.manifest.Hex()}, {"problem", m.problem},
                                     {"missing_blobs", m.missing_blobs}, {"damaged_blobs", m.damaged_blobs}});
    }
    return PrintJson(j);
  }
  std::printf("checked %llu packs, %llu blobs, %llu points\n", (unsigned long long)r.packs_checked,
              (unsigned long long)r.blobs_checked, (unsigned long long)r.manifests_checked);
  for (const auto& s : r.index_problems) std::printf("damaged index: %s\n", s.c_str());
  for (const auto& p : r.pack_problems) {
    std::printf("damaged pack %s: %s (%zu blobs lost)\n", p.pack.c_str(), p.problem.c_str(), p.lost_blobs.size());
  }
  for (const auto& m : r.manifest_problems) {
    std::printf("point %s cannot be fully restored: %s\n", describe(m.manifest).c_str(), m.problem.c_str());
  }
  for (const auto& s : r.unindexed_packs) std::printf("unindexed pack (harmless, 'repo repair' adopts it): %s\n", s.c_str());
  for (const auto& s : r.lock_problems) std::printf("undecodable lock: %s\n", s.c_str());
  if (r.append_only && !r.immutability_supported) {
    std::printf("append-only: not enforced by the filesystem (no immutable flag there); clients refuse deletes\n");
  } else if (r.append_only) {
    std::printf("append-only: %llu files immutable, %zu lacking the immutable flag\n",
                (unsigned long long)r.immutable_files, r.mutable_files.size());
    for (const auto& s : r.mutable_files) std::printf("not immutable: %s\n", s.c_str());
  }
  std::printf(r.ok() ? "no problems found\n" : "problems found: the points above need the damaged data\n");
}

std::string ModeString(const backup::FileEntry& e) {
  static const std::map<std::string, char> kTypeChar = {{"file", '-'}, {"dir", 'd'},  {"symlink", 'l'}, {"chardev", 'c'},
                                                       {"blockdev", 'b'}, {"fifo", 'p'}, {"socket", 's'}};
  std::string out(1, kTypeChar.count(e.type) ? kTypeChar.at(e.type) : '?');
  const char* rwx = "rwxrwxrwx";
  for (int i = 0; i < 9; ++i) out += (e.mode & (0400 >> i)) ? rwx[i] : '-';
  if (e.mode & 04000) out[3] = (e.mode & 0100) ? 's' : 'S';
  if (e.mode & 02000) out[6] = (e.mode & 0010) ? 's' : 'S';
  if (e.mode & 01000) out[9] = (e.mode & 0001) ? 't' : 'T';
  return out;
}

void PrintForget(const backup::ForgetReport& r, bool dry_run, bool json) {
  if (json) {
    nlohmann::json points = nlohmann::json::array();
    for (const auto& d : r.decisions) {
      points.push_back({{"id", d.point.id.Hex()}, {"time", FormatRfc3339(d.point.time_ns)}, {"group", d.group},
                        {"keep", d.keep}, {"reasons", d.reasons}, {"pinned", d.point.pinned}});
    }
    nlohmann::json j{{"dry_run", dry_run}, {"points", points}, {"removed", r.removed}, {"pruned", r.pruned}};
    if (r.pruned) j["prune"] = {{"bytes_freed", r.prune.bytes_freed()}, {"packs_deleted", r.prune.packs_deleted}};
    return PrintJson(j);
  }
  std::string group;
  size_t keep = 0, remove = 0;
  for (const auto& d : r.decisions) {
    if (d.group != group) {
      group = d.group;
      std::printf("source %s:\n", group.c_str());
    }
    std::printf("  %-12s %-12s  %-24s  %s\n", d.keep ? "keep" : (dry_run ? "would remove" : "remove"),
                ShortId(d.point.id).c_str(), FormatRfc3339(d.point.time_ns).c_str(), Join(d.reasons, ",").c_str());
    (d.keep ? keep : remove)++;
  }
  std::printf(dry_run ? "would keep %zu points and remove %zu (dry run: nothing changed)\n"
                      : "kept %zu points, removed %zu\n",
              keep, remove);
}

void PrintPrune(const repo::PruneReport& r, bool dry_run, bool json) {
  if (json) {
    return PrintJson({{"dry_run", dry_run}, {"points", r.points}, {"blobs_used", r.blobs_used},
                      {"blobs_removed", r.blobs_removed}, {"packs_deleted", r.packs_deleted},
                      {"packs_repacked", r.packs_repacked}, {"packs_written", r.packs_written},
                      {"unindexed_packs_deleted", r.unindexed_packs_deleted}, {"bytes_deleted", r.bytes_deleted},
                      {"bytes_written", r.bytes_written}, {"bytes_freed", r.bytes_freed()},
                      {"unused_bytes_kept", r.unused_bytes_kept}, {"pins_removed", r.pins_removed}});
  }
  std::printf("%s %llu unused blobs: %llu packs deleted (%llu repacked into %llu new), %llu left by crashed writers\n",
              dry_run ? "would remove" : "removed", (unsigned long long)r.blobs_removed,
              (unsigned long long)r.packs_deleted, (unsigned long long)r.packs_repacked,
              (unsigned long long)r.packs_written, (unsigned long long)r.unindexed_packs_deleted);
  std::printf("%s %s (%s deleted, %s written); %s unused kept in packs below the repack threshold\n",
              dry_run ? "would free" : "freed", FormatSize(r.bytes_freed()).c_str(), FormatSize(r.bytes_deleted).c_str(),
              FormatSize(r.bytes_written).c_str(), FormatSize(r.unused_bytes_kept).c_str());
}

}  // namespace

void RegisterBackupCommands(CLI::App& app, std::function<int()>* action, const bool* json) {
  // State shared by the callbacks: lives as long as `app` is parsed and run.
  struct State {
    RepoArgs ra;
    bool append_only = false;
    bool read_data = false;
    bool verify = false;
    bool restart = false;
    std::string kind = "incremental";  // backup path
    std::string source, point, to;
    std::vector<std::string> sources, excludes, includes, tags;
    std::string ls_path, keep_within;
    uint32_t keep_last = 0, keep_daily = 0, keep_weekly = 0, keep_monthly = 0, keep_yearly = 0, keep_chains = 0;
    std::string image_kind = "incremental";
    bool prune = false, dry_run = false;
  };
  static State s;

  // --- repo ---
  auto* repo_cmd = app.add_subcommand("repo", "backup repositories (standalone, no daemon)")->require_subcommand(1);
  auto* rinit = repo_cmd->add_subcommand("init", "create an encrypted, deduplicating repository");
  AddRepoOptions(rinit, &s.ra);
  rinit->add_flag("--append-only", s.append_only, "clients cannot delete or overwrite anything");
  rinit->callback([action, json] {
    *action = [json] {
      auto path = ResolveRepo(s.ra);
      if (!path.ok()) return Fail(path.status(), *json, true);
      auto creds = ResolveCredentials(s.ra);
      if (!creds.ok()) return Fail(creds.status(), *json, true);
      repo::InitOptions o;
      o.append_only = s.append_only;
      Status st = repo::Repository::Init(*path, *creds, o);
      if (!st.ok()) return Fail(st, *json);
      if (*json) {
        PrintJson({{"repository", *path}, {"append_only", s.append_only}});
      } else {
        std::cout << "created repository " << *path << (s.append_only ? " (append-only)" : "") << "\n";
      }
      return 0;
    };
  });

  auto* rcheck = repo_cmd->add_subcommand("check", "verify the repository; names damaged packs and points");
  AddRepoOptions(rcheck, &s.ra);
  rcheck->add_flag("--read-data", s.read_data, "also read and decrypt every blob");
  rcheck->callback([action, json] {
    *action = [json] {
      bool usage = false;
      auto r = OpenRepo(s.ra, repo::LockMode::kShared, &usage);
      if (!r.ok()) return Fail(r.status(), *json, usage);
      auto report = (*r)->Check(s.read_data);
      if (!report.ok()) return Fail(report.status(), *json);
      std::map<repo::ManifestId, PointInfo> points;
      if (auto list = backup::ListPoints(**r); list.ok()) {
        for (auto& p : *list) points.emplace(p.id, std::move(p));
      }
      PrintCheck(*report, points, *json);
      return report->ok() ? 0 : kExitFailed;
    };
  });

  auto* rrepair = repo_cmd->add_subcommand("repair", "rebuild the index from the packs");
  AddRepoOptions(rrepair, &s.ra);
  rrepair->add_flag("--read-data", s.read_data, "verify every blob and leave damaged ones out of the index");
  rrepair->callback([action, json] {
    *action = [json] {
      bool usage = false;
      auto r = OpenRepo(s.ra, repo::LockMode::kExclusive, &usage);
      if (!r.ok()) return Fail(r.status(), *json, usage);
      auto rep = (*r)->RebuildIndex(s.read_data);
      if (!rep.ok()) return Fail(rep.status(), *json);
      if (*json) {
        nlohmann::json bad = nlohmann::json::array();
        for (const auto& p : rep->bad_packs) bad.push_back({{"pack", p.pack}, {"problem", p.problem}});
        PrintJson({{"packs_indexed", rep->packs_indexed}, {"blobs_indexed", rep->blobs_indexed},
                   {"index_files_written", rep->index_files_written}, {"index_files_removed", rep->index_files_removed},
                   {"files_made_immutable", rep->files_made_immutable},
                   {"immutability_problem", rep->immutability_problem}, {"bad_packs", bad}});
      } else {
        std::printf("indexed %llu blobs in %llu packs (%llu index files written, %llu removed)\n",
                    (unsigned long long)rep->blobs_indexed, (unsigned long long)rep->packs_indexed,
                    (unsigned long long)rep->index_files_written, (unsigned long long)rep->index_files_removed);
        for (const auto& p : rep->bad_packs) std::printf("skipped pack %s: %s\n", p.pack.c_str(), p.problem.c_str());
        if (rep->files_made_immutable) {
          std::printf("made %llu files immutable (append-only)\n", (unsigned long long)rep->files_made_immutable);
        }
        if (!rep->immutability_problem.empty()) std::printf("%s\n", rep->immutability_problem.c_str());
      }
      return 0;
    };
  });

  // --- backup ---
  auto* bk = app.add_subcommand("backup", "take and list backup points (standalone, no daemon)")->require_subcommand(1);
  auto* bimage = bk->add_subcommand("image", "back up an image file or block device (fixed-size chunks)");
  bimage->add_option("SOURCE", s.source, "image file or block device")->required();
  AddRepoOptions(bimage, &s.ra);
  bimage->add_option("--tag", s.tags, "tag the point (repeatable)")->allow_extra_args(false);
  bimage->add_option("--kind", s.image_kind,
                     "incremental (default; the first point of a source is full), differential or full; "
                     "an image without a changed-block bitmap is read whole in every kind");
  AddProgressOption(bimage);
  bimage->callback([action, json] {
    *action = [json] {
      auto kind = backup::ParseBackupKind(s.image_kind);
      if (!kind.ok()) return Fail(kind.status(), *json, true);
      bool usage = false;
      auto r = OpenRepo(s.ra, repo::LockMode::kShared, &usage);
      if (!r.ok()) return Fail(r.status(), *json, usage);
      TermProgress progress(*json);
      auto p = backup::BackupImage(**r, {.source = s.source, .tags = s.tags, .kind = *kind},
                                   [&](const backup::Progress& pr) { progress(pr); });
      progress.Done();
      if (!p.ok()) return Fail(p.status(), *json);
      PrintSummary(*p, *json);
      return 0;
    };
  });

  auto* bpath = bk->add_subcommand("path", "back up directory trees with their metadata (content-defined chunks)");
  bpath->add_option("DIR", s.sources, "directories (or files) to back up")->required();
  AddRepoOptions(bpath, &s.ra);
  bpath->add_option("--exclude", s.excludes, "skip names (or absolute paths, with '/') matching PATTERN (repeatable)")
      ->allow_extra_args(false);
  bpath->add_option("--tag", s.tags, "tag the point (repeatable)")->allow_extra_args(false);
  bpath->add_option("--kind", s.kind,
                    "incremental (default: files unchanged since the previous point of these sources are not "
                    "read), differential (unchanged since the last full point) or full (read every file)");
  AddProgressOption(bpath);
  bpath->callback([action, json] {
    *action = [json] {
      auto kind = backup::ParseBackupKind(s.kind);
      if (!kind.ok()) return Fail(kind.status(), *json, true);
      bool usage = false;
      auto r = OpenRepo(s.ra, repo::LockMode::kShared, &usage);
      if (!r.ok()) return Fail(r.status(), *json, usage);
      TermProgress progress(*json);
      auto p = backup::BackupPaths(
          **r, {.sources = s.sources, .excludes = s.excludes, .tags = s.tags, .kind = *kind},
          [&](const backup::Progress& pr) { progress(pr); },
          [&](const Status& w) {
            progress.Done();
            std::cerr << "warning: " << w.message() << std::endl;
          });
      progress.Done();
      if (!p.ok()) return Fail(p.status(), *json);
      PrintSummary(*p, *json);
      return 0;
    };
  });

  RegisterBackupVolumeCommand(
      bk, action, json,
      {.add_repo_options = [](CLI::App* cmd) { AddRepoOptions(cmd, &s.ra); },
       .open_repo = [](bool* usage) { return OpenRepo(s.ra, repo::LockMode::kShared, usage); },
       .fail = [](const Status& st, bool j, bool usage) { return Fail(st, j, usage); },
       .print_summary = [](const PointInfo& p, bool j) { PrintSummary(p, j); },
       .with_progress = [](bool j, const std::function<Result<PointInfo>(const backup::ProgressFn&)>& body) {
         TermProgress progress(j);
         auto r = body([&](const backup::Progress& pr) { progress(pr); });
         progress.Done();
         return r;
       }});

  RegisterBackupJobsCommand(bk, action, json);

  auto* blist = bk->add_subcommand("list", "list the points of a repository");
  AddRepoOptions(blist, &s.ra);
  blist->callback([action, json] {
    *action = [json] {
      bool usage = false;
      auto r = OpenRepo(s.ra, repo::LockMode::kShared, &usage);
      if (!r.ok()) return Fail(r.status(), *json, usage);
      std::vector<std::string> problems;
      auto points = backup::ListPoints(**r, &problems);
      if (!points.ok()) return Fail(points.status(), *json);
      for (const auto& pr : problems) std::cerr << "warning: " << pr << std::endl;
      if (*json) {
        nlohmann::json j = nlohmann::json::array();
        for (const auto& p : *points) j.push_back(p.ToJson());
        PrintJson(j);
      } else {
        PrintPoints(*points);
      }
      return 0;
    };
  });

  for (bool pin : {true, false}) {
    auto* cmd = bk->add_subcommand(pin ? "pin" : "unpin",
                                   pin ? "pin a point: forget never removes it" : "remove a point's pin");
    cmd->add_option("ID", s.point, "point id, unique id prefix, or 'latest'")->required();
    AddRepoOptions(cmd, &s.ra);
    cmd->callback([action, json, pin] {
      *action = [json, pin] {
        bool usage = false;
        auto r = OpenRepo(s.ra, repo::LockMode::kShared, &usage);
        if (!r.ok()) return Fail(r.status(), *json, usage);
        auto point = backup::FindPoint(**r, s.point);
        if (!point.ok()) return Fail(point.status(), *json, point.status().code() == StatusCode::kInvalidArgument);
        if (Status st = (*r)->SetPinned(point->id, pin); !st.ok()) return Fail(st, *json);
        if (*json) {
          PrintJson({{"id", point->id.Hex()}, {"pinned", pin}});
        } else {
          std::printf("%s point %s\n", pin ? "pinned" : "unpinned", ShortId(point->id).c_str());
        }
        return 0;
      };
    });
  }

  // --- ls ---
  auto* ls = app.add_subcommand("ls", "list the files of a point (inside the filesystem of an image point)");
  ls->add_option("ID", s.point, "point id, unique id prefix, or 'latest'")->required();
  ls->add_option("PATH", s.ls_path, "only this file or directory (relative to the point root)");
  AddRepoOptions(ls, &s.ra);
  ls->callback([action, json] {
    *action = [json] {
      bool usage = false;
      auto r = OpenRepo(s.ra, repo::LockMode::kShared, &usage);
      if (!r.ok()) return Fail(r.status(), *json, usage);
      auto point = backup::FindPoint(**r, s.point);
      if (!point.ok()) return Fail(point.status(), *json, point.status().code() == StatusCode::kInvalidArgument);
      auto files = point->type == backup::PointType::kImage ? backup::ListImageFiles(**r, *point, s.ls_path)
                                                             : backup::ListFiles(**r, *point, s.ls_path);
      if (!files.ok()) return Fail(files.status(), *json);
      if (*json) {
        nlohmann::json j = nlohmann::json::array();
        for (const auto& e : *files) {
          nlohmann::json f{{"path", e.path}, {"type", e.type}, {"mode", e.mode}, {"uid", e.uid}, {"gid", e.gid},
                           {"size", e.size}, {"mtime", FormatRfc3339(e.mtime_ns)}, {"mtime_ns", e.mtime_ns}};
          if (e.type == "symlink") f["link_target"] = e.link_target;
          j.push_back(std::move(f));
        }
        std::string text = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        std::cout << text << "\n";
        return 0;
      }
      for (const auto& e : *files) {
        std::printf("%s %5u %5u %12llu  %s  %s%s\n", ModeString(e).c_str(), e.uid, e.gid, (unsigned long long)e.size,
                    FormatRfc3339(e.mtime_ns).c_str(), e.path.c_str(),
                    e.type == "symlink" ? (" -> " + e.link_target).c_str() : "");
      }
      return 0;
    };
  });

  // --- forget / prune ---
  auto* fg = app.add_subcommand("forget", "remove points by a retention policy (per source; pinned points stay)");
  AddRepoOptions(fg, &s.ra);
  fg->add_option("--keep-last", s.keep_last, "keep the N newest points");
  fg->add_option("--keep-within", s.keep_within, "keep points younger than DURATION (e.g. 1y6m, 2w, 36h) before the newest");
  fg->add_option("--keep-daily", s.keep_daily, "keep the newest point of each of the last N days with points");
  fg->add_option("--keep-weekly", s.keep_weekly, "the same for N ISO weeks");
  fg->add_option("--keep-monthly", s.keep_monthly, "the same for N months");
  fg->add_option("--keep-yearly", s.keep_yearly, "the same for N years");
  fg->add_option("--keep-chains", s.keep_chains, "keep every point of the N newest chains (a full and its dependents)");
  fg->add_flag("--prune", s.prune, "prune after removing points");
  fg->add_flag("--dry-run", s.dry_run, "show what would be removed, change nothing");
  fg->callback([action, json] {
    *action = [json] {
      backup::ForgetOptions o;
      o.policy = {.keep_last = s.keep_last, .keep_daily = s.keep_daily, .keep_weekly = s.keep_weekly,
                  .keep_monthly = s.keep_monthly, .keep_yearly = s.keep_yearly, .keep_chains = s.keep_chains};
      if (!s.keep_within.empty()) {
        auto span = backup::ParseCalendarSpan(s.keep_within);
        if (!span.ok()) return Fail(span.status(), *json, true);
        o.policy.keep_within = *span;
      }
      if (o.policy.empty()) {
        return Fail(InvalidArgument("no keep rule given: forget would remove every point "
                                    "(use --keep-last N, --keep-within DURATION, --keep-daily N ...)"),
                    *json, true);
      }
      o.dry_run = s.dry_run;
      o.prune = s.prune;
      bool usage = false;
      auto r = OpenRepo(s.ra, s.dry_run ? repo::LockMode::kShared : repo::LockMode::kExclusive, &usage);
      if (!r.ok()) return Fail(r.status(), *json, usage);
      auto rep = backup::Forget(**r, o);
      if (!rep.ok()) return Fail(rep.status(), *json);
      if (*json) return PrintForget(*rep, s.dry_run, true), 0;
      PrintForget(*rep, s.dry_run, false);
      if (rep->pruned) PrintPrune(rep->prune, false, false);
      return 0;
    };
  });

  auto* pr = app.add_subcommand("prune", "delete data no point needs (repacking mostly unused packs)");
  AddRepoOptions(pr, &s.ra);
  pr->add_flag("--dry-run", s.dry_run, "show what would be freed, change nothing");
  pr->callback([action, json] {
    *action = [json] {
      bool usage = false;
      auto r = OpenRepo(s.ra, repo::LockMode::kExclusive, &usage);
      if (!r.ok()) return Fail(r.status(), *json, usage);
      auto rep = (*r)->Prune({.dry_run = s.dry_run});
      if (!rep.ok()) return Fail(rep.status(), *json);
      PrintPrune(*rep, s.dry_run, *json);
      return 0;
    };
  });

  // --- restore ---
  auto* rs = app.add_subcommand("restore", "restore a point: an image to a file or device, paths to a directory");
  rs->add_option("ID", s.point, "point id, unique id prefix, or 'latest'")->required();
  AddRepoOptions(rs, &s.ra);
  rs->add_option("--to", s.to, "image points: file or block device; path points: directory")->required();
  rs->add_option("--include", s.includes, "only paths (relative to the point) matching PATTERN (repeatable)")
      ->allow_extra_args(false);
  rs->add_flag("--verify", s.verify, "re-read what was written and compare");
  rs->add_flag("--restart", s.restart,
               "start over, discarding the progress file of an interrupted restore to this target "
               "(without it, an interrupted restore of the same point resumes)");
  AddProgressOption(rs);
  rs->callback([action, json] {
    *action = [json] {
      bool usage = false;
      auto r = OpenRepo(s.ra, repo::LockMode::kShared, &usage);
      if (!r.ok()) return Fail(r.status(), *json, usage);
      auto point = backup::FindPoint(**r, s.point);
      if (!point.ok()) return Fail(point.status(), *json, point.status().code() == StatusCode::kInvalidArgument);
      TermProgress progress(*json);
      int64_t start = MonoNowNs();
      uint64_t warnings = 0;
      backup::RestoreOptions ro{.target = s.to, .includes = s.includes, .verify = s.verify, .restart = s.restart};
      ro.notice = [&](const std::string& msg) {
        progress.Done();
        std::cerr << msg << std::endl;
      };
      auto rep = backup::Restore(
          **r, *point, ro,
          [&](const backup::Progress& pr) { progress(pr); },
          [&](const Status& w) {
            ++warnings;
            progress.Done();
            std::cerr << "warning: " << w.message() << std::endl;
          });
      progress.Done();
      if (!rep.ok()) return Fail(rep.status(), *json);
      double secs = (MonoNowNs() - start) / 1e9;
      if (*json) {
        PrintJson({{"id", point->id.Hex()}, {"to", s.to}, {"entries", rep->files},
                   {"bytes_written", rep->bytes_written}, {"bytes_verified", rep->bytes_verified},
                   {"warnings", warnings}, {"verified", s.verify}, {"resumed", rep->resumed},
                   {"bytes_resumed", rep->bytes_resumed}});
      } else {
        std::string extra;
        if (rep->resumed) extra += ", resumed after " + FormatSize(rep->bytes_resumed) + " restored before";
        if (s.verify) extra += ", " + FormatSize(rep->bytes_verified) + " verified";
        std::printf("restored point %s to %s: %llu entries, %s written in %.1fs%s\n", ShortId(point->id).c_str(),
                    s.to.c_str(), (unsigned long long)rep->files, FormatSize(rep->bytes_written).c_str(), secs,
                    extra.c_str());
      }
      return 0;
    };
  });
}

}  // namespace continuum::cli
