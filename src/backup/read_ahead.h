#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace continuum::backup {

// Warms the page cache ahead of a path backup's walk, which reads one file at
// a time: helper threads stat the entries of a directory the walk has just
// listed (and read the listings of its subdirectories), and ask the kernel to
// read the files the walk will read next (posix_fadvise WILLNEED), so several
// requests are in flight on a cold cache. Only hints: errors are ignored, and
// hints beyond a bounded queue are dropped.
// Thread-safety: Stat and Read from one thread (the walk); the helpers own
// only their queue items.
class ReadAhead {
 public:
  explicit ReadAhead(size_t threads);
  ~ReadAhead();
  ReadAhead(const ReadAhead&) = delete;
  ReadAhead& operator=(const ReadAhead&) = delete;

  // Entries of the directory open as `dir_fd` (duplicated, not taken).
  void Stat(int dir_fd, const std::vector<std::string>& names);
  // Regular files of that directory with the bytes to read ahead of each.
  void Read(int dir_fd, const std::vector<std::pair<std::string, uint64_t>>& files);

 private:
  struct Dir;
  struct Item {
    std::shared_ptr<Dir> dir;
    std::vector<std::pair<std::string, uint64_t>> names;  // length: 0 = stat only
    bool read = false;
  };
  std::shared_ptr<Dir> Open(int dir_fd);
  void Push(Item item);
  void Work();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;  // GUARDED_BY(mu_)
  bool stop_ = false;       // GUARDED_BY(mu_)
  std::vector<std::thread> threads_;
};

}  // namespace continuum::backup
