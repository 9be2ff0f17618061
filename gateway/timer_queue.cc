#include "gateway/timer_queue.h"

namespace arbiter {

TimerQueue::TimerQueue() : thread_([this] { Loop(); }) {}

TimerQueue::~TimerQueue() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  changed_.notify_one();
  thread_.join();
}

void TimerQueue::RunAt(absl::Time when,
                       absl::AnyInvocable<void() &&> callback) {
  bool earliest;
  {
    std::lock_guard lock(mu_);
    earliest = queue_.empty() || when < queue_.top().when;
    queue_.push(Entry{when, next_sequence_++, std::move(callback)});
  }
  if (earliest) changed_.notify_one();
}

void TimerQueue::Loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    if (queue_.empty()) {
      if (stopping_) return;
      changed_.wait(lock);
      continue;
    }
    absl::Time when = queue_.top().when;
    if (!stopping_ && when > absl::Now()) {
      changed_.wait_until(lock, absl::ToChronoTime(when));
      continue;
    }
    absl::AnyInvocable<void() &&> due = std::move(queue_.top().callback);
    queue_.pop();
    lock.unlock();
    std::move(due)();
    lock.lock();
  }
}

}  // namespace arbiter
