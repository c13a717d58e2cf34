#include "cli/cli_main.h"

#include <CLI/CLI.hpp>

#include <cstdlib>
#include <functional>
#include <iostream>

#include "cli/backup_commands.h"
#include "cli/mount_commands.h"
#include "cli/output.h"
#include "continuum/agent/agent.h"
#include "continuum/api/control_client.h"
#include "continuum/common/units.h"
#include "continuum/net/pki.h"

namespace continuum::cli {
namespace {

constexpr const char* kDefaultControl = "/run/continuum/agent.sock";

struct Globals {
  std::string control;
  bool json = false;
};

std::string ResolveControl(const Globals& g) {
  if (!g.control.empty()) return g.control;
  if (const char* env = std::getenv("CONTINUUM_CONTROL"); env && *env) return env;
  return kDefaultControl;
}

// Runs one API call and prints the result: `human` for people, JSON with --json.
int Call(const Globals& g, const std::string& method, const std::string& path, const nlohmann::json* body,
         const std::function<void(const nlohmann::json&)>& human) {
  std::string control = ResolveControl(g);
  auto client = api::ControlClient::ForSocket(control);
  auto r = client.Call(method, path, body);
  if (!r.ok()) return PrintError(r.status(), g.json, control);
  if (g.json) {
    PrintJson(*r);
  } else {
    human(*r);
  }
  return 0;
}

}  // namespace

int CliMain(int argc, char** argv) {
  CLI::App app{"Continuum: continuous data protection, replication and backup for Linux servers"};
  app.set_version_flag("--version", "continuum 0.1.0");
  app.require_subcommand(1);
  // Global options (--control, --json) are accepted after any subcommand too.
  app.fallthrough();
  Globals g;
  app.add_option("--control", g.control,
                 "daemon control socket (default: $CONTINUUM_CONTROL, then /run/continuum/agent.sock)");
  app.add_flag("--json", g.json, "machine-readable JSON output");
  std::function<int()> action;
  int parse_error_code = 0;

  // --- agent ---
  agent::AgentOptions aopts;
  auto* agent_cmd = app.add_subcommand("agent", "run the agent daemon in the foreground");
  auto* sd = agent_cmd->add_option("--state-dir", aopts.state_dir, "state directory (volumes, journals)")
                 ->capture_default_str();
  auto* ctl = agent_cmd->add_option("--control", aopts.control, "control socket path")->capture_default_str();
  agent_cmd->add_option("--config", aopts.config_path, "TOML configuration file");
  agent_cmd->add_option("--control-group", aopts.control_group, "group allowed to use the control socket");
  agent_cmd->add_option("--log-level", aopts.log_level, "debug, info, warn or error")->capture_default_str();
  agent_cmd->add_option("--pki", aopts.pki_dir, "PKI directory with ca.crt and NAME.crt/.key (for replication)");
  agent_cmd->add_option("--name", aopts.name, "this host's name (its certificate's name)");
  agent_cmd->add_flag("--insecure", aopts.insecure, "replicate in plaintext without certificates");
  agent_cmd->add_option("--listen", aopts.listen,
                        "HOST:PORT to accept replication streams: a standby agent that keeps replicas");
  agent_cmd->callback([&] {
    action = [&, sd, ctl] { return agent::RunAgent(aopts, sd->count() > 0, ctl->count() > 0); };
  });

  // --- server ---
  agent::AgentOptions sopts;
  sopts.state_dir = "/var/lib/continuum-server";
  sopts.control = "/run/continuum/server.sock";
  sopts.server = true;
  auto* server_cmd = app.add_subcommand("server", "run the DR-site server (replication receiver) in the foreground");
  auto* ssd = server_cmd->add_option("--state-dir", sopts.state_dir, "state directory (replicas, journals)")
                  ->capture_default_str();
  auto* sctl = server_cmd->add_option("--control", sopts.control, "control socket path")->capture_default_str();
  server_cmd->add_option("--listen", sopts.listen, "HOST:PORT for replication streams")->required();
  server_cmd->add_option("--pki", sopts.pki_dir, "PKI directory with ca.crt and NAME.crt/.key");
  server_cmd->add_option("--name", sopts.name, "this server's name (its certificate's name)");
  server_cmd->add_flag("--insecure", sopts.insecure, "accept plaintext replication without certificates");
  server_cmd->add_option("--config", sopts.config_path, "TOML configuration file");
  server_cmd->add_option("--log-level", sopts.log_level, "debug, info, warn or error")->capture_default_str();
  server_cmd->callback([&] {
    action = [&, ssd, sctl] { return agent::RunAgent(sopts, ssd->count() > 0, sctl->count() > 0); };
  });

  // --- pki ---
  auto* pki = app.add_subcommand("pki", "site certificate authority for replication TLS")->require_subcommand(1);
  std::string pki_dir, pki_name;
  auto* pinit = pki->add_subcommand("init", "create the site CA in DIR");
  pinit->add_option("--dir", pki_dir, "PKI directory")->required();
  pinit->callback([&] {
    action = [&] {
      Status st = net::PkiInit(pki_dir);
      if (!st.ok()) return PrintError(st, g.json, "");
      std::cout << "created CA " << pki_dir << "/ca.crt\n";
      return 0;
    };
  });
  auto* pissue = pki->add_subcommand("issue", "issue a certificate and key for NAME, signed by the CA in DIR");
  pissue->add_option("NAME", pki_name, "host name (agent or server --name)")->required();
  pissue->add_option("--dir", pki_dir, "PKI directory")->required();
  int pki_days = 825;
  pissue->add_option("--days", pki_days, "validity in days")->capture_default_str();
  pissue->callback([&] {
    action = [&] {
      Status st = net::PkiIssue(pki_dir, pki_name, pki_days);
      if (!st.ok()) return PrintError(st, g.json, "");
      std::cout << "issued " << pki_dir << "/" << pki_name << ".crt and " << pki_name << ".key\n";
      return 0;
    };
  });

  // --- replica ---
  auto* replica = app.add_subcommand("replica", "replicas kept on this server")->require_subcommand(1);
  auto* rlist = replica->add_subcommand("list", "list replicas");
  rlist->callback([&] {
    action = [&] {
      return Call(g, "GET", "/v1/replicas", nullptr, [](const nlohmann::json& j) {
        if (j.empty()) {
          std::cout << "no replicas\n";
          return;
        }
        std::printf("%-28s %-16s %-16s %-12s %-10s %s\n", "REPLICA", "SOURCE", "VOLUME", "STATE", "SEQ", "LATEST POINT");
        for (const auto& r : j) {
          std::printf("%-28s %-16s %-16s %-12s %-10s %s\n", r["name"].get<std::string>().c_str(),
                      r["replica"]["source"].get<std::string>().c_str(), r["replica"]["volume"].get<std::string>().c_str(),
                      r["state"].get<std::string>().c_str(), r["last_seq"].dump().c_str(),
                      r.contains("latest_point") ? r["latest_point"]["time"].get<std::string>().c_str() : "-");
        }
      });
    };
  });

  // --- volume ---
  auto* vol = app.add_subcommand("volume", "protected volumes")->require_subcommand(1);
  struct {
    std::string name, backing, size, journal, retention, on_full, cache, file_cache, nbd, to, at;
    bool no_cdp = false, force = false;
  } v;
  auto* create = vol->add_subcommand("create", "create a protected volume on a block device or file");
  create->add_option("NAME", v.name, "volume name")->required();
  create->add_option("--backing", v.backing, "block device or file (a file is created sparse with --size)")->required();
  create->add_option("--size", v.size, "volume size (K/M/G/T); default: size of the backing");
  create->add_option("--journal-size", v.journal, "CDP journal size limit (default 1G)");
  create->add_option("--retention", v.retention, "how long points are kept (s/m/h/d, default 7d)");
  create->add_option("--on-full", v.on_full, "when the journal is full inside retention: trim (default) or block");
  create->add_option("--cache-size", v.cache,
                     "replication write cache in memory: writes not yet acknowledged by every target (default 128M)");
  create->add_option("--file-cache-size", v.file_cache,
                     "replication write cache on disk, used when the memory one is full (default 4G)");
  create->add_flag("--no-cdp", v.no_cdp, "capture only: no undo journal (no rollback or views)");
  create->callback([&] {
    action = [&] {
      nlohmann::json body{{"name", v.name}, {"backing", v.backing}, {"cdp", !v.no_cdp}};
      for (auto [text, key] : {std::pair{&v.size, "size"}, {&v.journal, "journal_size"}, {&v.cache, "cache_size"},
                                {&v.file_cache, "file_cache_size"}}) {
        if (text->empty()) continue;
        auto n = ParseSize(*text);
        if (!n.ok()) return PrintError(n.status(), g.json, "");
        body[key] = *n;
      }
      if (!v.retention.empty()) {
        auto d = ParseDuration(v.retention);
        if (!d.ok()) return PrintError(d.status(), g.json, "");
        body["retention_ns"] = *d;
      }
      if (!v.on_full.empty()) body["on_full"] = v.on_full;
      return Call(g, "POST", "/v1/volumes", &body, [](const nlohmann::json& j) {
        std::cout << "created volume " << j["name"].get<std::string>() << " ("
                  << FormatSize(j["size"].get<uint64_t>()) << " on " << j["backing"].get<std::string>() << ")\n";
      });
    };
  });
  auto* up = vol->add_subcommand("up", "expose the volume as a block device and print its path");
  up->add_option("NAME", v.name)->required();
  up->callback([&] {
    action = [&] {
      return Call(g, "POST", "/v1/volumes/" + Esc(v.name) + "/up", nullptr,
                  [](const nlohmann::json& j) { std::cout << j["device"].get<std::string>() << "\n"; });
    };
  });
  auto* down = vol->add_subcommand("down", "flush and detach the volume's block device");
  down->add_option("NAME", v.name)->required();
  down->callback([&] {
    action = [&] {
      return Call(g, "POST", "/v1/volumes/" + Esc(v.name) + "/down", nullptr,
                  [&](const nlohmann::json&) { std::cout << "volume " << v.name << " is down\n"; });
    };
  });
  auto* status = vol->add_subcommand("status", "show volumes (all, or one in detail)");
  status->add_option("NAME", v.name);
  status->callback([&] {
    action = [&] {
      if (v.name.empty()) return Call(g, "GET", "/v1/volumes", nullptr, PrintVolumeStatus);
      return Call(g, "GET", "/v1/volumes/" + Esc(v.name), nullptr, PrintVolumeDetail);
    };
  });
  auto* del = vol->add_subcommand("delete", "forget a volume and its journal (the backing is kept)");
  del->add_option("NAME", v.name)->required();
  del->callback([&] {
    action = [&] {
      return Call(g, "DELETE", "/v1/volumes/" + Esc(v.name), nullptr,
                  [&](const nlohmann::json&) { std::cout << "deleted volume " << v.name << "\n"; });
    };
  });
  auto* exp = vol->add_subcommand("export", "export the live volume over NBD");
  exp->add_option("NAME", v.name)->required();
  exp->add_option("--nbd", v.nbd, "unix:PATH or HOST:PORT")->required();
  exp->callback([&] {
    action = [&] {
      nlohmann::json body{{"nbd", v.nbd}};
      return Call(g, "POST", "/v1/volumes/" + Esc(v.name) + "/export", &body, [](const nlohmann::json& j) {
        std::cout << "exporting '" << j["export"].get<std::string>() << "' at " << j["address"].get<std::string>() << "\n";
      });
    };
  });
  std::string mode = "async";
  auto* repl = vol->add_subcommand("replicate", "replicate the volume to a DR server (or standby agent)");
  repl->add_option("NAME", v.name)->required();
  repl->add_option("--to", v.to, "target HOST:PORT (required unless only --quorum is given)");
  repl->add_option("--mode", mode, "sync, async or adaptive")->capture_default_str();
  std::string quorum;
  repl->add_option("--quorum", quorum,
                   "sync targets that must have each write durable before it returns: N or 'all' (the default); "
                   "a setting of the volume, for all its sync targets");
  std::string compress = "none", bandwidth;
  repl->add_option("--compress", compress, "zstd, lz4 or none")->capture_default_str();
  repl->add_option("--bandwidth", bandwidth, "limit in bytes/s, e.g. 20M (K, M, G suffixes); default unlimited");
  std::string peer_timeout;
  repl->add_option("--peer-timeout", peer_timeout, "seconds without a frame from the target before it counts as gone (default 5)");
  repl->callback([&] {
    action = [&] {
      nlohmann::json body{{"to", v.to}, {"mode", mode}, {"compress", compress}, {"bandwidth", bandwidth},
                          {"peer_timeout", peer_timeout}, {"quorum", quorum}};
      return Call(g, "POST", "/v1/volumes/" + Esc(v.name) + "/targets", &body, [&](const nlohmann::json& j) {
        if (j.contains("to")) {
          std::cout << "volume " << v.name << " replicates to " << v.to << " (" << j["mode"].get<std::string>()
                    << ", compress " << j["compress"].get<std::string>();
          if (j["bandwidth"].get<uint64_t>() > 0) std::cout << ", limit " << FormatSize(j["bandwidth"].get<uint64_t>()) << "/s";
          std::cout << ")\n";
        }
        if (j.contains("quorum")) {
          int q = j["quorum"].get<int>();
          std::cout << "volume " << v.name << ": each write waits for "
                    << (q == 0 ? std::string("every connected sync target") : std::to_string(q) + " sync target(s)") << "\n";
        }
      });
    };
  });
  auto* unrepl = vol->add_subcommand("unreplicate", "stop replicating to a target");
  unrepl->add_option("NAME", v.name)->required();
  unrepl->add_option("--to", v.to, "target HOST:PORT")->required();
  unrepl->callback([&] {
    action = [&] {
      nlohmann::json body{{"to", v.to}};
      return Call(g, "POST", "/v1/volumes/" + Esc(v.name) + "/targets/remove", &body,
                  [&](const nlohmann::json&) { std::cout << "stopped replicating " << v.name << " to " << v.to << "\n"; });
    };
  });
  auto* targets = vol->add_subcommand("targets", "replication targets: state, mode, acked seq, lag");
  targets->add_option("NAME", v.name)->required();
  targets->callback([&] {
    action = [&] {
      return Call(g, "GET", "/v1/volumes/" + Esc(v.name) + "/targets", nullptr, [](const nlohmann::json& j) {
        if (j.empty()) {
          std::cout << "no replication targets\n";
          return;
        }
        std::printf("%-22s %-13s %-9s %-10s %-10s %12s %10s %-5s %-10s %s\n", "TARGET", "STATE", "MODE", "ACKED", "LAST",
                    "LAG BYTES", "LAG S", "COMP", "LIMIT", "ERROR");
        for (const auto& t : j) {
          std::string mode = t["mode"].get<std::string>();
          if (mode == "adaptive") mode += "/" + t["effective_mode"].get<std::string>();
          uint64_t limit = t.value("bandwidth", 0ull);
          std::string limit_text = limit ? FormatSize(limit) + "/s" : "-";
          std::printf("%-22s %-13s %-9s %-10s %-10s %12s %10.3f %-5s %-10s %s\n", t["address"].get<std::string>().c_str(),
                      (t["state"].get<std::string>() + (t["resyncing"].get<bool>() ? "+sync" : "")).c_str(), mode.c_str(),
                      t["acked_seq"].dump().c_str(), t["last_seq"].dump().c_str(), t["lag_bytes"].dump().c_str(),
                      t["lag_seconds"].get<double>(), t.value("compress", "none").c_str(), limit_text.c_str(),
                      t["last_error"].get<std::string>().c_str());
        }
        if (const auto q = j[0].value("quorum", nlohmann::json()); q.is_object() && q.value("sync_targets", 0) > 0) {
          std::cout << "sync quorum: " << (q["all"].get<bool>() ? std::string("all") : q["required"].dump())
                    << " (sync targets " << q["sync_targets"] << ", available " << q["available"] << ")"
                    << (q["degraded"].get<bool>() ? " (degraded: writes wait only for the available ones)" : "") << "\n";
        }
      });
    };
  });
  bool verify_repair = false;
  auto* verify = vol->add_subcommand("verify", "compare the volume with its replica at a target, online");
  verify->add_option("NAME", v.name)->required();
  verify->add_option("--to", v.to, "target HOST:PORT")->required();
  verify->add_flag("--repair", verify_repair, "resend the differing ranges through the replication stream");
  verify->callback([&] {
    action = [&] {
      nlohmann::json body{{"to", v.to}, {"repair", verify_repair}};
      return Call(g, "POST", "/v1/volumes/" + Esc(v.name) + "/verify", &body, [&](const nlohmann::json& j) {
        const auto& diff = j["differing"];
        std::cout << "verified " << v.name << " against " << j["replica"].get<std::string>() << " at " << v.to
                  << " as of seq:" << j["seq"] << ": " << j["ranges_checked"] << " ranges of "
                  << FormatSize(j["range_bytes"].get<uint64_t>()) << ", ";
        if (diff.empty()) {
          std::cout << "all equal\n";
          return;
        }
        std::cout << diff.size() << " differing (" << FormatSize(j["differing_bytes"].get<uint64_t>()) << ")\n";
        for (const auto& d : diff) {
          std::cout << "  offset " << d["offset"] << " length " << d["length"] << "\n";
        }
        if (j["repaired"].get<bool>()) {
          std::cout << "repair queued: resent through seq:" << j["repair_last_seq"] << "\n";
        } else {
          std::cout << "run again with --repair to resend them\n";
        }
      });
    };
  });
  auto* rb = vol->add_subcommand("rollback", "rewind the volume in place to a point (volume must be down)");
  rb->add_option("NAME", v.name)->required();
  rb->add_option("--to", v.to, "POINT: RFC 3339 time, bookmark label or seq:N")->required();
  rb->callback([&] {
    action = [&] {
      nlohmann::json body{{"to", v.to}};
      return Call(g, "POST", "/v1/volumes/" + Esc(v.name) + "/rollback", &body, [&](const nlohmann::json& j) {
        std::cout << "volume " << v.name << " rolled back to " << j["point"]["time"].get<std::string>()
                  << " (seq:" << j["point"]["seq"] << ")\nto undo: continuum volume rollback " << v.name
                  << " --to " << j["undo_bookmark"].get<std::string>() << "\n";
      });
    };
  });
  auto* rs = vol->add_subcommand("restore", "write the image as of a point to a file or device");
  rs->add_option("NAME", v.name)->required();
  rs->add_option("--at", v.at, "POINT: RFC 3339 time, bookmark label or seq:N")->required();
  rs->add_option("--to", v.to, "destination file or block device")->required();
  rs->add_flag("--force", v.force, "overwrite an existing non-empty file");
  rs->callback([&] {
    action = [&] {
      nlohmann::json body{{"at", v.at}, {"to", v.to}, {"force", v.force}};
      return Call(g, "POST", "/v1/volumes/" + Esc(v.name) + "/restore", &body, [](const nlohmann::json& j) {
        std::cout << "restored " << FormatSize(j["bytes"].get<uint64_t>()) << " as of "
                  << j["point"]["time"].get<std::string>() << " (seq:" << j["point"]["seq"] << ") to "
                  << j["to"].get<std::string>() << " in " << j["seconds"].get<double>() << " s\n";
      });
    };
  });

  // --- bookmark ---
  auto* bm = app.add_subcommand("bookmark", "bookmarks: named exact points in a volume's timeline")->require_subcommand(1);
  struct {
    std::string name, label, every, daily;
    bool consistent = false;
    uint64_t id = 0;
  } b;
  auto* badd = bm->add_subcommand("add", "mark the current point");
  badd->add_option("NAME", b.name)->required();
  badd->add_option("LABEL", b.label)->required();
  badd->add_flag("--consistent", b.consistent, "freeze the mounted filesystem (or run hooks) for the marker");
  badd->callback([&] {
    action = [&] {
      nlohmann::json body{{"label", b.label}, {"consistent", b.consistent}};
      return Call(g, "POST", "/v1/volumes/" + Esc(b.name) + "/bookmarks", &body, [](const nlohmann::json& j) {
        std::cout << "bookmark " << j["label"].get<std::string>() << " at " << j["point"]["time"].get<std::string>()
                  << " (seq:" << j["point"]["seq"] << ")" << (j["consistent"].get<bool>() ? " consistent" : "") << "\n";
      });
    };
  });
  auto* blist = bm->add_subcommand("list", "list bookmarks");
  blist->add_option("NAME", b.name)->required();
  blist->callback([&] {
    action = [&] { return Call(g, "GET", "/v1/volumes/" + Esc(b.name) + "/bookmarks", nullptr, PrintBookmarks); };
  });
  auto* bsched = bm->add_subcommand("schedule", "add bookmarks automatically");
  bsched->add_option("NAME", b.name)->required();
  auto* every = bsched->add_option("--every", b.every, "interval (s/m/h/d)");
  auto* daily = bsched->add_option("--daily", b.daily, "time of day HH:MM (local time)");
  every->excludes(daily);
  bsched->add_flag("--consistent", b.consistent, "application-consistent bookmarks");
  bsched->callback([&] {
    action = [&] {
      nlohmann::json body{{"consistent", b.consistent}};
      if (!b.every.empty()) {
        auto d = ParseDuration(b.every);
        if (!d.ok()) return PrintError(d.status(), g.json, "");
        body["every_ns"] = *d;
      }
      if (!b.daily.empty()) body["daily"] = b.daily;
      if (b.every.empty() && b.daily.empty()) {
        return PrintError(InvalidArgument("give --every DURATION or --daily HH:MM"), g.json, "");
      }
      return Call(g, "POST", "/v1/volumes/" + Esc(b.name) + "/schedules", &body, [&](const nlohmann::json& j) {
        std::cout << "schedule " << j["id"] << " added for volume " << b.name << "\n";
      });
    };
  });
  auto* bscheds = bm->add_subcommand("schedules", "list bookmark schedules");
  bscheds->add_option("NAME", b.name)->required();
  bscheds->callback([&] {
    action = [&] {
      return Call(g, "GET", "/v1/volumes/" + Esc(b.name) + "/schedules", nullptr,
                  [](const nlohmann::json& j) { std::cout << j.dump(2) << "\n"; });
    };
  });
  auto* bunsched = bm->add_subcommand("unschedule", "remove a bookmark schedule");
  bunsched->add_option("NAME", b.name)->required();
  bunsched->add_option("ID", b.id)->required();
  bunsched->callback([&] {
    action = [&] {
      return Call(g, "DELETE", "/v1/volumes/" + Esc(b.name) + "/schedules/" + std::to_string(b.id), nullptr,
                  [&](const nlohmann::json&) { std::cout << "schedule " << b.id << " removed\n"; });
    };
  });

  // --- view ---
  auto* view = app.add_subcommand("view", "point-in-time views as block devices")->require_subcommand(1);
  struct {
    std::string name, at, device;
    bool writable = false;
  } w;
  auto* vopen = view->add_subcommand("open", "open a view of a volume at a point; prints its device");
  vopen->add_option("NAME", w.name)->required();
  vopen->add_option("--at", w.at, "POINT: RFC 3339 time, bookmark label or seq:N")->required();
  vopen->add_flag("--writable", w.writable, "writes go to a scratch overlay, never to the volume");
  vopen->callback([&] {
    action = [&] {
      nlohmann::json body{{"at", w.at}, {"writable", w.writable}};
      return Call(g, "POST", "/v1/volumes/" + Esc(w.name) + "/views", &body,
                  [](const nlohmann::json& j) { std::cout << j["device"].get<std::string>() << "\n"; });
    };
  });
  auto* vclose = view->add_subcommand("close", "close a view");
  vclose->add_option("DEVICE", w.device, "the view's device (or id)")->required();
  vclose->callback([&] {
    action = [&] {
      // A repository mount (continuum mount) is ended here, without the agent.
      if (int rc = 0; CloseRepoMount(w.device, g.json, &rc)) return rc;
      nlohmann::json body{{"device", w.device}};
      return Call(g, "POST", "/v1/views/close", &body,
                  [&](const nlohmann::json&) { std::cout << "closed " << w.device << "\n"; });
    };
  });
  auto* vlist = view->add_subcommand("list", "list open views");
  vlist->callback([&] { action = [&] { return Call(g, "GET", "/v1/views", nullptr, PrintViews); }; });

  // --- bitmap ---
  auto* bmp = app.add_subcommand("bitmap", "changed-block bitmaps (what changed since a base)")->require_subcommand(1);
  struct {
    std::string name, base;
  } c;
  auto* bcreate = bmp->add_subcommand("create", "start tracking changes from now");
  bcreate->add_option("NAME", c.name)->required();
  bcreate->add_option("BASE", c.base)->required();
  bcreate->callback([&] {
    action = [&] {
      nlohmann::json body{{"base", c.base}};
      return Call(g, "POST", "/v1/volumes/" + Esc(c.name) + "/bitmaps", &body, [](const nlohmann::json& j) {
        std::cout << "bitmap " << j["base"].get<std::string>() << " starts at seq:" << j["base_seq"] << "\n";
      });
    };
  });
  auto* bshow = bmp->add_subcommand("show", "list regions changed since the base");
  bshow->add_option("NAME", c.name)->required();
  bshow->add_option("BASE", c.base)->required();
  bshow->callback([&] {
    action = [&] {
      return Call(g, "GET", "/v1/volumes/" + Esc(c.name) + "/bitmaps/" + Esc(c.base), nullptr,
                  [](const nlohmann::json& j) {
                    std::cout << FormatSize(j["changed_bytes"].get<uint64_t>()) << " changed in "
                              << j["extents"].size() << " extents since seq:" << j["base_seq"] << "\n";
                    for (const auto& e : j["extents"]) std::cout << "  " << e["offset"] << " +" << e["length"] << "\n";
                  });
    };
  });
  auto* bdel = bmp->add_subcommand("delete", "stop tracking and remove the bitmap");
  bdel->add_option("NAME", c.name)->required();
  bdel->add_option("BASE", c.base)->required();
  bdel->callback([&] {
    action = [&] {
      return Call(g, "DELETE", "/v1/volumes/" + Esc(c.name) + "/bitmaps/" + Esc(c.base), nullptr,
                  [&](const nlohmann::json&) { std::cout << "deleted bitmap " << c.base << "\n"; });
    };
  });

  RegisterBackupCommands(app, &action, &g.json);
  RegisterMountCommands(app, &action, &g.json);

  // --- events ---
  std::string ev_volume;
  auto* ev = app.add_subcommand("events", "recent events (state changes, trims, failures)");
  ev->add_option("--volume", ev_volume, "only this volume");
  ev->callback([&] {
    action = [&] {
      std::string path = "/v1/events";
      if (!ev_volume.empty()) path += "?volume=" + Esc(ev_volume);
      return Call(g, "GET", path, nullptr, PrintEvents);
    };
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    parse_error_code = app.exit(e);
    return parse_error_code == 0 ? 0 : kExitUsage;
  }
  if (!action) return kExitUsage;
  return action();
}

}  // namespace continuum::cli
