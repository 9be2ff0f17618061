#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "policy/latency_sketch.h"

namespace arbiter::policy {

// Recent evidence about a route on a task: sums that decay with the
// configured half-life, so a backend that changed is judged on what it does
// now. All fields are "effective counts" as of `as_of`.
struct Evidence {
  double completions = 0;
  double errors = 0;
  double cost_usd = 0;
  double latency_seconds = 0;  // Sum over completions.
  double feedback = 0;
  double score = 0;  // Sum of feedback scores.
  absl::Time as_of = absl::InfinitePast();

  // Multiplies every sum by 2^(-(now - as_of) / half_life).
  void DecayTo(absl::Time now, absl::Duration half_life);
  [[nodiscard]] double cost_per_request_usd() const {
    return completions > 0 ? cost_usd / completions : 0;
  }
  [[nodiscard]] double mean_latency_seconds() const {
    return completions > 0 ? latency_seconds / completions : 0;
  }
  [[nodiscard]] double error_rate() const {
    double all = completions + errors;
    return all > 0 ? errors / all : 0;
  }
};

// What arbiter knows about one route on one task (or on all tasks): lifetime
// totals for reporting, decayed evidence for decisions, latency quantiles.
struct RouteTaskCounters {
  int64_t requests = 0;  // Completed or failed.
  int64_t errors = 0;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  double cost_usd = 0;
  double latency_seconds_sum = 0;
  int64_t feedback_count = 0;
  double feedback_score_sum = 0;  // Correct = 1, wrong = 0, graded = score.
  Evidence recent;
  LatencySketch latency;

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
};

// An immutable view of every (route, task) cell, plus per-route totals, with
// recent evidence decayed to `as_of`. Routes and tasks are indices into the
// config's lists.
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
  [[nodiscard]] absl::Time as_of() const { return as_of_; }

 private:
  friend class RouteStats;
  int num_routes_;
  int num_tasks_;
  std::vector<RouteTaskCounters> cells_;
  std::vector<RouteTaskCounters> totals_;
  absl::Time as_of_ = absl::InfinitePast();
};

struct Completion {
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  double cost_usd = 0;
  double latency_seconds = 0;
};

struct StatsOptions {
  // Snapshots are published at most this often after an update.
  absl::Duration publish_interval = absl::Milliseconds(10);
  // Evidence loses half its weight in this time; infinite = never decays.
  absl::Duration half_life = absl::InfiniteDuration();
};

// Live statistics. Writers update under a lock; readers on the hot path take
// the latest published snapshot without locking. A snapshot is published at
// most every `publish_interval` after an update, or at once by Publish().
class RouteStats final {
 public:
  RouteStats(int num_routes, int num_tasks, StatsOptions options = {});
  RouteStats(int num_routes, int num_tasks, absl::Duration publish_interval)
      : RouteStats(num_routes, num_tasks,
                   StatsOptions{publish_interval, absl::InfiniteDuration()}) {}

  RouteStats(const RouteStats&) = delete;
  RouteStats& operator=(const RouteStats&) = delete;

  void RecordCompletion(int route, int task, const Completion& completion,
                        absl::Time now = absl::Now());
  void RecordError(int route, int task, double latency_seconds,
                   absl::Time now = absl::Now());
  // score in [0, 1]; a binary outcome is 1 or 0.
  void RecordFeedback(int route, int task, double score,
                      absl::Time now = absl::Now());

  // Lock-free; may lag the latest update by up to the publish interval.
  [[nodiscard]] std::shared_ptr<const StatsSnapshot> Snapshot() const {
    return published_.load(std::memory_order_acquire);
  }
  // Makes every update so far visible to Snapshot().
  void Publish(absl::Time now = absl::Now());
  // Publishes if something changed since the last publish, or, when evidence
  // decays, if the last publish is a second old; call it periodically.
  void PublishIfChanged(absl::Time now = absl::Now());

  // Replaces cells with stored ones (a restart) and recomputes the routes'
  // totals from every cell, then publishes.
  struct StoredCell {
    int route = 0;
    int task = 0;
    RouteTaskCounters counters;
  };
  void Restore(std::vector<StoredCell> cells, absl::Time now = absl::Now());

 private:
  template <typename Update>
  void Apply(int route, int task, absl::Time now, const Update& update);
  void PublishLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const StatsOptions options_;
  // A std::mutex rather than absl::Mutex: ThreadSanitizer sees through it
  // even though the system's Abseil is not instrumented.
  std::mutex mu_;
  StatsSnapshot working_ ABSL_GUARDED_BY(mu_);
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_publish_ ABSL_GUARDED_BY(mu_);
  std::atomic<std::shared_ptr<const StatsSnapshot>> published_;
};

}  // namespace arbiter::policy
