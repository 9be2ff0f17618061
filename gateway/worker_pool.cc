#include "gateway/worker_pool.h"

#include <algorithm>
#include <exception>
#include <iostream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace arbiter {
namespace {

// The last line of defence: a task that throws is logged, never let out.
void Call(WorkerPool::Task& task, absl::Status status,
          const std::string& pool) {
  try {
    std::move(task)(std::move(status));
  } catch (const std::exception& e) {
    std::cerr << "worker pool " << pool << ": a task threw: " << e.what()
              << std::endl;
  } catch (...) {
    std::cerr << "worker pool " << pool << ": a task threw" << std::endl;
  }
}

}  // namespace

WorkerPool::WorkerPool(Options options) : options_(std::move(options)) {
  const int threads = std::max(1, options_.threads);
  idle_ = threads;  // Counted before they start: a task may come first.
  threads_.reserve(threads);
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
  expirer_ = std::thread([this] { ExpireLoop(); });
}

WorkerPool::~WorkerPool() {
  std::deque<Queued> left;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    left.swap(queue_);
    ReportLoad();
  }
  wake_.notify_all();
  expiry_changed_.notify_all();
  for (std::thread& thread : threads_) thread.join();
  expirer_.join();
  for (Queued& queued : left) {
    Call(queued.task,
         absl::UnavailableError(
             absl::StrCat("the ", options_.name, " pool is shutting down")),
         options_.name);
  }
}

void WorkerPool::Submit(Task task, absl::Time deadline) {
  absl::Status refused;
  {
    std::lock_guard lock(mu_);
    const size_t room =
        idle_ + static_cast<size_t>(std::max(0, options_.queue_capacity));
    if (stopping_) {
      refused = absl::UnavailableError(
          absl::StrCat("the ", options_.name, " pool is shutting down"));
    } else if (queue_.size() < room) {
      queue_.push_back({std::move(task), deadline});
      ReportLoad();
      wake_.notify_one();
      if (deadline < next_expiry_) {
        next_expiry_ = deadline;
        expiry_changed_.notify_one();
      }
      return;
    } else {
      ++rejected_;
      if (options_.on_rejected) options_.on_rejected();
      refused = absl::ResourceExhaustedError(absl::StrCat(
          "the ", options_.name, " pool is busy (", threads_.size(),
          " threads busy, ", options_.queue_capacity,
          " tasks waiting); retry later"));
    }
  }
  Call(task, std::move(refused), options_.name);
}

void WorkerPool::Loop() {
  std::unique_lock lock(mu_);
  while (true) {
    wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    --idle_;
    if (stopping_) return;
    Task task = std::move(queue_.front().task);
    queue_.pop_front();
    ++busy_;
    ReportLoad();
    lock.unlock();
    Call(task, absl::OkStatus(), options_.name);
    // The task's captures go now, not under the lock.
    task = nullptr;
    lock.lock();
    --busy_;
    ++idle_;
    ReportLoad();
  }
}

void WorkerPool::ExpireLoop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    if (next_expiry_ == absl::InfiniteFuture()) {
      expiry_changed_.wait(lock);
      continue;
    }
    const absl::Time wake_at = next_expiry_;
    if (absl::Now() < wake_at) {
      expiry_changed_.wait_until(lock, absl::ToChronoTime(wake_at));
      continue;
    }
    const absl::Time now = absl::Now();
    std::vector<Task> expired;
    next_expiry_ = absl::InfiniteFuture();
    std::erase_if(queue_, [&](Queued& queued) {
      if (queued.deadline > now) {
        next_expiry_ = std::min(next_expiry_, queued.deadline);
        return false;
      }
      expired.push_back(std::move(queued.task));
      return true;
    });
    if (expired.empty()) continue;
    ReportLoad();
    const size_t still_queued = queue_.size();
    lock.unlock();
    for (Task& task : expired) {
      Call(task,
           absl::DeadlineExceededError(absl::StrCat(
               "the request's deadline passed while it waited for the ",
               options_.name, " pool (", threads_.size(), " threads busy, ",
               still_queued, " other tasks waiting)")),
           options_.name);
    }
    expired.clear();  // Their captures go now, not under the lock.
    lock.lock();
  }
}

void WorkerPool::ReportLoad() {
  if (options_.on_load) options_.on_load(queue_.size(), busy_);
}

size_t WorkerPool::queued() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

size_t WorkerPool::busy() const {
  std::lock_guard lock(mu_);
  return busy_;
}

int64_t WorkerPool::rejected() const {
  std::lock_guard lock(mu_);
  return rejected_;
}

}  // namespace arbiter
