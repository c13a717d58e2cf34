#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "continuum/common/result.h"

namespace continuum::volume {

struct ChangedExtent {
  uint64_t offset = 0;
  uint64_t length = 0;
};

// Persistent changed-block bitmaps, one per named base point
// (docs/format/bitmap.md). Every applied write marks its regions in every
// bitmap; a bitmap answers "what changed since base X" for incremental backup
// and resync. Saved atomically at each volume checkpoint, together with the
// seq it covers; recovery re-applies the write-log tail, which re-marks.
// Thread-safety: all methods take mu_.
class ChangeTracker {
 public:
  static constexpr uint32_t kDefaultGranularity = 64 * 1024;

  // A bitmap file that fails its checksums or does not match the geometry is
  // set aside as "<name>.cbt.damaged" and replaced by one with every region
  // marked changed since seq 0: whoever asks it (incremental backup, resync)
  // reads the whole volume once, nothing is missed, and the volume opens.
  // TakeOpenEvents says which.
  static Result<std::unique_ptr<ChangeTracker>> Open(const std::string& dir, uint64_t volume_size,
                                                     uint32_t granularity = kDefaultGranularity);
  struct Event {
    std::string kind;
    std::string message;
  };
  std::vector<Event> TakeOpenEvents() { return std::move(open_events_); }

  void Mark(uint64_t offset, uint64_t length);
  // Writes every dirty bitmap, recording that it covers writes through `seq`.
  Status Save(uint64_t covered_seq);

  // Starts (or restarts) a bitmap named `base` that is empty at `seq`.
  Status Create(const std::string& base, uint64_t seq);
  // The same, but the base seq is `seq_now()` called once the bitmap is
  // tracking: pass the newest admitted seq, so every write with a larger seq
  // is marked (a write marked before the bitmap existed was admitted before
  // the call). Until it is known the base seq is UINT64_MAX (never valid as a
  // base). Returns the base seq.
  Result<uint64_t> Create(const std::string& base, const std::function<uint64_t()>& seq_now);
  Status Remove(const std::string& base);
  Result<std::vector<ChangedExtent>> Changes(const std::string& base) const;
  struct Info {
    std::string name;
    uint64_t base_seq = 0;
    uint64_t covered_seq = 0;
    uint64_t changed_bytes = 0;
  };
  std::vector<Info> List() const;
  uint32_t granularity() const { return granularity_; }

 private:
  struct Bitmap {
    uint64_t base_seq = 0;
    uint64_t covered_seq = 0;
    std::vector<uint64_t> words;
    bool dirty = true;
  };
  ChangeTracker(std::string dir, uint64_t size, uint32_t gran)
      : dir_(std::move(dir)), volume_size_(size), granularity_(gran) {}
  std::string PathOf(const std::string& name) const;
  std::vector<Event> open_events_;
  Status SaveOne(const std::string& name, Bitmap* bm, uint64_t covered_seq);
  Result<Bitmap> Load(const std::string& path) const;
  uint64_t Bits() const { return (volume_size_ + granularity_ - 1) / granularity_; }

  std::string dir_;
  uint64_t volume_size_;
  uint32_t granularity_;
  mutable std::mutex mu_;
  std::map<std::string, Bitmap> bitmaps_;  // GUARDED_BY(mu_)
};

}  // namespace continuum::volume
