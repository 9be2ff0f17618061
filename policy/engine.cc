#include "policy/engine.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <optional>
#include <random>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "policy/context_memory.h"
#include "policy/hash.h"

namespace arbiter::policy {
namespace {

// Requests a (route, task) cell needs before its own mean cost is trusted.
constexpr double kMinRequestsForCost = 5;
// Feedback needed before min_accuracy excludes a route, when the policy sets
// no evidence threshold of its own.
constexpr double kDefaultMinFeedback = 20;
// Posterior draws used to compute Thompson sampling's propensities.
constexpr int kThompsonDraws = 128;

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
  kBestUtility,
  kThompson,
  kBudget,
  kContextual,
};

absl::string_view ReasonClass(Why why) {
  switch (why) {
    case Why::kPinnedByRequest:
      return "requested";
    case Why::kPinnedByPolicy:
    case Why::kWeighted:
      return "fixed";
    case Why::kExploring:
    case Why::kNoEvidenceAnywhere:
      return "explore";
    default:
      return "exploit";
  }
}

struct Note {
  Why why = Why::kNone;
  double accuracy = 0;    // Posterior mean.
  double p_at_least = 0;  // P(accuracy >= floor).
  double cost_usd = 0;
  double latency_seconds = 0;
  double utility = 0;
  double floor = 0;
  double weight = 0;         // The budget's current cost weight.
  double feedback = 0;       // Effective judged answers.
  double neighbours = 0;     // Similar judged prompts (contextual).
  double task_accuracy = 0;  // The task-level estimate (contextual).
};

}  // namespace

struct ProposalContext {
  const RequestFeatures& features;
  const StatsSnapshot& stats;
  const Engine& engine;
  const std::vector<bool>& eligible;
  std::vector<double>& probability;
  std::vector<Note>& notes;

  // Fills the note of route r with its posterior, cost and latency.
  void Describe(int r) {
    Note& note = notes[r];
    BetaPosterior posterior = engine.Posterior(r, features.task, stats);
    note.accuracy = posterior.mean();
    note.cost_usd = engine.ExpectedCostUsd(r, features.task, stats);
    note.latency_seconds =
        engine.ExpectedLatencySeconds(r, features.task, stats);
    note.feedback = stats.Cell(r, features.task).recent.feedback;
  }
};

