#include "agent/routes.h"

#include "agent/volume_manager_internal.h"

#include <unistd.h>

#include "continuum/common/json_field.h"
#include "continuum/common/time_util.h"

namespace continuum::agent {
namespace {

using api::ErrorResponse;
using api::JsonResponse;
using api::Request;
using api::Response;
using nlohmann::json;

Response Reply(const Result<json>& r, int ok_status = 200) {
  if (!r.ok()) return ErrorResponse(r.status());
  return JsonResponse(*r, ok_status);
}

Response Reply(const Status& s, json ok_body) {
  if (!s.ok()) return ErrorResponse(s);
  return JsonResponse(std::move(ok_body));
}

// Reads a JSON object body; an empty body is an empty object.
Result<json> Body(const Request& req) {
  if (req.body.empty()) return json::object();
  auto j = req.Json();
  if (!j.ok()) return j.status();
  if (!j->is_object()) return InvalidArgument("request body must be a JSON object");
  return j;
}

// A body field: JsonField (the wrong type, a negative size or a number out of
// range is a 400 naming the field).
template <typename T>
Result<T> Field(const json& j, const char* key, T fallback) {
  return JsonField<T>(j, key, std::move(fallback));
}

}  // namespace

void RegisterRoutes(api::Router* r, VolumeManager* m, EventLog* events, ReplicationManager* repl,
                    const std::string& role) {
  r->Get("/v1/health", [role](const Request&) {
    return JsonResponse({{"status", "ok"}, {"pid", ::getpid()}, {"version", "0.1.0"}, {"role", role}});
  });
  r->Get("/v1/replicas", [m](const Request&) { return JsonResponse(m->ListReplicas()); });
  r->Get("/v1/volumes/{name}/targets", [repl](const Request& req) {
    return Reply(repl->Targets(req.path_params.at("name")));
  });
  r->Post("/v1/volumes/{name}/targets", [repl](const Request& req) -> Response {
    auto b = Body(req);
    if (!b.ok()) return ErrorResponse(b.status());
    auto to = Field<std::string>(*b, "to", "");
    auto mode = Field<std::string>(*b, "mode", "async");
    auto compress = Field<std::string>(*b, "compress", "none");
    auto bandwidth = Field<std::string>(*b, "bandwidth", "");
    auto peer_timeout = Field<std::string>(*b, "peer_timeout", "");
    auto quorum = Field<std::string>(*b, "quorum", "");
    if (!to.ok()) return ErrorResponse(to.status());
    if (!quorum.ok()) return ErrorResponse(quorum.status());
    if (!mode.ok()) return ErrorResponse(mode.status());
    if (!compress.ok()) return ErrorResponse(compress.status());
    if (!bandwidth.ok()) return ErrorResponse(bandwidth.status());
    if (!peer_timeout.ok()) return ErrorResponse(peer_timeout.status());
    // An empty "to" with a quorum only changes the volume's sync quorum.
    return Reply(repl->Replicate(req.path_params.at("name"),
                                 {.to = *to, .mode = *mode, .compress = *compress, .bandwidth = *bandwidth,
                                  .peer_timeout = *peer_timeout, .quorum = *quorum}),
                 to->empty() ? 200 : 201);
  });
  r->Post("/v1/volumes/{name}/targets/remove", [repl](const Request& req) -> Response {
    auto b = Body(req);
    if (!b.ok()) return ErrorResponse(b.status());
    auto to = Field<std::string>(*b, "to", "");
    if (!to.ok()) return ErrorResponse(to.status());
    return Reply(repl->Unreplicate(req.path_params.at("name"), *to), json{{"removed", *to}});
  });
  r->Post("/v1/volumes/{name}/verify", [repl](const Request& req) -> Response {
    auto b = Body(req);
    if (!b.ok()) return ErrorResponse(b.status());
    auto to = Field<std::string>(*b, "to", "");
    auto repair = Field<bool>(*b, "repair", false);
    if (!to.ok()) return ErrorResponse(to.status());
    if (!repair.ok()) return ErrorResponse(repair.status());
    if (to->empty()) return ErrorResponse(InvalidArgument("--to HOST:PORT is required"));
    return Reply(repl->Verify(req.path_params.at("name"), *to, *repair));
  });
  r->Get("/v1/volumes", [m](const Request&) { return JsonResponse(m->DescribeAll()); });
  r->Post("/v1/volumes", [m](const Request& req) -> Response {
    auto b = Body(req);
    if (!b.ok()) return ErrorResponse(b.status());
    CreateVolumeRequest c;
    auto name = Field<std::string>(*b, "name", "");
    auto backing = Field<std::string>(*b, "backing", "");
    auto size = Field<uint64_t>(*b, "size", 0);
    auto journal = Field<uint64_t>(*b, "journal_size", 0);
    auto retention = Field<int64_t>(*b, "retention_ns", -1);
    auto policy = Field<std::string>(*b, "on_full", "");
    auto cdp = Field<bool>(*b, "cdp", true);
    auto cache = Field<uint64_t>(*b, "cache_size", 0);
    auto file_cache = Field<uint64_t>(*b, "file_cache_size", 0);
    for (const Status* s : {&name.status(), &backing.status(), &size.status(), &journal.status(),
                            &retention.status(), &policy.status(), &cdp.status(), &cache.status(),
                            &file_cache.status()}) {
      if (!s->ok()) return ErrorResponse(*s);
    }
    c.name = *name;
    c.backing = *backing;
    c.size = *size;
    c.journal_bytes = *journal;
    c.retention_ns = *retention;
    c.full_policy = *policy;
    c.cdp = *cdp;
    c.cache_bytes = *cache;
    c.spill_bytes = *file_cache;
    return Reply(m->Create(c), 201);
  });
  r->Get("/v1/volumes/{name}", [m](const Request& req) { return Reply(m->Describe(req.path_params.at("name"))); });
  r->Delete("/v1/volumes/{name}", [m](const Request& req) {
    return Reply(m->Delete(req.path_params.at("name")), json{{"deleted", req.path_params.at("name")}});
  });
  r->Post("/v1/volumes/{name}/up", [m](const Request& req) -> Response {
    auto dev = m->Up(req.path_params.at("name"));
    if (!dev.ok()) return ErrorResponse(dev.status());
    return JsonResponse({{"volume", req.path_params.at("name")}, {"device", *dev}});
  });
  r->Post("/v1/volumes/{name}/down", [m](const Request& req) {
    return Reply(m->Down(req.path_params.at("name")), json{{"volume", req.path_params.at("name")}, {"up", false}});
  });
  r->Post("/v1/volumes/{name}/export", [m](const Request& req) -> Response {
    auto b = Body(req);
    if (!b.ok()) return ErrorResponse(b.status());
    auto addr = Field<std::string>(*b, "nbd", "");
    if (!addr.ok()) return ErrorResponse(addr.status());
    if (addr->empty()) return ErrorResponse(InvalidArgument("--nbd unix:PATH or HOST:PORT is required"));
    auto a = m->Export(req.path_params.at("name"), *addr);
    if (!a.ok()) return ErrorResponse(a.status());
    return JsonResponse({{"volume", req.path_params.at("name")}, {"export", req.path_params.at("name")},
                         {"address", *a}});
  });
  r->Get("/v1/volumes/{name}/bookmarks", [m](const Request& req) {
    return Reply(m->ListBookmarks(req.path_params.at("name")));
  });
  r->Post("/v1/volumes/{name}/bookmarks", [m](const Request& req) -> Response {
    auto b = Body(req);
    if (!b.ok()) return ErrorResponse(b.status());
    auto label = Field<std::string>(*b, "label", "");
    auto consistent = Field<bool>(*b, "consistent", false);
    if (!label.ok()) return ErrorResponse(label.status());
    if (!consistent.ok()) return ErrorResponse(consistent.status());
    return Reply(m->AddBookmark(req.path_params.at("name"), *label, *consistent), 201);
  });
  r->Get("/v1/volumes/{name}/schedules", [m](const Request& req) {
    return Reply(m->ListSchedules(req.path_params.at("name")));
  });
  r->Post("/v1/volumes/{name}/schedules", [m](const Request& req) -> Response {
    auto b = Body(req);
    if (!b.ok()) return ErrorResponse(b.status());
    auto every = Field<int64_t>(*b, "every_ns", 0);
    auto daily = Field<std::string>(*b, "daily", "");
    auto consistent = Field<bool>(*b, "consistent", false);
    if (!every.ok()) return ErrorResponse(every.status());
    if (!daily.ok()) return ErrorResponse(daily.status());
    if (!consistent.ok()) return ErrorResponse(consistent.status());
    Schedule s;
    s.every_ns = *every;
    s.daily = *daily;
    s.consistent = *consistent;
    return Reply(m->AddSchedule(req.path_params.at("name"), s), 201);
  });
  r->Delete("/v1/volumes/{name}/schedules/{id}", [m](const Request& req) -> Response {
    uint64_t id = 0;
    try {
      id = std::stoull(req.path_params.at("id"));
    } catch (const std::exception&) {
      return ErrorResponse(InvalidArgument("schedule id must be a number"));
    }
    return Reply(m->RemoveSchedule(req.path_params.at("name"), id), json{{"removed", id}});
  });
  r->Post("/v1/volumes/{name}/views", [m](const Request& req) -> Response {
    auto b = Body(req);
    if (!b.ok()) return ErrorResponse(b.status());
    auto at = Field<std::string>(*b, "at", "");
    auto writable = Field<bool>(*b, "writable", false);
    // The client's own process (SO_PEERCRED, not a claim in the body) owns the view.
    auto with_client = Field<bool>(*b, "close_with_client", false);
    if (!at.ok()) return ErrorResponse(at.status());
    if (!writable.ok()) return ErrorResponse(writable.status());
    if (!with_client.ok()) return ErrorResponse(with_client.status());
    if (at->empty()) return ErrorResponse(InvalidArgument("--at POINT is required"));
    // A client whose pid this agent cannot see (another pid namespace) gets an
    // ordinary view: it must close it itself, as before.
    const pid_t owner = *with_client && req.peer.pid > 0 ? req.peer.pid : 0;
    return Reply(m->OpenView(req.path_params.at("name"), *at, *writable, owner), 201);
  });
  r->Get("/v1/views", [m](const Request&) { return JsonResponse(m->ListViews()); });
  r->Post("/v1/views/close", [m](const Request& req) -> Response {
    auto b = Body(req);
    if (!b.ok()) return ErrorResponse(b.status());
    auto dev = Field<std::string>(*b, "device", "");
    if (!dev.ok()) return ErrorResponse(dev.status());
    return Reply(m->CloseView(*dev), json{{"closed", *dev}});
  });
  r->Post("/v1/volumes/{name}/rollback", [m](const Request& req) -> Response {
    auto b = Body(req);
    if (!b.ok()) return ErrorResponse(b.status());
    auto to = Field<std::string>(*b, "to", "");
    if (!to.ok()) return ErrorResponse(to.status());
    if (to->empty()) return ErrorResponse(InvalidArgument("--to POINT is required"));
    return Reply(m->Rollback(req.path_params.at("name"), *to));
  });
  r->Post("/v1/volumes/{name}/restore", [m](const Request& req) -> Response {
    auto b = Body(req);
    if (!b.ok()) return ErrorResponse(b.status());
    auto at = Field<std::string>(*b, "at", "");
    auto to = Field<std::string>(*b, "to", "");
    auto force = Field<bool>(*b, "force", false);
    if (!at.ok()) return ErrorResponse(at.status());
    if (!to.ok()) return ErrorResponse(to.status());
    if (!force.ok()) return ErrorResponse(force.status());
    if (at->empty()) return ErrorResponse(InvalidArgument("--at POINT is required"));
    return Reply(m->Restore(req.path_params.at("name"), *at, *to, *force));
  });
  r->Post("/v1/volumes/{name}/bitmaps", [m](const Request& req) -> Response {
    auto b = Body(req);
    if (!b.ok()) return ErrorResponse(b.status());
    auto base = Field<std::string>(*b, "base", "");
    if (!base.ok()) return ErrorResponse(base.status());
    return Reply(m->CreateBitmap(req.path_params.at("name"), *base), 201);
  });
  r->Get("/v1/volumes/{name}/bitmaps/{base}", [m](const Request& req) {
    return Reply(m->BitmapChanges(req.path_params.at("name"), req.path_params.at("base")));
  });
  r->Delete("/v1/volumes/{name}/bitmaps/{base}", [m](const Request& req) {
    return Reply(m->DeleteBitmap(req.path_params.at("name"), req.path_params.at("base")),
                 json{{"deleted", req.path_params.at("base")}});
  });
  r->Get("/v1/events", [events](const Request& req) -> Response {
    uint64_t after = 0;
    if (auto it = req.query.find("after"); it != req.query.end()) {
      try {
        after = std::stoull(it->second);
      } catch (const std::exception&) {
        return ErrorResponse(InvalidArgument("after must be a number"));
      }
    }
    std::string volume;
    if (auto it = req.query.find("volume"); it != req.query.end()) volume = it->second;
    json out = json::array();
    for (const auto& e : events->Since(after, volume)) out.push_back(e.ToJson());
    return JsonResponse(out);
  });
}

}  // namespace continuum::agent
