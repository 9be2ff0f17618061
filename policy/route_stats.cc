#include "policy/route_stats.h"

#include <cmath>

namespace arbiter::policy {

void Evidence::DecayTo(absl::Time now, absl::Duration half_life) {
  if (as_of == absl::InfinitePast() || half_life == absl::InfiniteDuration() ||
      now <= as_of) {
    as_of = std::max(as_of, now);
    return;
  }
  double factor = std::exp2(-absl::FDivDuration(now - as_of, half_life));
  completions *= factor;
  errors *= factor;
  cost_usd *= factor;
  latency_seconds *= factor;
  feedback *= factor;
  score *= factor;
  as_of = now;
}

StatsSnapshot::StatsSnapshot(int num_routes, int num_tasks)
    : num_routes_(num_routes),
      num_tasks_(num_tasks),
      cells_(static_cast<size_t>(num_routes) * num_tasks),
      totals_(num_routes) {}

RouteStats::RouteStats(int num_routes, int num_tasks, StatsOptions options)
    : options_(options),
      working_(num_routes, num_tasks),
      last_publish_(absl::InfinitePast()),
      published_(std::make_shared<const StatsSnapshot>(num_routes, num_tasks)) {
}

// Runs `update` on the (route, task) cell and on the route's total, each with
// its evidence decayed to `now` first.
template <typename Update>
void RouteStats::Apply(int route, int task, absl::Time now,
                       const Update& update) {
  std::lock_guard lock(mu_);
  for (RouteTaskCounters* counters :
       {&working_.cells_[route * working_.num_tasks_ + task],
        &working_.totals_[route]}) {
    counters->recent.DecayTo(now, options_.half_life);
    update(*counters);
  }
  dirty_ = true;
  if (now - last_publish_ >= options_.publish_interval) PublishLocked(now);
}

void RouteStats::RecordCompletion(int route, int task,
                                  const Completion& completion,
                                  absl::Time now) {
  Apply(route, task, now, [&](RouteTaskCounters& c) {
    ++c.requests;
    c.input_tokens += completion.input_tokens;
    c.output_tokens += completion.output_tokens;
    c.cost_usd += completion.cost_usd;
    c.latency_seconds_sum += completion.latency_seconds;
    c.latency.Add(completion.latency_seconds);
    c.recent.completions += 1;
    c.recent.cost_usd += completion.cost_usd;
    c.recent.latency_seconds += completion.latency_seconds;
  });
}

void RouteStats::RecordError(int route, int task, double latency_seconds,
                             absl::Time now) {
  Apply(route, task, now, [&](RouteTaskCounters& c) {
    ++c.requests;
    ++c.errors;
    c.latency_seconds_sum += latency_seconds;
    c.recent.errors += 1;
  });
}

void RouteStats::RecordFeedback(int route, int task, double score,
                                absl::Time now) {
  Apply(route, task, now, [&](RouteTaskCounters& c) {
    ++c.feedback_count;
    c.feedback_score_sum += score;
    c.recent.feedback += 1;
    c.recent.score += score;
  });
}

void RouteStats::Publish(absl::Time now) {
  std::lock_guard lock(mu_);
  PublishLocked(now);
}

void RouteStats::PublishIfChanged(absl::Time now) {
  std::lock_guard lock(mu_);
  bool decaying = options_.half_life != absl::InfiniteDuration();
  if (dirty_ || (decaying && now - last_publish_ >= absl::Seconds(1))) {
    PublishLocked(now);
  }
}

void RouteStats::PublishLocked(absl::Time now) {
  for (auto* counters : {&working_.cells_, &working_.totals_}) {
    for (RouteTaskCounters& c : *counters) {
      c.recent.DecayTo(now, options_.half_life);
    }
  }
  working_.as_of_ = now;
  // Copying a few hundred cells is cheaper than locking every reader.
  published_.store(std::make_shared<const StatsSnapshot>(working_),
                   std::memory_order_release);
  dirty_ = false;
  last_publish_ = now;
}

void RouteStats::Restore(std::vector<StoredCell> cells, absl::Time now) {
  std::lock_guard lock(mu_);
  const int num_tasks = working_.num_tasks_;
  for (StoredCell& cell : cells) {
    working_.cells_[cell.route * num_tasks + cell.task] =
        std::move(cell.counters);
  }
  // A route's total is the sum of its cells, evidence decayed alike.
  for (int route = 0; route < working_.num_routes_; ++route) {
    RouteTaskCounters total;
    total.recent.as_of = now;
    for (int task = 0; task < num_tasks; ++task) {
      RouteTaskCounters& c = working_.cells_[route * num_tasks + task];
      c.recent.DecayTo(now, options_.half_life);
      total.requests += c.requests;
      total.errors += c.errors;
      total.input_tokens += c.input_tokens;
      total.output_tokens += c.output_tokens;
      total.cost_usd += c.cost_usd;
      total.latency_seconds_sum += c.latency_seconds_sum;
      total.feedback_count += c.feedback_count;
      total.feedback_score_sum += c.feedback_score_sum;
      total.recent.completions += c.recent.completions;
      total.recent.errors += c.recent.errors;
      total.recent.cost_usd += c.recent.cost_usd;
      total.recent.latency_seconds += c.recent.latency_seconds;
      total.recent.feedback += c.recent.feedback;
      total.recent.score += c.recent.score;
      total.latency.Merge(c.latency);
    }
    working_.totals_[route] = std::move(total);
  }
  PublishLocked(now);
}

}  // namespace arbiter::policy
