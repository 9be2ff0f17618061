#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <queue>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace arbiter {

// Runs callbacks at given times on one thread of its own, so waiting costs
// memory, not threads. Callbacks must be short. Pending callbacks run at
// once at destruction rather than being lost.
class TimerQueue final {
 public:
  TimerQueue();
  ~TimerQueue();

  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  void RunAt(absl::Time when, absl::AnyInvocable<void() &&> callback);
  void RunAfter(absl::Duration delay, absl::AnyInvocable<void() &&> callback) {
    RunAt(absl::Now() + delay, std::move(callback));
  }

 private:
  struct Entry {
    absl::Time when;
    uint64_t sequence;  // Keeps equal times in submission order.
    mutable absl::AnyInvocable<void() &&> callback;
    bool operator>(const Entry& other) const {
      return when != other.when ? when > other.when : sequence > other.sequence;
    }
  };

  void Loop();

  // std:: primitives so ThreadSanitizer sees them.
  std::mutex mu_;
  std::condition_variable changed_;  // Notified on an earlier entry or stop.
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> queue_
      ABSL_GUARDED_BY(mu_);
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace arbiter
