#include "continuum/agent/event_log.h"

#include <cstdio>

#include "continuum/common/log.h"
#include "continuum/common/time_util.h"

namespace continuum::agent {

nlohmann::json Event::ToJson() const {
  return {{"id", id}, {"time", FormatRfc3339(ts_ns)}, {"volume", volume}, {"kind", kind},
          {"message", message}};
}

EventLog::EventLog(std::string path) : path_(std::move(path)) {}

void EventLog::Add(const std::string& volume, const std::string& kind, const std::string& message) {
  Event e;
  {
    std::lock_guard lock(mu_);
    e = {next_id_++, WallNowNs(), volume, kind, message};
    events_.push_back(e);
    if (events_.size() > 1000) events_.pop_front();
    // Best effort: an event file that cannot be written must not stop I/O.
    if (FILE* f = std::fopen(path_.c_str(), "a")) {
      std::string line = e.ToJson().dump() + "\n";
      std::fwrite(line.data(), 1, line.size(), f);
      std::fclose(f);
    }
  }
  Logger("event")->info("{}{}{}: {}", volume, volume.empty() ? "" : ": ", kind, message);
}

std::vector<Event> EventLog::Since(uint64_t after_id, const std::string& volume) const {
  std::lock_guard lock(mu_);
  std::vector<Event> out;
  for (const auto& e : events_) {
    if (e.id > after_id && (volume.empty() || e.volume == volume)) out.push_back(e);
  }
  return out;
}

}  // namespace continuum::agent
