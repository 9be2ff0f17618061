#include "policy/engine.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "policy/hash.h"

namespace arbiter::policy {
namespace {

// Requests a (route, task) cell needs before its own mean cost is trusted.
constexpr int64_t kMinRequestsForCost = 5;
// Feedback needed before accuracy excludes a route under min_accuracy when
// the policy itself sets no evidence threshold.
constexpr int64_t kDefaultMinFeedback = 20;

// Why a route got its probability; formatted only for the chosen route.
enum class Why {
  kNone,
  kPinnedByRequest,
  kPinnedByPolicy,
  kWeighted,
  kCheapestMeetingFloor,
  kMostAccurateBelowFloor,
  kNoEvidenceAnywhere,
  kExploring,
};

struct Note {
  Why why = Why::kNone;
  double accuracy = 0;
  double cost_usd = 0;
  double floor = 0;
  int64_t feedback = 0;
};

}  // namespace

struct ProposalContext {
  const RequestFeatures& features;
  const StatsSnapshot& stats;
  const Engine& engine;
  const std::vector<bool>& eligible;
  std::vector<double>& probability;
  std::vector<Note>& notes;
};

class Engine::Strategy {
 public:
  virtual ~Strategy() = default;
  [[nodiscard]] virtual absl::string_view name() const = 0;
  // Fills ctx.probability (zero for ineligible routes) and ctx.notes.
  // FAILED_PRECONDITION when no eligible route fits the strategy.
  virtual absl::Status Propose(ProposalContext& ctx) const = 0;
};

namespace {

using Strategy = Engine::Strategy;

class PinnedStrategy final : public Strategy {
 public:
  explicit PinnedStrategy(int route) : route_(route) {}
  absl::string_view name() const override { return "pinned"; }
  absl::Status Propose(ProposalContext& ctx) const override {
    if (!ctx.eligible[route_]) {
      return absl::FailedPreconditionError(
          "the policy pins a route that the request's constraints exclude");
    }
    ctx.probability[route_] = 1;
    ctx.notes[route_].why = Why::kPinnedByPolicy;
    return absl::OkStatus();
  }

 private:
  const int route_;
};

class WeightedStrategy final : public Strategy {
 public:
  explicit WeightedStrategy(std::vector<double> weights)
      : weights_(std::move(weights)) {}
  absl::string_view name() const override { return "weighted"; }
  absl::Status Propose(ProposalContext& ctx) const override {
    double total = 0;
    for (size_t r = 0; r < weights_.size(); ++r) {
      if (ctx.eligible[r]) total += weights_[r];
    }
    if (total <= 0) {
      return absl::FailedPreconditionError(
          "no route with a positive weight meets the request's constraints");
    }
    for (size_t r = 0; r < weights_.size(); ++r) {
      if (!ctx.eligible[r] || weights_[r] <= 0) continue;
      ctx.probability[r] = weights_[r] / total;
      ctx.notes[r].why = Why::kWeighted;
    }
    return absl::OkStatus();
  }

 private:
  const std::vector<double> weights_;  // Per route; 0 for unlisted routes.
};

class CheapestMeetingAccuracyStrategy final : public Strategy {
 public:
  explicit CheapestMeetingAccuracyStrategy(
      const v1::CheapestMeetingAccuracyPolicy& config)
      : floor_(config.accuracy_floor()),
        min_feedback_(config.min_feedback() > 0 ? config.min_feedback() : 20),
        explore_share_(config.has_explore_share() ? config.explore_share()
                                                  : 0.1) {}
  absl::string_view name() const override {
    return "cheapest_meeting_accuracy";
  }

  absl::Status Propose(ProposalContext& ctx) const override {
    const int task = ctx.features.task;
    const double floor = std::max(floor_, ctx.features.min_accuracy);
    int cheapest = -1;       // Cheapest route with trusted accuracy >= floor.
    int most_accurate = -1;  // Best trusted route, if none meets the floor.
    std::vector<int> thin;   // Routes with too little feedback to judge.
    for (int r = 0; r < ctx.engine.num_routes(); ++r) {
      if (!ctx.eligible[r]) continue;
      const RouteTaskCounters& cell = ctx.stats.Cell(r, task);
      Note& note = ctx.notes[r];
      note.accuracy = cell.accuracy();
      note.cost_usd = ctx.engine.ExpectedCostUsd(r, task, ctx.stats);
      note.floor = floor;
      note.feedback = cell.feedback_count;
      if (cell.feedback_count < min_feedback_) {
        thin.push_back(r);
        continue;
      }
      if (note.accuracy >= floor &&
          (cheapest < 0 || note.cost_usd < ctx.notes[cheapest].cost_usd)) {
        cheapest = r;
      }
      if (most_accurate < 0 ||
          note.accuracy > ctx.notes[most_accurate].accuracy) {
        most_accurate = r;
      }
    }
    int exploit = cheapest >= 0 ? cheapest : most_accurate;
    if (exploit < 0 && thin.empty()) {
      return absl::FailedPreconditionError("no route is eligible");
    }
    // Without any trusted route, all traffic explores.
    double explore = exploit < 0 ? 1.0 : (thin.empty() ? 0.0 : explore_share_);
    if (exploit >= 0) {
      ctx.probability[exploit] += 1 - explore;
      ctx.notes[exploit].why = cheapest >= 0 ? Why::kCheapestMeetingFloor
                                             : Why::kMostAccurateBelowFloor;
    }
    for (int r : thin) {
      ctx.probability[r] += explore / thin.size();
      ctx.notes[r].why =
          exploit < 0 ? Why::kNoEvidenceAnywhere : Why::kExploring;
    }
    return absl::OkStatus();
  }