class Engine::Strategy {
 public:
  virtual ~Strategy() = default;
  [[nodiscard]] virtual absl::string_view name() const = 0;
  // Fills ctx.probability (zero for ineligible routes) and ctx.notes.
  // FAILED_PRECONDITION when no eligible route fits the strategy.
  virtual absl::Status Propose(ProposalContext& ctx) const = 0;
  virtual void ObserveCost(double cost_usd) const {}
  [[nodiscard]] virtual bool UsesContext() const { return false; }
  // Judged answers a route needs on a task before a request's min_accuracy
  // can hold for it.
  [[nodiscard]] virtual double min_feedback() const {
    return kDefaultMinFeedback;
  }
  virtual void ObserveOutcome(int route, absl::Span<const float> embedding,
                              double score) const {}
  // A budget strategy's dual variable; none for the others.
  [[nodiscard]] virtual std::optional<double> cost_weight() const {
    return std::nullopt;
  }
  virtual void set_cost_weight(double weight) const {}
  // Judged prompts a contextual strategy remembers; 0 for the others.
  [[nodiscard]] virtual int context_capacity() const { return 0; }
  // What a contextual strategy remembers, oldest first; none for the others.
  [[nodiscard]] virtual std::vector<ContextMemory::Remembered> Remembered()
      const {
    return {};
  }
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

// Puts 1 - explore_share on `exploit` and spreads explore_share evenly over
// `thin` (routes with too little feedback to judge); all traffic explores
// when nothing can be exploited.
absl::Status ExploitOrExplore(ProposalContext& ctx, int exploit, Why why,
                              const std::vector<int>& thin,
                              double explore_share) {
  if (exploit < 0 && thin.empty()) {
    return absl::FailedPreconditionError("no route is eligible");
  }
  double explore = exploit < 0 ? 1.0 : (thin.empty() ? 0.0 : explore_share);
  if (exploit >= 0) {
    ctx.probability[exploit] += 1 - explore;
    ctx.notes[exploit].why = why;
  }
  for (int r : thin) {
    ctx.probability[r] += explore / thin.size();
    if (ctx.probability[r] > 0 && r != exploit) {
      ctx.notes[r].why =
          exploit < 0 ? Why::kNoEvidenceAnywhere : Why::kExploring;
    }
  }
  return absl::OkStatus();
}

// Exploits the eligible route of highest utility among those with at least
// min_feedback judged answers and explores the rest. `score(route, note)`
// sets note.utility (and anything else the reason needs) after Describe.
template <typename Score>
absl::Status BestOrExplore(ProposalContext& ctx, double min_feedback,
                           double explore_share, Why why, Score score) {
  int best = -1;
  std::vector<int> thin;
  for (int r = 0; r < ctx.engine.num_routes(); ++r) {
    if (!ctx.eligible[r]) continue;
    ctx.Describe(r);
    Note& note = ctx.notes[r];
    score(r, note);
    if (note.feedback < min_feedback) {
      thin.push_back(r);
    } else if (best < 0 || note.utility > ctx.notes[best].utility) {
      best = r;
    }
  }
  return ExploitOrExplore(ctx, best, why, thin, explore_share);
}

class CheapestMeetingAccuracyStrategy final : public Strategy {
 public:
  explicit CheapestMeetingAccuracyStrategy(
      const v1::CheapestMeetingAccuracyPolicy& config)
      : floor_(config.accuracy_floor()),
        min_feedback_(config.min_feedback()),
        explore_share_(config.explore_share()),
        confidence_(config.confidence()) {}
  absl::string_view name() const override {
    return "cheapest_meeting_accuracy";
  }
  double min_feedback() const override { return min_feedback_; }

  absl::Status Propose(ProposalContext& ctx) const override {
    const int task = ctx.features.task;
    const double floor = std::max(floor_, ctx.features.min_accuracy);
    int cheapest = -1;       // Cheapest route confidently at or above floor.
    int most_accurate = -1;  // Best trusted route, if none meets the floor.
    std::vector<int> thin;
    for (int r = 0; r < ctx.engine.num_routes(); ++r) {
      if (!ctx.eligible[r]) continue;
      ctx.Describe(r);
      Note& note = ctx.notes[r];
      note.floor = floor;
      note.p_at_least =
          ctx.engine.Posterior(r, task, ctx.stats).ProbabilityAtLeast(floor);
      if (note.feedback < min_feedback_) {
        thin.push_back(r);
        continue;
      }
      if (note.p_at_least >= confidence_ &&
          (cheapest < 0 || note.cost_usd < ctx.notes[cheapest].cost_usd)) {
        cheapest = r;
      }
      if (most_accurate < 0 ||
          note.accuracy > ctx.notes[most_accurate].accuracy) {
        most_accurate = r;
      }
    }
    return cheapest >= 0
               ? ExploitOrExplore(ctx, cheapest, Why::kCheapestMeetingFloor,
                                  thin, explore_share_)
               : ExploitOrExplore(ctx, most_accurate,
                                  Why::kMostAccurateBelowFloor, thin,
                                  explore_share_);
  }

 private:
  const double floor_;
  const double min_feedback_;
  const double explore_share_;
  const double confidence_;
};

class BestUtilityStrategy final : public Strategy {
 public:
  explicit BestUtilityStrategy(const v1::BestUtilityPolicy& config)
      : cost_weight_(config.cost_weight()),
        latency_weight_(config.latency_weight()),
        min_feedback_(config.min_feedback()),
        explore_share_(config.explore_share()) {}
  absl::string_view name() const override { return "best_utility"; }
  double min_feedback() const override { return min_feedback_; }

