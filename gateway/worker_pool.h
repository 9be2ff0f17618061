#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace arbiter {

// A fixed set of threads with a bounded queue, for work that may block
// (SQLite commits, index updates, embedding-server calls) and so must not
// run on a gRPC callback thread. Every task is called exactly once: with OK
// on a worker, at once on the submitting thread with RESOURCE_EXHAUSTED
// when the queue is full, with DEADLINE_EXCEEDED (on the pool's expiry
// thread) when its deadline passes while it waits, or with UNAVAILABLE
// when the pool is closing. No exception escapes a worker.
//
//   WorkerPool pool({.name = "retrieval", .threads = 4, .queue_capacity = 64});
//   pool.Submit([done = std::move(done)](absl::Status admitted) mutable {
//     if (!admitted.ok()) return std::move(done)(admitted);
//     std::move(done)(DoTheSlowThing());
//   });
class WorkerPool final {
 public:
  using Task = absl::AnyInvocable<void(absl::Status) &&>;

  struct Options {
    std::string name;        // For messages: "the retrieval pool is full".
    int threads = 1;         // At least 1.
    int queue_capacity = 1;  // Tasks waiting for a worker; at least 0.
    // Told the load after every change, under the pool's lock (so calls
    // arrive in order); must be quick and must not call back into the pool.
    std::function<void(size_t queued, size_t busy)> on_load;
    std::function<void()> on_rejected;  // A task was refused (queue full).
  };

  explicit WorkerPool(Options options);
  // Tasks still queued are called with UNAVAILABLE; running ones finish.
  ~WorkerPool();

  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `task` for a worker, or calls it at once with RESOURCE_EXHAUSTED
  // when `queue_capacity` tasks already wait (with no idle worker to take
  // one). A task still waiting at `deadline` is taken out of the queue and
  // called with DEADLINE_EXCEEDED. Never blocks.
  void Submit(Task task, absl::Time deadline = absl::InfiniteFuture());

  [[nodiscard]] size_t queued() const;
  [[nodiscard]] size_t busy() const;
  [[nodiscard]] int64_t rejected() const;
  [[nodiscard]] const std::string& name() const { return options_.name; }

 private:
  struct Queued {
    Task task;
    absl::Time deadline;
  };

  void Loop();
  // Fails the tasks whose deadline passed while they waited.
  void ExpireLoop();
  void ReportLoad() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  // std:: primitives so ThreadSanitizer sees them.
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable expiry_changed_;  // An earlier deadline, or stop.
  std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
  // No queued task's deadline is earlier (it may be later: tasks taken by
  // workers leave it stale, and the expiry thread then looks again).
  absl::Time next_expiry_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  size_t busy_ ABSL_GUARDED_BY(mu_) = 0;
  size_t idle_ ABSL_GUARDED_BY(mu_) = 0;  // Workers waiting for a task.
  int64_t rejected_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;  // Constant after construction.
  std::thread expirer_;
};

}  // namespace arbiter
