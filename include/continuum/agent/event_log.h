#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace continuum::agent {

struct Event {
  uint64_t id = 0;
  int64_t ts_ns = 0;
  std::string volume;  // empty for agent-wide events
  std::string kind;    // e.g. "volume_up", "journal_trimmed", "apply_failed"
  std::string message;
  nlohmann::json ToJson() const;
};

// Operator-facing events: kept in memory (newest 1000) and appended to a
// JSON-lines file in the state directory. Thread-safe.
class EventLog {
 public:
  explicit EventLog(std::string path);
  void Add(const std::string& volume, const std::string& kind, const std::string& message);
  std::vector<Event> Since(uint64_t after_id, const std::string& volume = "") const;

 private:
  std::string path_;
  mutable std::mutex mu_;
  std::deque<Event> events_;  // GUARDED_BY(mu_)
  uint64_t next_id_ = 1;      // GUARDED_BY(mu_)
};

}  // namespace continuum::agent
