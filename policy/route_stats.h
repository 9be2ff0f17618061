#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"

namespace arbiter::policy {

// What arbiter knows about one route on one task (or on all tasks).
struct RouteTaskCounters {
  int64_t requests = 0;  // Completed or failed.
  int64_t errors = 0;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  double cost_usd = 0;
  double latency_seconds_sum = 0;
  int64_t feedback_count = 0;
  double feedback_score_sum = 0;  // Correct = 1, wrong = 0, graded = score.

  [[nodiscard]] double accuracy() const {
    return feedback_count > 0 ? feedback_score_sum / feedback_count : 0;
  }
  [[nodiscard]] double cost_per_request_usd() const {
    int64_t ok = requests - errors;
    return ok > 0 ? cost_usd / ok : 0;
  }
  // What one correct answer costs: cost per request over accuracy.
  [[nodiscard]] double cost_per_correct_usd() const {
    double acc = accuracy();
    return acc > 0 ? cost_per_request_usd() / acc : 0;
  }
  void Add(const RouteTaskCounters& other);
};

// An immutable view of every (route, task) cell, plus per-route totals.
// Routes and tasks are indices into the config's lists.
class StatsSnapshot final {
 public:
  StatsSnapshot(int num_routes, int num_tasks);

  [[nodiscard]] const RouteTaskCounters& Cell(int route, int task) const {
    return cells_[route * num_tasks_ + task];
  }
  [[nodiscard]] const RouteTaskCounters& RouteTotal(int route) const {
    return totals_[route];
  }
  [[nodiscard]] int num_routes() const { return num_routes_; }
  [[nodiscard]] int num_tasks() const { return num_tasks_; }

 private:
  friend class RouteStats;
  int num_routes_;
  int num_tasks_;
  std::vector<RouteTaskCounters> cells_;
  std::vector<RouteTaskCounters> totals_;
};

struct Completion {
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  double cost_usd = 0;
  double latency_seconds = 0;
};

// Live statistics. Writers update under a lock; readers on the hot path take
// the latest published snapshot without locking. A snapshot is published at
// most every `publish_interval` after an update, or at once by Publish().
class RouteStats final {
 public:
  RouteStats(int num_routes, int num_tasks,
             absl::Duration publish_interval = absl::Milliseconds(10));

  RouteStats(const RouteStats&) = delete;
  RouteStats& operator=(const RouteStats&) = delete;

  void RecordCompletion(int route, int task, const Completion& completion);
  void RecordError(int route, int task, double latency_seconds);
  // score in [0, 1]; a binary outcome is 1 or 0.
  void RecordFeedback(int route, int task, double score);

  // Lock-free; may lag the latest update by up to the publish interval.
  [[nodiscard]] std::shared_ptr<const StatsSnapshot> Snapshot() const {
    return published_.load(std::memory_order_acquire);
  }
  // Makes every update so far visible to Snapshot().
  void Publish();
  // Publishes only if something changed since the last publish; call it
  // periodically so a quiet spell does not leave updates unpublished.
  void PublishIfChanged();

 private:
  RouteTaskCounters& CellLocked(int route, int task)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MaybePublishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const absl::Duration publish_interval_;
  // A std::mutex rather than absl::Mutex: ThreadSanitizer sees through it
  // even though the system's Abseil is not instrumented.
  std::mutex mu_;
  StatsSnapshot working_ ABSL_GUARDED_BY(mu_);
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_publish_ ABSL_GUARDED_BY(mu_);
  std::atomic<std::shared_ptr<const StatsSnapshot>> published_;
};

}  // namespace arbiter::policy
