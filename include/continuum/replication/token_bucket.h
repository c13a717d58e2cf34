#pragma once

#include <algorithm>
#include <cstdint>

namespace continuum::replication {

// Bandwidth limit for one target: a token bucket of `rate` bytes/s holding at
// most a quarter second of tokens (at least 64 KiB). A batch may take more
// than the bucket holds; the debt is paid by waiting, so the average holds.
// Time is passed in (monotonic ns) so tests need no clock.
// Thread-safety: none; used by the target's sender thread only.
class TokenBucket {
 public:
  explicit TokenBucket(uint64_t rate) : rate_(rate) {}
  bool limited() const { return rate_ > 0; }
  // Takes `bytes` at `now_ns`; returns how long to wait before sending them.
  int64_t Take(uint64_t bytes, int64_t now_ns) {
    if (rate_ == 0) return 0;
    double cap = std::max(static_cast<double>(rate_) / 4, 65536.0);
    if (last_ns_ == 0) {
      tokens_ = cap;
    } else {
      tokens_ = std::min(cap, tokens_ + static_cast<double>(now_ns - last_ns_) * static_cast<double>(rate_) / 1e9);
    }
    last_ns_ = now_ns;
    tokens_ -= static_cast<double>(bytes);
    if (tokens_ >= 0) return 0;
    return static_cast<int64_t>(-tokens_ * 1e9 / static_cast<double>(rate_));
  }

 private:
  uint64_t rate_;
  double tokens_ = 0;
  int64_t last_ns_ = 0;
};

}  // namespace continuum::replication
