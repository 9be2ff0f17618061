#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "arbiter/v1/config.pb.h"
#include "arbiter/v1/state.pb.h"

namespace arbiter::policy {

// What one request cost, by component.
struct RequestCost {
  double input_usd = 0;
  double output_usd = 0;
  double request_usd = 0;
  double retrieval_usd = 0;
  double embedding_usd = 0;

  [[nodiscard]] double total_usd() const {
    return input_usd + output_usd + request_usd + retrieval_usd + embedding_usd;
  }
  RequestCost& operator+=(const RequestCost& other);
};

// Prices a request from its token usage and the route's price table;
// `embedding_tokens` are the query tokens embedded for retrieval.
//
//   pricing: {input_usd_per_mtok: 3, output_usd_per_mtok: 15}
//   PriceRequest(pricing, 1000, 200, false).total_usd() == 0.006
[[nodiscard]] RequestCost PriceRequest(const v1::Pricing& pricing,
                                       int64_t input_tokens,
                                       int64_t output_tokens, bool retrieved,
                                       int64_t embedding_tokens = 0);

// The economics of one route on one task since the gateway started, and
// over the recent window. Fixed costs (hosting, amortised training) are
// shared among the route's tasks by their share of its requests.
struct TaskEconomics {
  int route = 0;
  int task = 0;
  int64_t requests = 0;
  RequestCost request_cost;
  double fixed_usd = 0;
  int64_t judged = 0;
  double correct = 0;  // Graded feedback counts its score.
  std::optional<double> accuracy;
  std::optional<double> cost_per_request_usd;  // Request costs only.
  std::optional<double> cost_per_correct_usd;  // Fixed costs included.
  int64_t window_requests = 0;
  double window_cost_usd = 0;  // Fixed costs included.
  double window_correct = 0;
  std::optional<double> window_cost_per_correct_usd;
};

// When a fine-tuned route pays for its training, measured against the
// route it replaces: what the baseline would have cost on the same tasks
// minus what the fine-tune cost, less its hosting.
struct BreakEven {
  int baseline = -1;
  double training_cost_usd = 0;
  // Per request, variable costs only; absent before any traffic.
  std::optional<double> savings_per_request_usd;
  std::optional<double> baseline_cost_per_request_usd;
  double savings_usd = 0;  // So far, net of hosting; may be negative.
  double remaining_usd = 0;
  double recovered_share = 0;  // In [0, 1].
  bool recovered = false;
  // At today's request rate: never (and why), or in so many requests/days.
  bool never = false;
  std::string never_reason;
  std::optional<double> requests_remaining;
  std::optional<double> days_remaining;
  // Accuracy-aware: cost per correct answer of each, and which is better.
  std::optional<double> cost_per_correct_usd;
  std::optional<double> baseline_cost_per_correct_usd;
  std::string verdict;
};

struct RouteEconomics {
  int route = 0;
  int64_t requests = 0;
  RequestCost request_cost;
  double hosting_usd = 0;             // Accrued since start.
  double training_amortized_usd = 0;  // Accrued since start.
  int64_t judged = 0;
  double correct = 0;
  std::optional<double> accuracy;
  std::optional<double> cost_per_request_usd;  // Fixed costs included.
  std::optional<double> cost_per_correct_usd;
  std::optional<double> window_cost_per_correct_usd;
  double requests_per_day = 0;         // At the window's rate.
  std::optional<BreakEven> breakeven;  // Trained routes with a baseline.

  [[nodiscard]] double total_usd() const {
    return request_cost.total_usd() + hosting_usd + training_amortized_usd;
  }
};

struct EconomicsSnapshot {
  absl::Time as_of;
  absl::Duration uptime;
  absl::Duration window;
  std::vector<RouteEconomics> routes;  // In config order.
  std::vector<TaskEconomics> tasks;    // Route-major, config order.
};

// Accumulates request costs and feedback per route and task, accrues
// hosting and training by time, and answers cost per correct answer and
// break-even. Pure: time is passed in. Not thread-safe.
class EconomicsLedger final {
 public:
  // `config` has its defaults applied. prior_cost_usd[r]: route r's expected
  // cost per request before traffic, used for a baseline that has not
  // served a task yet.
  EconomicsLedger(const v1::Config& config, absl::Time start,
                  std::vector<double> prior_cost_usd);

  void RecordRequest(int route, int task, const RequestCost& cost,
                     absl::Time now);
  // score in [0, 1]: 1 correct, 0 incorrect, in between graded.
  void RecordFeedback(int route, int task, double score, absl::Time now);

  // Fixed costs accrued by `now` since start.
  [[nodiscard]] double HostingUsd(int route, absl::Time now) const;
  [[nodiscard]] double TrainingAmortizedUsd(int route, absl::Time now) const;

  [[nodiscard]] EconomicsSnapshot Snapshot(absl::Time now) const;

  // What the ledger holds, by route and task name, for the state store.
  [[nodiscard]] v1::EconomicsState ToState(absl::Time now) const;
  // Takes up a stored ledger after a restart: accounting goes on from its
  // start, and fixed costs accrue from when they were stored (so downtime
  // is billed once, at today's prices). Routes and tasks are matched by
  // name; those not in the config are left out.
  void Restore(const v1::EconomicsState& state, absl::Time now);

 private:
  struct Bucket {
    int64_t minute = -1;
    int64_t requests = 0;
    double cost_usd = 0;
    double correct = 0;
  };
  struct Cell {
    int64_t requests = 0;
    RequestCost cost;
    int64_t judged = 0;
    double correct = 0;
    std::vector<Bucket> window;  // Ring of per-minute buckets.
  };
  Cell& At(int route, int task) { return cells_[route * num_tasks_ + task]; }
  const Cell& At(int route, int task) const {
    return cells_[route * num_tasks_ + task];
  }
  Bucket& BucketFor(Cell& cell, absl::Time now);
  // Sums of the cell's buckets inside the window ending at `now`.
  Bucket WindowSum(const Cell& cell, absl::Time now) const;
  // Straight-line training amortisation accrued between two times.
  double TrainingBetween(int route, absl::Time from, absl::Time to) const;
  BreakEven ComputeBreakEven(int route, const EconomicsSnapshot& partial) const;

  const int num_routes_;
  const int num_tasks_;
  std::vector<std::string> route_names_;
  std::vector<std::string> task_names_;
  absl::Time start_;
  const absl::Duration window_;
  const std::vector<double> prior_cost_usd_;
  struct RouteTerms {
    double hosting_usd_per_hour = 0;
    double training_cost_usd = 0;
    absl::Time trained = absl::InfinitePast();
    absl::Duration amortization = absl::Hours(24 * 365);
    int baseline = -1;
  };
  std::vector<RouteTerms> terms_;
  // Fixed costs accrued up to as_of; they accrue on from there.
  struct Accrual {
    double hosting_usd = 0;
    double training_usd = 0;
    absl::Time as_of;
  };
  std::vector<Accrual> accrued_;
  std::vector<Cell> cells_;
};

}  // namespace arbiter::policy
