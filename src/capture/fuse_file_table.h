#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <ctime>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "continuum/common/status.h"
#include "continuum/io/block_target.h"

namespace continuum::capture {

// One exported file. Immutable once published; I/O paths hold it through a
// shared_ptr so a target outlives every handle that reaches it.
struct FuseFile {
  uint64_t ino = 0;
  std::string name;
  std::shared_ptr<io::BlockTarget> target;
  uint64_t size = 0;
  uint32_t block_size = 4096;
  bool read_only = false;
  std::time_t created = 0;
};

// The names, inode numbers and open counts of the files of one FuseExporter.
// Inode numbers are never reused within a table, so a stale kernel inode can
// never reach a newer file of the same name.
// Thread-safety: every method may be called from any thread; all state is
// guarded by mu_.
class FuseFileTable {
 public:
  static constexpr uint64_t kRootIno = 1;

  Status Add(const std::string& name, std::shared_ptr<io::BlockTarget> target);
  // Fails with kFailedPrecondition if the file is still open after `grace`:
  // the kernel sends RELEASE asynchronously after the last close (e.g. after a
  // loop device is detached), so a short wait avoids a spurious failure.
  Status Remove(const std::string& name, std::chrono::milliseconds grace);

  std::shared_ptr<const FuseFile> Lookup(const std::string& name) const;
  std::shared_ptr<const FuseFile> Get(uint64_t ino) const;
  // Get() plus one more open handle; nullptr if the file is gone.
  std::shared_ptr<const FuseFile> Open(uint64_t ino);
  void Release(uint64_t ino);

  // Files ordered by inode number (stable across readdir calls).
  std::vector<std::shared_ptr<const FuseFile>> List() const;
  uint64_t OpenHandles() const;

 private:
  struct Entry {
    std::shared_ptr<const FuseFile> file;
    uint64_t open_count = 0;
  };

  mutable std::mutex mu_;
  std::condition_variable released_;       // signalled when an open count drops
  uint64_t next_ino_ = kRootIno + 1;       // guarded by mu_
  std::map<std::string, uint64_t> by_name_;  // guarded by mu_
  std::map<uint64_t, Entry> by_ino_;         // guarded by mu_
};

}  // namespace continuum::capture
