#include "policy/replay.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "policy/economics.h"
#include "policy/engine.h"
#include "policy/route_stats.h"

namespace arbiter::policy {
namespace {

struct Tally {
  int64_t requests = 0;
  double score = 0;
  double cost = 0;
  std::map<std::string, int64_t> routed;

  ReplayResult Finish(std::string name) const {
    ReplayResult result;
    result.name = std::move(name);
    result.requests = requests;
    result.total_cost_usd = cost;
    if (requests > 0) {
      result.accuracy = score / requests;
      result.cost_per_request_usd = cost / requests;
      for (const auto& [route, n] : routed) {
        result.traffic_share[route] = static_cast<double>(n) / requests;
      }
    }
    result.cost_per_correct_usd = score > 0 ? cost / score : 0;
    return result;
  }
  void Add(const std::string& route, double s, double c) {
    ++requests;
    score += s;
    cost += c;
    ++routed[route];
  }
};

struct Indexed {
  absl::flat_hash_map<std::string, int> routes;
  absl::flat_hash_map<std::string, int> tasks;
};

double Cost(const v1::Route& route, const LoggedOutcome& outcome) {
  return PriceRequest(route.pricing(), outcome.input_tokens,
                      outcome.output_tokens, route.kind() == v1::ROUTE_KIND_RAG)
      .total_usd();
}

absl::StatusOr<Indexed> Index(const v1::Config& config,
                              const std::vector<LoggedRequest>& log) {
  Indexed index;
  for (int r = 0; r < config.routes_size(); ++r) {
    index.routes[config.routes(r).name()] = r;
  }
  for (int t = 0; t < config.tasks_size(); ++t) {
    index.tasks[config.tasks(t)] = t;
  }
  for (size_t i = 0; i < log.size(); ++i) {
    const LoggedRequest& item = log[i];
    std::string where =
        absl::StrCat("request ", i + 1, " (id \"", item.id, "\")");
    const std::string& task =
        item.task.empty() ? config.default_task() : item.task;
    if (!index.tasks.contains(task)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": task \"", task, "\" is not in the config"));
    }
    if (item.outcomes.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": no outcomes"));
    }
    for (const auto& [route, outcome] : item.outcomes) {
      if (!index.routes.contains(route)) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": route \"", route, "\" is not in the config"));
      }
      if (!(outcome.score >= 0 && outcome.score <= 1)) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": route \"", route, "\": score must be in [0, 1]"));
      }
    }
  }
  return index;
}

// One pass of the policy over the log.
absl::StatusOr<Tally> RunPolicy(const v1::Config& config,
                                const std::vector<LoggedRequest>& log,
                                const Indexed& index, uint64_t seed) {
  std::vector<double> priors;
  for (const v1::Route& route : config.routes()) {
    // Before any evidence, a route's logged mean cost is not known to the
    // policy; its price for a typical request stands in.
    priors.push_back(PriceRequest(route.pricing(), 500,
                                  route.max_output_tokens(),
                                  route.kind() == v1::ROUTE_KIND_RAG)
                         .total_usd());
  }
  auto engine = Engine::Create(config, priors);
  if (!engine.ok()) return engine.status();
  StatsOptions options;
  options.publish_interval = absl::ZeroDuration();
  double half_life = config.statistics().half_life_seconds();
  options.half_life =
      half_life > 0 ? absl::Seconds(half_life) : absl::InfiniteDuration();
  RouteStats stats(config.routes_size(), config.tasks_size(), options);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(0, 1);
  Tally tally;
  const size_t num_routes = config.routes_size();
  std::unique_ptr<bool[]> available(new bool[num_routes]);
  // Logged requests are spaced a second apart for the decay clock.
  const absl::Time start = absl::FromUnixSeconds(1'700'000'000);
  for (size_t i = 0; i < log.size(); ++i) {
    const LoggedRequest& item = log[i];
    std::fill(available.get(), available.get() + num_routes, false);
    for (const auto& [route, outcome] : item.outcomes) {
      available[index.routes.at(route)] = true;
    }
    RequestFeatures features;
    features.task =
        index.tasks.at(item.task.empty() ? config.default_task() : item.task);
    features.unit_id = item.id;
    features.uniform = uniform(rng);
    features.seed = rng();
    features.available = absl::MakeConstSpan(available.get(), num_routes);
    auto decision = engine.value()->Decide(features, *stats.Snapshot());
    if (!decision.ok()) {
      return absl::Status(
          decision.status().code(),
          absl::StrCat("request ", i + 1, ": ", decision.status().message()));
    }
    const v1::Route& route = config.routes(decision->route);
    const LoggedOutcome& outcome = item.outcomes.at(route.name());
    double cost = Cost(route, outcome);
    absl::Time now = start + absl::Seconds(static_cast<double>(i));
    stats.RecordCompletion(decision->route, features.task,
                           {outcome.input_tokens, outcome.output_tokens, cost,
                            outcome.latency_seconds},
                           now);
    stats.RecordFeedback(decision->route, features.task, outcome.score, now);
    engine.value()->ObserveCost(features.task, cost);
    tally.Add(route.name(), outcome.score, cost);
  }
  return tally;
}

// Sets the cost weight of the config's policy (and its task policies), for
// the sweep; false if the strategy has none.
bool SetCostWeight(v1::Config& config, double weight) {
  bool any = false;
  auto set = [&](v1::Policy& policy) {
    if (policy.has_best_utility()) {
      policy.mutable_best_utility()->set_cost_weight(weight);
      any = true;
    } else if (policy.has_thompson()) {
      policy.mutable_thompson()->set_cost_weight(weight);
      any = true;
    } else if (policy.has_contextual()) {
      policy.mutable_contextual()->set_cost_weight(weight);
      any = true;
    }
  };
  set(*config.mutable_policy());
  for (auto& [task, policy] : *config.mutable_task_policies()) set(policy);
  return any;
}

double Interpolate(const std::vector<std::pair<double, double>>& curve,
                   double x) {
  for (size_t i = 1; i < curve.size(); ++i) {
    if (x <= curve[i].first) {
      auto [x0, y0] = curve[i - 1];
      auto [x1, y1] = curve[i];
      return x1 > x0 ? y0 + (y1 - y0) * (x - x0) / (x1 - x0) : y1;
    }
  }
  return curve.back().second;
}

}  // namespace