  absl::Status Propose(ProposalContext& ctx) const override {
    return BestOrExplore(ctx, min_feedback_, explore_share_, Why::kBestUtility,
                         [this](int, Note& note) {
                           note.utility =
                               note.accuracy - cost_weight_ * note.cost_usd -
                               latency_weight_ * note.latency_seconds;
                         });
  }

 private:
  const double cost_weight_;
  const double latency_weight_;
  const double min_feedback_;
  const double explore_share_;
};

class ThompsonStrategy final : public Strategy {
 public:
  explicit ThompsonStrategy(const v1::ThompsonPolicy& config)
      : cost_weight_(config.cost_weight()),
        latency_weight_(config.latency_weight()) {}
  absl::string_view name() const override { return "thompson"; }

  // The chance each route wins one posterior draw, estimated from many
  // draws: sampling from it is Thompson sampling, and it is the propensity.
  absl::Status Propose(ProposalContext& ctx) const override {
    std::vector<int> routes;
    std::vector<BetaPosterior> posteriors;
    for (int r = 0; r < ctx.engine.num_routes(); ++r) {
      if (!ctx.eligible[r]) continue;
      ctx.Describe(r);
      routes.push_back(r);
      posteriors.push_back(
          ctx.engine.Posterior(r, ctx.features.task, ctx.stats));
    }
    if (routes.empty()) {
      return absl::FailedPreconditionError("no route is eligible");
    }
    std::mt19937_64 rng(ctx.features.seed);
    std::vector<int> wins(routes.size(), 0);
    for (int draw = 0; draw < kThompsonDraws; ++draw) {
      size_t best = 0;
      double best_utility = -std::numeric_limits<double>::infinity();
      for (size_t i = 0; i < routes.size(); ++i) {
        const Note& note = ctx.notes[routes[i]];
        double utility = posteriors[i].Sample(rng) -
                         cost_weight_ * note.cost_usd -
                         latency_weight_ * note.latency_seconds;
        if (utility > best_utility) {
          best_utility = utility;
          best = i;
        }
      }
      ++wins[best];
    }
    for (size_t i = 0; i < routes.size(); ++i) {
      Note& note = ctx.notes[routes[i]];
      ctx.probability[routes[i]] =
          static_cast<double>(wins[i]) / kThompsonDraws;
      note.utility = note.accuracy - cost_weight_ * note.cost_usd -
                     latency_weight_ * note.latency_seconds;
      note.why = Why::kThompson;
    }
    return absl::OkStatus();
  }

 private:
  const double cost_weight_;
  const double latency_weight_;
};

class BudgetStrategy final : public Strategy {
 public:
  explicit BudgetStrategy(const v1::BudgetPolicy& config)
      : target_(config.target_cost_usd()),
        learning_rate_(config.learning_rate()),
        min_feedback_(config.min_feedback()),
        explore_share_(config.explore_share()),
        weight_(config.initial_cost_weight()) {}
  absl::string_view name() const override { return "budget"; }

  absl::Status Propose(ProposalContext& ctx) const override {
    const double weight = weight_.load(std::memory_order_relaxed);
    return BestOrExplore(ctx, min_feedback_, explore_share_, Why::kBudget,
                         [this, weight](int, Note& note) {
                           note.weight = weight;
                           note.floor = target_;
                           note.utility =
                               note.accuracy - weight * note.cost_usd / target_;
                         });
  }

  // Dual ascent on the budget constraint: overspending raises the price of
  // cost, underspending lowers it (never below zero).
  void ObserveCost(double cost_usd) const override {
    double step = learning_rate_ * (cost_usd / target_ - 1);
    double weight = weight_.load(std::memory_order_relaxed);
    while (!weight_.compare_exchange_weak(weight, std::max(0.0, weight + step),
                                          std::memory_order_relaxed)) {
    }
  }
  std::optional<double> cost_weight() const override {
    return weight_.load(std::memory_order_relaxed);
  }
  void set_cost_weight(double weight) const override {
    weight_.store(std::max(0.0, weight), std::memory_order_relaxed);
  }

