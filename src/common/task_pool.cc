#include "continuum/common/task_pool.h"

namespace continuum {

TaskPool::TaskPool(size_t threads) {
  for (size_t t = 0; t < threads; ++t) threads_.emplace_back([this] { Loop(); });
}

TaskPool::~TaskPool() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

bool TaskPool::Take(size_t* i) {
  if (fn_ == nullptr || next_ >= n_) return false;
  *i = next_++;
  return true;
}

void TaskPool::Run(size_t n, const std::function<void(size_t)>& fn) {
  if (n == 0) return;
  std::unique_lock lock(mu_);
  fn_ = &fn;
  n_ = n;
  next_ = 0;
  if (n > 1) work_cv_.notify_all();
  size_t i;
  while (Take(&i)) {
    lock.unlock();
    fn(i);
    lock.lock();
  }
  done_cv_.wait(lock, [&] { return active_ == 0; });
  fn_ = nullptr;
}

void TaskPool::Loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || (fn_ != nullptr && next_ < n_); });
    if (stop_) return;
    size_t i;
    while (Take(&i)) {
      ++active_;
      const std::function<void(size_t)>* fn = fn_;
      lock.unlock();
      (*fn)(i);
      lock.lock();
      if (--active_ == 0) done_cv_.notify_all();
    }
  }
}

}  // namespace continuum