absl::StatusOr<ReplayReport> Replay(const v1::Config& config,
                                    const std::vector<LoggedRequest>& log,
                                    uint64_t seed) {
  auto index = Index(config, log);
  if (!index.ok()) return index.status();
  ReplayReport report;
  auto policy = RunPolicy(config, log, *index, seed);
  if (!policy.ok()) return policy.status();
  report.policy = policy->Finish("policy");

  std::map<std::string, Tally> alone;
  Tally oracle;
  for (const LoggedRequest& item : log) {
    const std::string* best_route = nullptr;
    double best_score = -1;
    double best_cost = 0;
    for (const auto& [name, outcome] : item.outcomes) {
      const v1::Route& route = config.routes(index->routes.at(name));
      double cost = Cost(route, outcome);
      alone[name].Add(name, outcome.score, cost);
      if (outcome.score > best_score ||
          (outcome.score == best_score && cost < best_cost)) {
        best_route = &name;
        best_score = outcome.score;
        best_cost = cost;
      }
    }
    oracle.Add(*best_route, best_score, best_cost);
  }
  for (const auto& [name, tally] : alone) {
    report.routes.push_back(tally.Finish(name));
  }
  report.oracle = oracle.Finish("oracle");

  if (report.routes.size() != 2) return report;
  RoutingMetrics metrics;
  const ReplayResult& a = report.routes[0];
  const ReplayResult& b = report.routes[1];
  const bool a_weak = a.accuracy <= b.accuracy;
  metrics.weak_route = a_weak ? a.name : b.name;
  metrics.strong_route = a_weak ? b.name : a.name;
  const double weak = std::min(a.accuracy, b.accuracy);
  const double strong = std::max(a.accuracy, b.accuracy);
  auto pgr = [&](double accuracy) {
    return strong > weak ? (accuracy - weak) / (strong - weak) : 0.0;
  };
  auto strong_share = [&](const ReplayResult& result) {
    auto it = result.traffic_share.find(metrics.strong_route);
    return it == result.traffic_share.end() ? 0.0 : it->second;
  };
  metrics.pgr = pgr(report.policy.accuracy);
  metrics.strong_share = strong_share(report.policy);
  // The sweep: the policy's cost weight from free to prohibitive.
  v1::Config swept = config;
  std::vector<std::pair<double, double>> curve = {{0.0, 0.0}, {1.0, 1.0}};
  if (SetCostWeight(swept, 0)) {
    for (double exponent = -1; exponent <= 6.01; exponent += 0.25) {
      double weight = exponent < -0.5 ? 0 : std::pow(10.0, exponent);
      SetCostWeight(swept, weight);
      auto run = RunPolicy(swept, log, *index, seed);
      if (!run.ok()) return run.status();
      ReplayResult result = run->Finish("sweep");
      metrics.curve.emplace_back(strong_share(result), pgr(result.accuracy));
    }
    curve.insert(curve.end(), metrics.curve.begin(), metrics.curve.end());
  } else {
    metrics.curve.emplace_back(metrics.strong_share, metrics.pgr);
    curve.push_back(metrics.curve.back());
  }
  std::sort(curve.begin(), curve.end());
  // The best PGR reachable at or below each cost: a router can always spend
  // less than its budget, so the curve never falls as cost grows.
  for (size_t i = 1; i < curve.size(); ++i) {
    curve[i].second = std::max(curve[i].second, curve[i - 1].second);
  }
  double area = 0;
  for (size_t i = 1; i < curve.size(); ++i) {
    area += (curve[i].first - curve[i - 1].first) *
            (curve[i].second + curve[i - 1].second) / 2;
  }
  metrics.apgr = area;
  for (auto [target, field] :
       {std::pair{0.5, &metrics.cpt50}, std::pair{0.8, &metrics.cpt80}}) {
    for (double x = 0; x <= 1.0 + 1e-9; x += 0.001) {
      if (Interpolate(curve, x) >= target) {
        *field = x;
        break;
      }
    }
  }
  report.routing = metrics;
  return report;
}

}  // namespace arbiter::policy
