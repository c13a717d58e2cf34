#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "continuum/common/result.h"
#include "continuum/repo/backend.h"
#include "continuum/repo/repository_options.h"

namespace continuum::repo {

// One locks/<name> file (docs/format/repository.md, "Locks").
struct LockRecord {
  LockMode mode = LockMode::kShared;
  std::string host;
  uint32_t pid = 0;
  uint64_t start_ticks = 0;  // of pid, to see through pid reuse; 0 = unknown
  int64_t time_ns = 0;       // last refresh
};

// Takes, refreshes and releases this process's lock on a repository, and
// judges other holders' locks stale.
// Thread-safety: none; owned by the Repository's thread.
class LockManager {
 public:
  struct Options {
    int64_t stale_ns = 30ll * 60 * 1000000000;
    int64_t refresh_ns = 5ll * 60 * 1000000000;
    std::function<int64_t()> clock;  // empty: WallNowNs
    // Identity of this process; empty/0 means the real one (tests set them).
    std::string host;
    uint32_t pid = 0;
    uint64_t start_ticks = 0;
  };

  LockManager(Backend* backend, Options options);
  // Releases a held lock (best effort: a left-over lock goes stale).
  ~LockManager();
  LockManager(const LockManager&) = delete;
  LockManager& operator=(const LockManager&) = delete;

  // kUnavailable naming the holder when a live conflicting lock exists. Stale
  // locks found on the way are removed. kNone does nothing.
  Status Acquire(LockMode mode);
  // Rewrites the lock when refresh_ns has passed. kFailedPrecondition if the lock
  // was removed meanwhile (another process judged it stale): the caller must stop.
  Status RefreshIfDue();
  Status Release();
  bool held() const { return !name_.empty(); }

  bool IsStale(const LockRecord& rec) const;

  static std::vector<uint8_t> Encode(const LockRecord& rec);
  static Result<LockRecord> Decode(std::span<const uint8_t> file, const std::string& what);

 private:
  int64_t Now() const;
  LockRecord Mine(int64_t now) const;
  // Returns the first live lock that conflicts with `mode`, removing stale ones.
  Result<std::string> FindConflict(LockMode mode, const std::string& skip);

  Backend* backend_;
  Options options_;
  LockMode mode_ = LockMode::kNone;
  std::string name_;  // our lock file, empty when none held
  int64_t refreshed_ns_ = 0;
};

}  // namespace continuum::repo