  [[nodiscard]] int min_feedback() const { return min_feedback_; }

 private:
  const double floor_;
  const int min_feedback_;
  const double explore_share_;
};

std::string Explain(const Note& note, absl::string_view route) {
  switch (note.why) {
    case Why::kPinnedByRequest:
      return absl::StrCat(route, ": pinned by the request");
    case Why::kPinnedByPolicy:
      return absl::StrCat(route, ": pinned by the policy");
    case Why::kWeighted:
      return absl::StrCat(route, ": weighted split");
    case Why::kCheapestMeetingFloor:
      return absl::StrFormat(
          "%s: cheapest with accuracy %.2f >= %.2f (n=%d, $%.6f/request)",
          route, note.accuracy, note.floor, note.feedback, note.cost_usd);
    case Why::kMostAccurateBelowFloor:
      return absl::StrFormat(
          "%s: no route meets accuracy %.2f; most accurate at %.2f (n=%d)",
          route, note.floor, note.accuracy, note.feedback);
    case Why::kNoEvidenceAnywhere:
      return absl::StrFormat(
          "%s: exploring, no route has enough feedback yet (n=%d)", route,
          note.feedback);
    case Why::kExploring:
      return absl::StrFormat("%s: exploring, too little feedback (n=%d)", route,
                             note.feedback);
    case Why::kNone:
      break;
  }
  return std::string(route);
}

}  // namespace

Engine::~Engine() = default;

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(
    const v1::Config& config, std::vector<double> prior_cost_usd) {
  auto engine = std::unique_ptr<Engine>(new Engine());
  for (const v1::Route& route : config.routes()) {
    engine->route_names_.push_back(route.name());
  }
  if (prior_cost_usd.size() != engine->route_names_.size()) {
    return absl::InvalidArgumentError("one prior cost per route is needed");
  }
  engine->prior_cost_usd_ = std::move(prior_cost_usd);
  auto route_index = [&](absl::string_view name) {
    auto it = std::find(engine->route_names_.begin(),
                        engine->route_names_.end(), name);
    return it == engine->route_names_.end()
               ? -1
               : static_cast<int>(it - engine->route_names_.begin());
  };
  auto make =
      [&](const v1::Policy& policy,
          absl::string_view path) -> absl::StatusOr<std::unique_ptr<Strategy>> {
    switch (policy.strategy_case()) {
      case v1::Policy::kPinned: {
        int r = route_index(policy.pinned().route());
        if (r < 0) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ".pinned.route: unknown route \"",
                           policy.pinned().route(), "\""));
        }
        return std::make_unique<PinnedStrategy>(r);
      }
      case v1::Policy::kWeighted: {
        std::vector<double> weights(engine->route_names_.size(), 0);
        for (const auto& [name, weight] : policy.weighted().weights()) {
          int r = route_index(name);
          if (r < 0) {
            return absl::InvalidArgumentError(absl::StrCat(
                path, ".weighted.weights: unknown route \"", name, "\""));
          }
          weights[r] = weight;
        }
        return std::make_unique<WeightedStrategy>(std::move(weights));
      }
      case v1::Policy::kCheapestMeetingAccuracy:
        return std::make_unique<CheapestMeetingAccuracyStrategy>(
            policy.cheapest_meeting_accuracy());
      case v1::Policy::STRATEGY_NOT_SET:
        break;
    }
    return absl::InvalidArgumentError(absl::StrCat(path, ": no strategy set"));
  };
  auto default_strategy = make(config.policy(), "policy");
  if (!default_strategy.ok()) return default_strategy.status();
  engine->strategies_.push_back(*std::move(default_strategy));
  for (const std::string& task : config.tasks()) {
    auto it = config.task_policies().find(task);
    if (it == config.task_policies().end()) {
      engine->strategy_by_task_.push_back(engine->strategies_.front().get());
      continue;
    }
    auto strategy = make(it->second, absl::StrCat("task_policies.", task));
    if (!strategy.ok()) return strategy.status();
    engine->strategies_.push_back(*std::move(strategy));
    engine->strategy_by_task_.push_back(engine->strategies_.back().get());
  }
  return engine;
}