 private:
  const double target_;
  const double learning_rate_;
  const double min_feedback_;
  const double explore_share_;
  mutable std::atomic<double> weight_;  // The dual variable.
};

class ContextualStrategy final : public Strategy {
 public:
  ContextualStrategy(const v1::ContextualPolicy& config, int dim)
      : k_(config.k()),
        cost_weight_(config.cost_weight()),
        latency_weight_(config.latency_weight()),
        prior_weight_(config.prior_weight()),
        min_feedback_(config.min_feedback()),
        explore_share_(config.explore_share()),
        capacity_(config.memory_size()),
        memory_(dim, config.memory_size()) {}
  absl::string_view name() const override { return "contextual"; }
  int context_capacity() const override { return capacity_; }
  double min_feedback() const override { return min_feedback_; }
  bool UsesContext() const override { return true; }

  absl::Status Propose(ProposalContext& ctx) const override {
    const int n = ctx.engine.num_routes();
    // Similarity-weighted outcomes of the nearest judged prompts, per route.
    std::vector<double> weight(n, 0), score(n, 0), count(n, 0);
    for (const ContextMemory::Neighbour& neighbour :
         memory_.Nearest(ctx.features.embedding, k_)) {
      if (neighbour.route < 0 || neighbour.route >= n) continue;
      double w = std::max(0.0f, neighbour.similarity);
      weight[neighbour.route] += w;
      score[neighbour.route] += w * neighbour.score;
      count[neighbour.route] += 1;
    }
    return BestOrExplore(
        ctx, min_feedback_, explore_share_, Why::kContextual,
        [&](int r, Note& note) {
          note.task_accuracy = note.accuracy;
          note.neighbours = count[r];
          // The task-level estimate counts as prior_weight similar prompts.
          note.accuracy = (score[r] + prior_weight_ * note.task_accuracy) /
                          (weight[r] + prior_weight_);
          note.utility = note.accuracy - cost_weight_ * note.cost_usd -
                         latency_weight_ * note.latency_seconds;
        });
  }

  void ObserveOutcome(int route, absl::Span<const float> embedding,
                      double score) const override {
    memory_.Add(embedding, route, score);
  }
  std::vector<ContextMemory::Remembered> Remembered() const override {
    return memory_.Entries();
  }

