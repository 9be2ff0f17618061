#include "gateway/timer_queue.h"

namespace arbiter {

TimerQueue::TimerQueue() : thread_([this] { Loop(); }) {}

TimerQueue::~TimerQueue() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    changed_.Signal();
  }
  thread_.join();
}

void TimerQueue::RunAt(absl::Time when,
                       absl::AnyInvocable<void() &&> callback) {
  absl::MutexLock lock(&mu_);
  bool earliest = queue_.empty() || when < queue_.top().when;
  queue_.push(Entry{when, next_sequence_++, std::move(callback)});
  if (earliest) changed_.Signal();
}

void TimerQueue::Loop() {
  absl::MutexLock lock(&mu_);
  for (;;) {
    if (queue_.empty()) {
      if (stopping_) return;
      changed_.Wait(&mu_);
      continue;
    }
    absl::Time when = queue_.top().when;
    if (!stopping_ && when > absl::Now()) {
      changed_.WaitWithDeadline(&mu_, when);
      continue;
    }
    absl::AnyInvocable<void() &&> due = std::move(queue_.top().callback);
    queue_.pop();
    mu_.Unlock();
    std::move(due)();
    mu_.Lock();
  }
}

}  // namespace arbiter
