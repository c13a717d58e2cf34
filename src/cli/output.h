#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "continuum/common/status.h"

namespace continuum::cli {

// Exit codes: 0 ok, 1 the operation failed, 2 usage error, 3 no daemon.
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnavailable = 3;

// Prints "error: <message>" (or {"error": ...} with --json) and returns the exit code.
int PrintError(const Status& st, bool json, const std::string& control_path);
void PrintJson(const nlohmann::json& j);
// Percent-encodes `s` for a URL path segment (RFC 3986 unreserved characters kept).
std::string Esc(const std::string& s);
// Human tables.
void PrintVolumeStatus(const nlohmann::json& volumes);
void PrintVolumeDetail(const nlohmann::json& v);
void PrintBookmarks(const nlohmann::json& bookmarks);
void PrintViews(const nlohmann::json& views);
void PrintEvents(const nlohmann::json& events);

}  // namespace continuum::cli