 private:
  const int k_;
  const double cost_weight_;
  const double latency_weight_;
  const double prior_weight_;
  const double min_feedback_;
  const double explore_share_;
  const int capacity_;
  mutable ContextMemory memory_;  // Thread-safe on its own.
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
          "%s: cheapest with P(acc >= %.2f) = %.2f ($%.6f/request, n=%.0f)",
          route, note.floor, note.p_at_least, note.cost_usd, note.feedback);
    case Why::kMostAccurateBelowFloor:
      return absl::StrFormat(
          "%s: no route meets accuracy %.2f; most accurate at %.2f (n=%.0f)",
          route, note.floor, note.accuracy, note.feedback);
    case Why::kNoEvidenceAnywhere:
      return absl::StrFormat(
          "%s: exploring, no route has enough feedback yet (n=%.0f)", route,
          note.feedback);
    case Why::kExploring:
      return absl::StrFormat("%s: exploring, too little feedback (n=%.0f)",
                             route, note.feedback);
    case Why::kBestUtility:
      return absl::StrFormat(
          "%s: best utility %.3f (accuracy %.2f, $%.6f/request, %.0f ms)",
          route, note.utility, note.accuracy, note.cost_usd,
          note.latency_seconds * 1000);
    case Why::kThompson:
      return absl::StrFormat(
          "%s: won the posterior draw (accuracy %.2f, n=%.0f, $%.6f/request)",
          route, note.accuracy, note.feedback, note.cost_usd);
    case Why::kBudget:
      return absl::StrFormat(
          "%s: best accuracy for the money (accuracy %.2f, $%.6f/request; "
          "budget $%.6f/request, cost weight %.2f)",
          route, note.accuracy, note.cost_usd, note.floor, note.weight);
    case Why::kContextual:
      return absl::StrFormat(
          "%s: best for similar prompts: accuracy %.2f from %.0f neighbours "
          "(task %.2f), $%.6f/request",
          route, note.accuracy, note.neighbours, note.task_accuracy,
          note.cost_usd);
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
  engine->prior_strength_ = config.statistics().prior_strength();
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
      case v1::Policy::kBestUtility:
        return std::make_unique<BestUtilityStrategy>(policy.best_utility());
      case v1::Policy::kThompson:
        return std::make_unique<ThompsonStrategy>(policy.thompson());
      case v1::Policy::kBudget:
        if (!(policy.budget().target_cost_usd() > 0)) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ".budget.target_cost_usd: must be > 0"));
        }
        return std::make_unique<BudgetStrategy>(policy.budget());
      case v1::Policy::kContextual:
        return std::make_unique<ContextualStrategy>(
            policy.contextual(), config.retrieval().embedding_dim());
      case v1::Policy::STRATEGY_NOT_SET:
        break;
    }
    return absl::InvalidArgumentError(absl::StrCat(path, ": no strategy set"));
  };
  auto default_strategy = make(config.policy(), "policy");
  if (!default_strategy.ok()) return default_strategy.status();
  engine->strategies_.push_back(*std::move(default_strategy));
  engine->strategy_paths_.push_back("policy");
  engine->path_by_task_.assign(config.tasks_size(), 0);
  for (int t = 0; t < config.tasks_size(); ++t) {
    const std::string& task = config.tasks(t);
    auto it = config.task_policies().find(task);
    if (it == config.task_policies().end()) {
      engine->strategy_by_task_.push_back(engine->strategies_.front().get());
      continue;
    }
    std::string path = absl::StrCat("task_policies.", task);
    auto strategy = make(it->second, path);
    if (!strategy.ok()) return strategy.status();
    engine->strategies_.push_back(*std::move(strategy));
    engine->strategy_paths_.push_back(std::move(path));
    engine->path_by_task_[t] = static_cast<int>(engine->strategies_.size()) - 1;
    engine->strategy_by_task_.push_back(engine->strategies_.back().get());
  }
  return engine;
}

double Engine::ExpectedCostUsd(int route, int task,
                               const StatsSnapshot& stats) const {
  const Evidence& cell = stats.Cell(route, task).recent;
  if (cell.completions >= kMinRequestsForCost) {
    return cell.cost_per_request_usd();
  }
  const Evidence& total = stats.RouteTotal(route).recent;
  if (total.completions >= kMinRequestsForCost) {
    return total.cost_per_request_usd();
  }
  return prior_cost_usd_[route];
}

double Engine::ExpectedLatencySeconds(int route, int task,
                                      const StatsSnapshot& stats) const {
  const Evidence& cell = stats.Cell(route, task).recent;
  if (cell.completions >= kMinRequestsForCost) {
    return cell.mean_latency_seconds();
  }
  return stats.RouteTotal(route).recent.mean_latency_seconds();
}

BetaPosterior Engine::Posterior(int route, int task,
                                const StatsSnapshot& stats) const {
  const Evidence& cell = stats.Cell(route, task).recent;
  const Evidence& total = stats.RouteTotal(route).recent;
  // The route's record on its other tasks is the prior for this one.
  double other_feedback = std::max(0.0, total.feedback - cell.feedback);
  double other_score = std::max(0.0, total.score - cell.score);
  BetaPosterior posterior;
  if (other_feedback > 0 && prior_strength_ > 0) {
    double strength = std::min(prior_strength_, other_feedback);
    double mean = other_score / other_feedback;
    posterior.alpha += strength * mean;
    posterior.beta += strength * (1 - mean);
  }
  posterior.alpha += cell.score;
  posterior.beta += std::max(0.0, cell.feedback - cell.score);
  return posterior;
}

