#include "cli/backup_volume_command.h"

#include <cctype>
#include <cstdlib>
#include <iostream>

#include "cli/output.h"
#include "continuum/api/control_client.h"
#include "continuum/backup/volume_backup.h"

namespace continuum::cli {
namespace {

constexpr const char* kDefaultControl = "/run/continuum/agent.sock";

// VolumeControl over the agent's control API (docs/api.md).
class AgentVolumeControl : public backup::VolumeControl {
 public:
  explicit AgentVolumeControl(std::string socket) : client_(api::ControlClient::ForSocket(std::move(socket))) {}

  Result<uint64_t> CreateBitmap(const std::string& volume, const std::string& base) override {
    nlohmann::json body{{"base", base}};
    CONTINUUM_ASSIGN_OR_RETURN(nlohmann::json j, client_.Call("POST", VolumePath(volume) + "/bitmaps", &body));
    return Get<uint64_t>(j, "base_seq");
  }

  Result<std::optional<Bitmap>> GetBitmap(const std::string& volume, const std::string& base) override {
    auto j = client_.Call("GET", VolumePath(volume) + "/bitmaps/" + Esc(base));
    // The volume was found by the calls before: kNotFound means the bitmap.
    if (!j.ok() && j.status().code() == StatusCode::kNotFound) return std::optional<Bitmap>();
    if (!j.ok()) return j.status();
    Bitmap b;
    CONTINUUM_ASSIGN_OR_RETURN(b.base_seq, Get<uint64_t>(*j, "base_seq"));
    try {
      for (const auto& e : j->at("extents")) {
        b.changed.push_back({e.at("offset").get<uint64_t>(), e.at("length").get<uint64_t>()});
      }
    } catch (const nlohmann::json::exception& e) {
      return Internal("bad bitmap reply from " + client_.socket_path() + ": " + e.what());
    }
    return std::optional<Bitmap>(std::move(b));
  }

  Status DeleteBitmap(const std::string& volume, const std::string& base) override {
    return client_.Call("DELETE", VolumePath(volume) + "/bitmaps/" + Esc(base)).status();
  }

  Result<uint64_t> AddBookmark(const std::string& volume, const std::string& label) override {
    nlohmann::json body{{"label", label}};
    CONTINUUM_ASSIGN_OR_RETURN(nlohmann::json j, client_.Call("POST", VolumePath(volume) + "/bookmarks", &body));
    if (!j.contains("point") || !j["point"].is_object()) return Internal("bad bookmark reply from agent");
    return Get<uint64_t>(j["point"], "seq");
  }

  Result<View> OpenView(const std::string& volume, const std::string& at) override {
    // Closed by the agent if this process dies before it closes the view.
    nlohmann::json body{{"at", at}, {"writable", false}, {"close_with_client", true}};
    CONTINUUM_ASSIGN_OR_RETURN(nlohmann::json j, client_.Call("POST", VolumePath(volume) + "/views", &body));
    View v;
    CONTINUUM_ASSIGN_OR_RETURN(v.id, Get<std::string>(j, "id"));
    CONTINUUM_ASSIGN_OR_RETURN(v.device, Get<std::string>(j, "device"));
    if (!j.contains("point") || !j["point"].is_object()) return Internal("bad view reply from agent");
    CONTINUUM_ASSIGN_OR_RETURN(v.seq, Get<uint64_t>(j["point"], "seq"));
    return v;
  }

  Status CloseView(const std::string& id) override {
    nlohmann::json body{{"device", id}};
    return client_.Call("POST", "/v1/views/close", &body).status();
  }

 private:
  static std::string VolumePath(const std::string& volume) { return "/v1/volumes/" + Esc(volume); }

  template <typename T>
  Result<T> Get(const nlohmann::json& j, const char* key) const {
    try {
      return j.at(key).get<T>();
    } catch (const nlohmann::json::exception&) {
      return Internal(std::string("agent at ") + client_.socket_path() + " sent no valid '" + key + "'");
    }
  }

  api::ControlClient client_;
};

std::string ResolveControl(CLI::App* root) {
  if (auto* o = root->get_option_no_throw("--control"); o && o->count() > 0) return o->as<std::string>();
  if (const char* env = std::getenv("CONTINUUM_CONTROL"); env && *env) return env;
  return kDefaultControl;
}

}  // namespace

void RegisterBackupVolumeCommand(CLI::App* backup_cmd, std::function<int()>* action, const bool* json,
                                 BackupCommandHooks hooks) {
  struct State {
    std::string volume, kind = "incremental", bookmark;
    std::vector<std::string> tags;
  };
  static State s;
  static BackupCommandHooks h;
  h = std::move(hooks);
  auto* cmd = backup_cmd->add_subcommand("volume", "back up a protected volume through the running agent");
  cmd->add_option("NAME", s.volume, "volume name")->required();
  h.add_repo_options(cmd);
  cmd->add_option("--kind", s.kind,
                  "incremental (default: changes since the previous point; the first point is full), "
                  "differential (changes since the last full) or full");
  cmd->add_option("--tag", s.tags, "tag the point (repeatable)")->allow_extra_args(false);
  cmd->add_option("--bookmark", s.bookmark,
                  "back up at this existing bookmark (e.g. made with 'bookmark add --consistent')");
  CLI::App* root = backup_cmd;
  while (root->get_parent()) root = root->get_parent();
  cmd->callback([action, json, root] {
    *action = [json, root] {
      auto kind = backup::ParseBackupKind(s.kind);
      if (!kind.ok()) return h.fail(kind.status(), *json, true);
      bool usage = false;
      auto r = h.open_repo(&usage);
      if (!r.ok()) return h.fail(r.status(), *json, usage);
      const std::string control = ResolveControl(root);
      AgentVolumeControl agent(control);
      auto p = h.with_progress(*json, [&](const backup::ProgressFn& progress) {
        return backup::BackupVolume(**r, agent,
                                    {.volume = s.volume, .tags = s.tags, .kind = *kind, .bookmark = s.bookmark},
                                    progress, [](const std::string& text) { std::cerr << "note: " << text << std::endl; });
      });
      if (!p.ok()) {
        if (p.status().code() == StatusCode::kUnavailable && p.status().message().find(control) != std::string::npos) {
          return PrintError(p.status(), *json, control);
        }
        return h.fail(p.status(), *json, false);
      }
      h.print_summary(*p, *json);
      return 0;
    };
  });
}

}  // namespace continuum::cli
