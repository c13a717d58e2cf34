#include "continuum/common/task_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <set>
#include <vector>

namespace continuum {
namespace {

TEST(TaskPool, CallsEveryIndexOnceAndWaitsForAll) {
  TaskPool pool(4);
  for (size_t n : {0u, 1u, 3u, 100u}) {
    std::vector<std::atomic<int>> calls(n);
    pool.Run(n, [&](size_t i) {
      std::this_thread::sleep_for(std::chrono::microseconds(i % 7 * 50));
      calls[i].fetch_add(1);
    });
    // Run returned: every call has finished, none ran twice.
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(calls[i].load(), 1) << "n=" << n << " i=" << i;
  }
}

TEST(TaskPool, RunsBlockingCallsInParallel) {
  TaskPool pool(7);
  std::atomic<int> running{0}, peak{0};
  pool.Run(8, [&](size_t) {
    int now = running.fetch_add(1) + 1;
    int p = peak.load();
    while (now > p && !peak.compare_exchange_weak(p, now)) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    running.fetch_sub(1);
  });
  // Eight 50 ms sleeps on eight threads (seven plus the caller) overlap.
  EXPECT_GE(peak.load(), 4);
}

TEST(TaskPool, ZeroThreadsRunsOnTheCaller) {
  TaskPool pool(0);
  std::set<std::thread::id> ids;
  pool.Run(5, [&](size_t) { ids.insert(std::this_thread::get_id()); });
  EXPECT_EQ(ids, std::set<std::thread::id>{std::this_thread::get_id()});
}

}  // namespace
}  // namespace continuum