bool Engine::UsesContext(int task) const {
  return task >= 0 && task < static_cast<int>(strategy_by_task_.size()) &&
         strategy_by_task_[task]->UsesContext();
}

void Engine::ObserveOutcome(int task, int route,
                            absl::Span<const float> embedding, double score) {
  if (!UsesContext(task)) return;
  strategy_by_task_[task]->ObserveOutcome(route, embedding, score);
}

std::vector<std::pair<std::string, double>> Engine::CostWeights() const {
  std::vector<std::pair<std::string, double>> weights;
  for (size_t i = 0; i < strategies_.size(); ++i) {
    if (auto weight = strategies_[i]->cost_weight()) {
      weights.emplace_back(strategy_paths_[i], *weight);
    }
  }
  return weights;
}

bool Engine::RestoreCostWeight(absl::string_view strategy, double weight) {
  for (size_t i = 0; i < strategies_.size(); ++i) {
    if (strategy_paths_[i] == strategy && strategies_[i]->cost_weight()) {
      strategies_[i]->set_cost_weight(weight);
      return true;
    }
  }
  return false;
}

const std::string& Engine::StrategyOf(int task) const {
  return strategy_paths_[path_by_task_[task]];
}

int Engine::ContextCapacity(int task) const {
  return strategy_by_task_[task]->context_capacity();
}

std::vector<Engine::RememberedOutcome> Engine::RememberedOutcomes() const {
  std::vector<RememberedOutcome> outcomes;
  for (size_t i = 0; i < strategies_.size(); ++i) {
    for (ContextMemory::Remembered& entry : strategies_[i]->Remembered()) {
      if (entry.route < 0 || entry.route >= num_routes()) continue;
      outcomes.push_back({strategy_paths_[i], route_names_[entry.route],
                          entry.score, std::move(entry.embedding)});
    }
  }
  return outcomes;
}

bool Engine::RestoreOutcome(absl::string_view strategy, int route,
                            absl::Span<const float> embedding, double score) {
  for (size_t i = 0; i < strategies_.size(); ++i) {
    if (strategy_paths_[i] == strategy && strategies_[i]->UsesContext()) {
      strategies_[i]->ObserveOutcome(route, embedding, score);
      return true;
    }
  }
  return false;
}

void Engine::ObserveCost(int task, double cost_usd) {
  if (task < 0 || task >= static_cast<int>(strategy_by_task_.size())) return;
  strategy_by_task_[task]->ObserveCost(cost_usd);
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
    if (!features.available.empty() && !features.available[r]) {
      eligible[r] = false;
      excluded.push_back(absl::StrCat(names[r], ": not available"));
      continue;
    }
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
      // A constraint holds only on evidence: too few judged answers fail it.
      const Evidence& cell = stats.Cell(r, features.task).recent;
      double accuracy = engine.Posterior(r, features.task, stats).mean();
      const double needed = strategy->min_feedback();
      if (cell.feedback < needed) {
        eligible[r] = false;
        excluded.push_back(absl::StrFormat(
            "%s: %.0f judged answers, fewer than the %.0f needed to hold "
            "min_accuracy %.3f",
            names[r], cell.feedback, needed, features.min_accuracy));
      } else if (accuracy < features.min_accuracy) {
        eligible[r] = false;
        excluded.push_back(absl::StrFormat(
            "%s: accuracy %.3f < min_accuracy %.3f (n=%.0f)", names[r],
            accuracy, features.min_accuracy, cell.feedback));
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
  decision.reason_class = std::string(ReasonClass(eval->notes[chosen].why));
  return decision;
}

}  // namespace arbiter::policy
