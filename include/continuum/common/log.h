#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace continuum {

// A named logger per component ("volume", "fuse", "nbd", "api" ...), all
// writing to stderr with one format. Thread-safe.
std::shared_ptr<spdlog::logger> Logger(const std::string& component);
// Sets the level of every logger ("debug", "info", "warn", "error").
void SetLogLevel(const std::string& level);

}  // namespace continuum
