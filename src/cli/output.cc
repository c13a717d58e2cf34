#include "cli/output.h"

#include <cctype>
#include <cstdio>
#include <iostream>

#include "continuum/common/units.h"

namespace continuum::cli {

int PrintError(const Status& st, bool json, const std::string& control_path) {
  if (json) {
    nlohmann::json j{{"error", {{"code", std::string(StatusCodeName(st.code()))}, {"message", st.message()}}}};
    std::cout << j.dump(2) << std::endl;
  } else {
    std::cerr << "error: " << st.message() << std::endl;
    if (st.code() == StatusCode::kUnavailable) {
      std::cerr << "hint: start the daemon with 'continuum agent --state-dir DIR --control " << control_path
                << "', or point the CLI at a running one with --control PATH or $CONTINUUM_CONTROL"
                << std::endl;
    }
  }
  if (st.code() == StatusCode::kUnavailable) return kExitUnavailable;
  if (st.code() == StatusCode::kInvalidArgument) return kExitUsage;
  return kExitFailed;
}

void PrintJson(const nlohmann::json& j) { std::cout << j.dump(2) << std::endl; }

static std::string Str(const nlohmann::json& j, const char* key, const char* fallback = "-") {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (j[key].is_string()) return j[key].get<std::string>();
  return j[key].dump();
}

void PrintVolumeStatus(const nlohmann::json& volumes) {
  if (volumes.empty()) {
    std::cout << "no volumes (create one with 'continuum volume create NAME --backing PATH --size SIZE')\n";
    return;
  }
  std::printf("%-16s %-7s %-12s %10s %12s %-25s %s\n", "NAME", "STATE", "DEVICE", "SIZE", "JOURNAL",
              "OLDEST POINT", "LAST SEQ");
  for (const auto& v : volumes) {
    std::string journal = v.contains("journal_bytes") ? FormatSize(v["journal_bytes"].get<uint64_t>()) : "off";
    std::string oldest = v.contains("oldest_point") ? v["oldest_point"]["time"].get<std::string>() : "-";
    std::printf("%-16s %-7s %-12s %10s %12s %-25s %s\n", Str(v, "name").c_str(), Str(v, "state").c_str(),
                Str(v, "device").c_str(), FormatSize(v["size"].get<uint64_t>()).c_str(), journal.c_str(),
                oldest.c_str(), Str(v, "last_seq").c_str());
    if (v.contains("error")) std::printf("  error: %s\n", v["error"].get<std::string>().c_str());
  }
}

void PrintVolumeDetail(const nlohmann::json& v) {
  std::printf("volume:        %s\n", Str(v, "name").c_str());
  std::printf("state:         %s\n", Str(v, "state").c_str());
  if (v.contains("error")) std::printf("error:         %s\n", Str(v, "error").c_str());
  std::printf("device:        %s\n", Str(v, "device").c_str());
  if (v.contains("capture_transport")) std::printf("capture:       %s\n", Str(v, "capture_transport").c_str());
  std::printf("backing:       %s\n", Str(v, "backing").c_str());
  std::printf("size:          %s\n", FormatSize(v["size"].get<uint64_t>()).c_str());
  if (v.value("cdp", true)) {
    if (v.contains("journal_bytes")) {
      std::printf("journal:       %s of %s (retention %s, when full: %s)\n",
                  FormatSize(v["journal_bytes"].get<uint64_t>()).c_str(),
                  FormatSize(v["journal_limit"].get<uint64_t>()).c_str(), Str(v, "retention").c_str(),
                  Str(v, "on_full").c_str());
      std::printf("oldest point:  %s (seq:%s)\n", Str(v["oldest_point"], "time").c_str(),
                  Str(v["oldest_point"], "seq").c_str());
      std::printf("latest point:  %s (seq:%s)\n", Str(v["latest_point"], "time").c_str(),
                  Str(v["latest_point"], "seq").c_str());
      std::printf("bookmarks:     %s\n", Str(v, "bookmarks").c_str());
    }
  } else {
    std::printf("journal:       off (capture only)\n");
  }
  if (v.contains("writes")) {
    std::printf("writes:        %s (%s), flushes %s, write cache %s\n", Str(v, "writes").c_str(),
                FormatSize(v["bytes_written"].get<uint64_t>()).c_str(), Str(v, "flushes").c_str(),
                FormatSize(v["pending_bytes"].get<uint64_t>()).c_str());
  }
  if (v.contains("exports") && !v["exports"].empty()) std::printf("nbd exports:   %s\n", v["exports"].dump().c_str());
}

void PrintBookmarks(const nlohmann::json& bookmarks) {
  if (bookmarks.empty()) {
    std::cout << "no bookmarks\n";
    return;
  }
  std::printf("%-40s %-26s %-10s %s\n", "LABEL", "TIME", "SEQ", "KIND");
  for (const auto& b : bookmarks) {
    std::string kind = b.value("consistent", false) ? "consistent" : (b.value("rollback", false) ? "rollback" : "crash-consistent");
    std::printf("%-40s %-26s %-10s %s\n", Str(b, "label").c_str(), Str(b, "time").c_str(), Str(b, "seq").c_str(),
                kind.c_str());
  }
}

void PrintViews(const nlohmann::json& views) {
  if (views.empty()) {
    std::cout << "no open views\n";
    return;
  }
  std::printf("%-4s %-16s %-12s %-26s %-10s %s\n", "ID", "VOLUME", "DEVICE", "POINT", "SEQ", "MODE");
  for (const auto& v : views) {
    std::printf("%-4s %-16s %-12s %-26s %-10s %s\n", Str(v, "id").c_str(), Str(v, "volume").c_str(),
                Str(v, "device").c_str(), Str(v["point"], "time").c_str(), Str(v["point"], "seq").c_str(),
                v.value("writable", false) ? "writable" : "read-only");
  }
}

void PrintEvents(const nlohmann::json& events) {
  for (const auto& e : events) {
    std::printf("%s %-12s %-20s %s\n", Str(e, "time").c_str(), Str(e, "volume", "").c_str(), Str(e, "kind").c_str(),
                Str(e, "message").c_str());
  }
}

std::string Esc(const std::string& s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace continuum::cli
