#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace continuum {

// A fixed set of threads for index-parallel loops over blocking I/O:
// Run(n, fn) calls fn(i) for every i in [0, n) on the pool's threads and the
// caller's, and returns when every call has returned.
// Thread-safety: Run from one thread at a time; fn must be safe to call
// concurrently for different i.
class TaskPool {
 public:
  explicit TaskPool(size_t threads);
  ~TaskPool();
  TaskPool(const TaskPool&) = delete;
  TaskPool& operator=(const TaskPool&) = delete;

  void Run(size_t n, const std::function<void(size_t)>& fn);

 private:
  void Loop();
  // Takes the next index of the current loop; false when none is left.
  // REQUIRES: mu_ held.
  bool Take(size_t* i);

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  const std::function<void(size_t)>* fn_ = nullptr;  // GUARDED_BY(mu_)
  size_t n_ = 0;       // GUARDED_BY(mu_)
  size_t next_ = 0;    // GUARDED_BY(mu_)
  size_t active_ = 0;  // GUARDED_BY(mu_): calls running on pool threads
  bool stop_ = false;  // GUARDED_BY(mu_)
  std::vector<std::thread> threads_;
};

}  // namespace continuum
