#pragma once

#include <algorithm>
#include <atomic>

#include "arbiter/v1/config.pb.h"

namespace arbiter {

// The requests in flight, bounded, and Envoy's retry budget: attempts beyond a
// request's first may be in flight only while they are fewer than
// max(min_concurrent, budget_percent % of the requests in flight), so an outage
// cannot multiply the load on the backends that still answer. Lock-free;
// thread-safe.
class RetryBudget final {
 public:
  // `settings` has its defaults applied.
  explicit RetryBudget(const v1::RetryBudget& settings)
      : percent_(settings.budget_percent()),
        min_concurrent_(settings.min_concurrent()) {}

  RetryBudget(const RetryBudget&) = delete;
  RetryBudget& operator=(const RetryBudget&) = delete;

  // A request starts, unless `max_in_flight` are in flight already (load
  // shedding: refused at once, never queued); a true must be matched by
  // RequestEnded. Every request counts, first attempts included.
  bool TryRequestStarted(int max_in_flight) {
    if (active_.fetch_add(1, std::memory_order_relaxed) >= max_in_flight) {
      active_.fetch_sub(1, std::memory_order_relaxed);
      return false;
    }
    return true;
  }
  void RequestEnded() { active_.fetch_sub(1, std::memory_order_relaxed); }

  [[nodiscard]] int requests_in_flight() const {
    return active_.load(std::memory_order_relaxed);
  }

  // Claims room for one more attempt; false when the budget is spent. A
  // true must be matched by RetryEnded.
  bool TryStartRetry() {
    const double allowed =
        std::max(static_cast<double>(min_concurrent_),
                 active_.load(std::memory_order_relaxed) * percent_ / 100.0);
    const int before = retries_.fetch_add(1, std::memory_order_relaxed);
    if (before + 1 > allowed) {
      retries_.fetch_sub(1, std::memory_order_relaxed);
      return false;
    }
    return true;
  }
  void RetryEnded() { retries_.fetch_sub(1, std::memory_order_relaxed); }

  [[nodiscard]] int retries_in_flight() const {
    return retries_.load(std::memory_order_relaxed);
  }

 private:
  const double percent_;
  const int min_concurrent_;
  std::atomic<int> active_{0};
  std::atomic<int> retries_{0};
};

}  // namespace arbiter
