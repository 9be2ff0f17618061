#include "gateway/timer_queue.h"

#include <atomic>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace arbiter {
namespace {

TEST(TimerQueueTest, RunsCallbacksInTimeOrder) {
  std::vector<int> order;
  absl::Mutex mu;
  absl::Notification done;
  {
    TimerQueue timers;
    absl::Time base = absl::Now() + absl::Milliseconds(20);
    for (int i : {3, 1, 2}) {
      timers.RunAt(base + absl::Milliseconds(i), [&, i] {
        absl::MutexLock lock(&mu);
        order.push_back(i);
        if (order.size() == 3) done.Notify();
      });
    }
    done.WaitForNotification();
  }
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST(TimerQueueTest, DoesNotRunEarly) {
  TimerQueue timers;
  absl::Notification ran;
  absl::Time due = absl::Now() + absl::Milliseconds(30);
  absl::Time ran_at;
  timers.RunAt(due, [&] {
    ran_at = absl::Now();
    ran.Notify();
  });
  ran.WaitForNotification();
  EXPECT_GE(ran_at, due);
}

TEST(TimerQueueTest, PendingCallbacksRunAtDestruction) {
  std::atomic<int> runs{0};
  {
    TimerQueue timers;
    for (int i = 0; i < 5; ++i) {
      timers.RunAfter(absl::Hours(1), [&] { ++runs; });
    }
  }
  EXPECT_EQ(runs.load(), 5);
}

}  // namespace
}  // namespace arbiter