double Engine::ExpectedCostUsd(int route, int task,
                               const StatsSnapshot& stats) const {
  const RouteTaskCounters& cell = stats.Cell(route, task);
  if (cell.requests - cell.errors >= kMinRequestsForCost) {
    return cell.cost_per_request_usd();
  }
  const RouteTaskCounters& total = stats.RouteTotal(route);
  if (total.requests - total.errors >= kMinRequestsForCost) {
    return total.cost_per_request_usd();
  }
  return prior_cost_usd_[route];
}

namespace {

struct Evaluation {
  std::vector<double> probability;
  std::vector<Note> notes;
  absl::string_view policy;
};

}  // namespace

static absl::StatusOr<Evaluation> Evaluate(
    const Engine& engine, const Engine::Strategy* strategy,
    const std::vector<std::string>& names, const RequestFeatures& features,
    const StatsSnapshot& stats) {
  const int n = engine.num_routes();
  if (features.task < 0 || features.task >= stats.num_tasks()) {
    return absl::InvalidArgumentError("task: out of range");
  }
  Evaluation eval;
  eval.probability.assign(n, 0);
  eval.notes.assign(n, Note{});
  if (features.pinned_route >= 0) {
    if (features.pinned_route >= n) {
      return absl::InvalidArgumentError("route: out of range");
    }
    eval.policy = "pinned";
    eval.probability[features.pinned_route] = 1;
    eval.notes[features.pinned_route].why = Why::kPinnedByRequest;
    return eval;
  }
  std::vector<bool> eligible(n, true);
  std::vector<std::string> excluded;
  for (int r = 0; r < n; ++r) {
    if (features.max_cost_usd > 0) {
      double cost = engine.ExpectedCostUsd(r, features.task, stats);
      if (cost > features.max_cost_usd) {
        eligible[r] = false;
        excluded.push_back(
            absl::StrFormat("%s: expected cost $%.6f > max_cost_usd $%.6f",
                            names[r], cost, features.max_cost_usd));
        continue;
      }
    }
    if (features.min_accuracy > 0) {
      const RouteTaskCounters& cell = stats.Cell(r, features.task);
      if (cell.feedback_count >= kDefaultMinFeedback &&
          cell.accuracy() < features.min_accuracy) {
        eligible[r] = false;
        excluded.push_back(absl::StrFormat(
            "%s: accuracy %.3f < min_accuracy %.3f (n=%d)", names[r],
            cell.accuracy(), features.min_accuracy, cell.feedback_count));
      }
    }
  }
  eval.policy = strategy->name();
  ProposalContext ctx{features,         stats,     engine, eligible,
                      eval.probability, eval.notes};
  absl::Status status = strategy->Propose(ctx);
  if (!status.ok()) {
    std::string why = excluded.empty()
                          ? std::string(status.message())
                          : absl::StrCat(status.message(), "; ",
                                         absl::StrJoin(excluded, "; "));
    return absl::FailedPreconditionError(
        absl::StrCat("no route meets the request's constraints: ", why));
  }
  return eval;
}

absl::StatusOr<Proposal> Engine::Propose(const RequestFeatures& features,
                                         const StatsSnapshot& stats) const {
  if (features.task < 0 ||
      features.task >= static_cast<int>(strategy_by_task_.size())) {
    return absl::InvalidArgumentError("task: out of range");
  }
  auto eval = Evaluate(*this, strategy_by_task_[features.task], route_names_,
                       features, stats);
  if (!eval.ok()) return eval.status();
  return Proposal{eval->policy, std::move(eval->probability)};
}

absl::StatusOr<Decision> Engine::Decide(const RequestFeatures& features,
                                        const StatsSnapshot& stats) const {
  if (features.task < 0 ||
      features.task >= static_cast<int>(strategy_by_task_.size())) {
    return absl::InvalidArgumentError("task: out of range");
  }
  const Strategy* strategy = strategy_by_task_[features.task];
  auto eval = Evaluate(*this, strategy, route_names_, features, stats);
  if (!eval.ok()) return eval.status();
  // Weighted splits are sticky: the same unit draws the same number.
  double u = features.uniform;
  if (eval->policy == "weighted" && !features.unit_id.empty()) {
    u = UnitInterval(StableHash64(features.unit_id));
  }
  int chosen = -1;
  double cumulative = 0;
  for (int r = 0; r < num_routes(); ++r) {
    if (eval->probability[r] <= 0) continue;
    chosen = r;
    cumulative += eval->probability[r];
    if (u < cumulative) break;
  }
  Decision decision;
  decision.route = chosen;
  decision.policy = std::string(eval->policy);
  decision.propensity = eval->probability[chosen];
  decision.reason = Explain(eval->notes[chosen], route_names_[chosen]);
  return decision;
}

}  // namespace arbiter::policy
