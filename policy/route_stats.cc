#include "policy/route_stats.h"

#include "absl/time/clock.h"

namespace arbiter::policy {

void RouteTaskCounters::Add(const RouteTaskCounters& other) {
  requests += other.requests;
  errors += other.errors;
  input_tokens += other.input_tokens;
  output_tokens += other.output_tokens;
  cost_usd += other.cost_usd;
  latency_seconds_sum += other.latency_seconds_sum;
  feedback_count += other.feedback_count;
  feedback_score_sum += other.feedback_score_sum;
}

StatsSnapshot::StatsSnapshot(int num_routes, int num_tasks)
    : num_routes_(num_routes),
      num_tasks_(num_tasks),
      cells_(static_cast<size_t>(num_routes) * num_tasks),
      totals_(num_routes) {}

RouteStats::RouteStats(int num_routes, int num_tasks,
                       absl::Duration publish_interval)
    : publish_interval_(publish_interval),
      working_(num_routes, num_tasks),
      last_publish_(absl::Now()),
      published_(std::make_shared<const StatsSnapshot>(num_routes, num_tasks)) {
}

RouteTaskCounters& RouteStats::CellLocked(int route, int task) {
  return working_.cells_[route * working_.num_tasks_ + task];
}

void RouteStats::RecordCompletion(int route, int task,
                                  const Completion& completion) {
  std::lock_guard lock(mu_);
  RouteTaskCounters delta;
  delta.requests = 1;
  delta.input_tokens = completion.input_tokens;
  delta.output_tokens = completion.output_tokens;
  delta.cost_usd = completion.cost_usd;
  delta.latency_seconds_sum = completion.latency_seconds;
  CellLocked(route, task).Add(delta);
  working_.totals_[route].Add(delta);
  MaybePublishLocked();
}

void RouteStats::RecordError(int route, int task, double latency_seconds) {
  std::lock_guard lock(mu_);
  RouteTaskCounters delta;
  delta.requests = 1;
  delta.errors = 1;
  delta.latency_seconds_sum = latency_seconds;
  CellLocked(route, task).Add(delta);
  working_.totals_[route].Add(delta);
  MaybePublishLocked();
}

void RouteStats::RecordFeedback(int route, int task, double score) {
  std::lock_guard lock(mu_);
  RouteTaskCounters delta;
  delta.feedback_count = 1;
  delta.feedback_score_sum = score;
  CellLocked(route, task).Add(delta);
  working_.totals_[route].Add(delta);
  MaybePublishLocked();
}

void RouteStats::Publish() {
  std::lock_guard lock(mu_);
  PublishLocked();
}

void RouteStats::PublishIfChanged() {
  std::lock_guard lock(mu_);
  if (dirty_) PublishLocked();
}

void RouteStats::MaybePublishLocked() {
  dirty_ = true;
  absl::Time now = absl::Now();
  if (now - last_publish_ >= publish_interval_) PublishLocked();
}

void RouteStats::PublishLocked() {
  // Copying a few hundred cells is cheaper than locking every reader.
  published_.store(std::make_shared<const StatsSnapshot>(working_),
                   std::memory_order_release);
  dirty_ = false;
  last_publish_ = absl::Now();
}

}  // namespace arbiter::policy
