// ns per routing decision, with 3 and 30 routes, for each strategy.
//   ./build/bench/policy_bench

#include <cmath>
#include <random>
#include <string>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "gateway/config.h"
#include "policy/engine.h"
#include "policy/route_stats.h"

namespace arbiter::policy {
namespace {

v1::Config MakeConfig(int routes, const std::string& strategy) {
  v1::Config config;
  config.add_tasks("faq");
  config.add_tasks("billing");
  for (int r = 0; r < routes; ++r) {
    v1::Route* route = config.add_routes();
    route->set_name(absl::StrCat("route-", r));
    route->set_kind(v1::ROUTE_KIND_FINE_TUNED);
  }
  v1::Policy* policy = config.mutable_policy();
  if (strategy == "thompson") {
    policy->mutable_thompson()->set_cost_weight(100);
  } else if (strategy == "best_utility") {
    policy->mutable_best_utility()->set_cost_weight(100);
  } else if (strategy == "contextual") {
    policy->mutable_contextual()->set_cost_weight(100);
    config.mutable_retrieval()->set_embedding_dim(256);
  } else if (strategy == "weighted") {
    for (int r = 0; r < routes; ++r) {
      (*policy->mutable_weighted()
            ->mutable_weights())[absl::StrCat("route-", r)] = 1 + r;
    }
  } else {
    auto* cheapest = policy->mutable_cheapest_meeting_accuracy();
    cheapest->set_accuracy_floor(0.8);
    cheapest->set_min_feedback(20);
    cheapest->set_explore_share(0.1);
  }
  // The values a loaded config has.
  ApplyConfigDefaults(config);
  return config;
}

void BM_Decide(benchmark::State& state, const std::string& strategy) {
  const int routes = static_cast<int>(state.range(0));
  std::vector<double> priors;
  for (int r = 0; r < routes; ++r) priors.push_back(0.001 * (r + 1));
  auto engine = Engine::Create(MakeConfig(routes, strategy), priors);
  if (!engine.ok()) {
    state.SkipWithError(std::string(engine.status().message()).c_str());
    return;
  }
  // Live-looking statistics: every route judged, the last one thin.
  RouteStats stats(routes, 2, absl::ZeroDuration());
  absl::BitGen gen;
  for (int r = 0; r < routes; ++r) {
    int feedback = r == routes - 1 ? 5 : 50;
    for (int i = 0; i < feedback; ++i) {
      stats.RecordFeedback(r, 0, absl::Bernoulli(gen, 0.7 + 0.01 * (r % 25)));
    }
    for (int i = 0; i < 10; ++i)
      stats.RecordCompletion(r, 0, {100, 50, 0.001 * (r + 1), 0.1});
  }
  // A memory of 10,000 judged prompts for the contextual strategy.
  std::vector<float> embedding(256);
  std::normal_distribution<float> normal;
  std::mt19937 rng(3);
  for (int i = 0; i < 10000; ++i) {
    for (float& x : embedding) x = normal(rng);
    float norm = 0;
    for (float x : embedding) norm += x * x;
    for (float& x : embedding) x /= std::sqrt(norm);
    (*engine)->ObserveOutcome(0, i % routes, embedding, i % 3 != 0);
  }
  auto snapshot = stats.Snapshot();
  RequestFeatures features;
  features.unit_id = "user-42";
  features.embedding = embedding;
  double u = 0;
  for (auto _ : state) {
    features.uniform = u;
    u = u + 0.618034 >= 1 ? u - 0.381966 : u + 0.618034;
    auto decision = (*engine)->Decide(features, *snapshot);
    benchmark::DoNotOptimize(decision);
  }
}

BENCHMARK_CAPTURE(BM_Decide, weighted, std::string("weighted"))
    ->Arg(3)
    ->Arg(30);
BENCHMARK_CAPTURE(BM_Decide, best_utility, std::string("best_utility"))
    ->Arg(3)
    ->Arg(30);
BENCHMARK_CAPTURE(BM_Decide, thompson, std::string("thompson"))
    ->Arg(3)
    ->Arg(30);
BENCHMARK_CAPTURE(BM_Decide, contextual_10k_memory, std::string("contextual"))
    ->Arg(3)
    ->Arg(30);
BENCHMARK_CAPTURE(BM_Decide, cheapest_meeting_accuracy,
                  std::string("cheapest_meeting_accuracy"))
    ->Arg(3)
    ->Arg(30);

}  // namespace
}  // namespace arbiter::policy

BENCHMARK_MAIN();
