#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "arbiter/v1/config.pb.h"
#include "policy/beta.h"
#include "policy/route_stats.h"

namespace arbiter::policy {

// What the engine knows of a request when it decides.
struct RequestFeatures {
  int task = 0;               // Index into the config's tasks.
  absl::string_view unit_id;  // Sticky assignment key; may be empty.
  int pinned_route = -1;      // The request's route pin, or -1.
  double max_cost_usd = 0;    // 0 = no limit.
  double min_accuracy = 0;    // 0 = no floor.
  double uniform = 0;         // A random draw in [0, 1) for sampling.
  uint64_t seed = 0;          // Seeds posterior sampling (thompson).
  // Routes that can serve this request (replay: those with a logged
  // outcome); empty means all.
  absl::Span<const bool> available;
  // The prompt's unit-length embedding, for contextual policies (see
  // Engine::UsesContext); empty otherwise.
  absl::Span<const float> embedding;
};

struct Decision {
  int route = -1;
  std::string policy;  // "pinned", "weighted", "thompson", ...
  std::string
      reason;  // For people: "rag: cheapest with accuracy 0.91 >= 0.85".
  double propensity = 1;
  // A bounded class of the reason, for metrics: "requested" (the request
  // named the route), "fixed" (pinned or weighted by config), "explore",
  // "exploit" (the strategy's best), or "experiment" (set by the gateway).
  std::string reason_class;
};

// The probability the policy gives each route for one request (sums to 1).
struct Proposal {
  absl::string_view policy;
  std::vector<double> probability;
};

// Picks a route per request from the config's policies and live statistics.
// Pure and thread-safe: everything it reads is constant after Create or
// passed in.
//
//   auto engine = Engine::Create(config, prior_costs);
//   auto decision = (*engine)->Decide(features, *stats.Snapshot());
class Engine final {
 public:
  // `config` is validated and has its defaults applied (the gateway's
  // ApplyConfigDefaults): its values are read as they are. prior_cost_usd[r]
  // is route r's expected cost per request before any traffic has been
  // measured.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(
      const v1::Config& config, std::vector<double> prior_cost_usd);

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  ~Engine();

  // FAILED_PRECONDITION (saying why per route) when the request's
  // constraints exclude every route the policy could choose.
  [[nodiscard]] absl::StatusOr<Decision> Decide(
      const RequestFeatures& features, const StatsSnapshot& stats) const;

  // The full distribution Decide samples from; for tests and offline use.
  [[nodiscard]] absl::StatusOr<Proposal> Propose(
      const RequestFeatures& features, const StatsSnapshot& stats) const;

  // Expected cost of a request on route r for a task, from live statistics
  // when there are enough, else the route's prior.
  [[nodiscard]] double ExpectedCostUsd(int route, int task,
                                       const StatsSnapshot& stats) const;
  // Mean latency on (route, task) from recent evidence; 0 when unknown.
  [[nodiscard]] double ExpectedLatencySeconds(int route, int task,
                                              const StatsSnapshot& stats) const;
  // The accuracy posterior of (route, task): the task's own recent feedback
  // on top of the route's accuracy on its other tasks, weighted as
  // `prior_strength` judged answers (shrinkage).
  [[nodiscard]] BetaPosterior Posterior(int route, int task,
                                        const StatsSnapshot& stats) const;

  // Tells budget strategies what a completed request cost, so they can steer
  // spending to their target. Thread-safe.
  void ObserveCost(int task, double cost_usd);

  // Whether the task's policy reads RequestFeatures::embedding.
  [[nodiscard]] bool UsesContext(int task) const;
  // Tells contextual strategies how a route did on a prompt. Thread-safe.
  void ObserveOutcome(int task, int route, absl::Span<const float> embedding,
                      double score);

  // What its strategies learned, for the state store. A strategy is named
  // by where it is in the config: "policy" or "task_policies.<task>".
  // The budget strategies' dual variables (the price put on cost).
  [[nodiscard]] std::vector<std::pair<std::string, double>> CostWeights() const;
  // false when no budget strategy is at that place (the config changed).
  bool RestoreCostWeight(absl::string_view strategy, double weight);
  // Where the task's strategy is, and how many judged prompts it remembers
  // (0 unless contextual).
  [[nodiscard]] const std::string& StrategyOf(int task) const;
  [[nodiscard]] int ContextCapacity(int task) const;
  // Every judged prompt its contextual strategies remember, oldest first
  // within each; RestoreOutcome takes them back.
  struct RememberedOutcome {
    std::string strategy;
    std::string route;
    double score;
    std::vector<float> embedding;
  };
  [[nodiscard]] std::vector<RememberedOutcome> RememberedOutcomes() const;
  // Gives a contextual strategy a stored judged prompt back; false when
  // none is at that place.
  bool RestoreOutcome(absl::string_view strategy, int route,
                      absl::Span<const float> embedding, double score);

  [[nodiscard]] int num_routes() const {
    return static_cast<int>(route_names_.size());
  }

  class Strategy;

 private:
  Engine() = default;

  std::vector<std::string> route_names_;
  std::vector<double> prior_cost_usd_;
  double prior_strength_ = 0;
  std::vector<std::unique_ptr<Strategy>> strategies_;  // Owned, shared.
  std::vector<const Strategy*> strategy_by_task_;
  std::vector<std::string> strategy_paths_;  // Per strategy.
  std::vector<int> path_by_task_;            // Index into strategy_paths_.
};

}  // namespace arbiter::policy
