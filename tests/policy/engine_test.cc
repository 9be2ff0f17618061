#include "policy/engine.h"

#include <numeric>

#include "absl/random/random.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/context_memory.h"
#include "policy/route_stats.h"
#include "tests/policy/test_config.h"

namespace arbiter::policy {
namespace {

using ::arbiter::testing::ThreeRouteConfig;
using ::testing::DoubleNear;
using ::testing::HasSubstr;

constexpr int kExpensive = 0;
constexpr int kMid = 1;
constexpr int kCheap = 2;
const std::vector<double> kPriors = {0.010, 0.002, 0.001};

std::unique_ptr<Engine> MakeEngine(const v1::Config& config) {
  auto engine = Engine::Create(config, kPriors);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return *std::move(engine);
}

// Records n judged answers on (route, task) of which round(n * accuracy)
// were correct.
void Judge(RouteStats& stats, int route, int task, int n, double accuracy) {
  int correct = static_cast<int>(n * accuracy + 0.5);
  for (int i = 0; i < n; ++i) stats.RecordFeedback(route, task, i < correct);
}

double Sum(const std::vector<double>& values) {
  return std::accumulate(values.begin(), values.end(), 0.0);
}

TEST(EngineTest, RequestPinWinsOverThePolicy) {
  auto engine =
      MakeEngine(ThreeRouteConfig(R"pb(policy { pinned { route: "mid" } })pb"));
  RouteStats stats(3, 2);
  RequestFeatures features;
  features.pinned_route = kCheap;
  auto decision = engine->Decide(features, *stats.Snapshot());
  ASSERT_TRUE(decision.ok()) << decision.status();
  EXPECT_EQ(decision->route, kCheap);
  EXPECT_EQ(decision->policy, "pinned");
  EXPECT_EQ(decision->propensity, 1.0);
  EXPECT_THAT(decision->reason, HasSubstr("pinned by the request"));
}

TEST(EngineTest, PinnedPolicySendsEverythingToItsRoute) {
  auto engine =
      MakeEngine(ThreeRouteConfig(R"pb(policy { pinned { route: "mid" } })pb"));
  RouteStats stats(3, 2);
  for (double u : {0.0, 0.3, 0.99}) {
    RequestFeatures features;
    features.uniform = u;
    auto decision = engine->Decide(features, *stats.Snapshot());
    ASSERT_TRUE(decision.ok());
    EXPECT_EQ(decision->route, kMid);
    EXPECT_EQ(decision->propensity, 1.0);
  }
}

TEST(EngineTest, WeightedPropensitiesFollowWeightsAndSumToOne) {
  auto engine = MakeEngine(ThreeRouteConfig(
      R"pb(policy {
             weighted {
               weights { key: "expensive" value: 1 }
               weights { key: "cheap" value: 3 }
             }
           })pb"));
  RouteStats stats(3, 2);
  auto proposal = engine->Propose({}, *stats.Snapshot());
  ASSERT_TRUE(proposal.ok());
  EXPECT_DOUBLE_EQ(proposal->probability[kExpensive], 0.25);
  EXPECT_DOUBLE_EQ(proposal->probability[kMid], 0.0);
  EXPECT_DOUBLE_EQ(proposal->probability[kCheap], 0.75);
  EXPECT_DOUBLE_EQ(Sum(proposal->probability), 1.0);
}

TEST(EngineTest, WeightedAssignmentIsStickyPerUnitAndSplitsByWeight) {
  auto engine = MakeEngine(ThreeRouteConfig(
      R"pb(policy {
             weighted {
               weights { key: "expensive" value: 1 }
               weights { key: "cheap" value: 3 }
             }
           })pb"));
  RouteStats stats(3, 2);
  auto snapshot = stats.Snapshot();
  int cheap = 0;
  constexpr int kUnits = 20000;
  for (int unit = 0; unit < kUnits; ++unit) {
    std::string id = "user-" + std::to_string(unit);
    RequestFeatures features;
    features.unit_id = id;
    features.uniform = 0.01;
    auto first = engine->Decide(features, *snapshot);
    features.uniform = 0.99;
    auto second = engine->Decide(features, *snapshot);
    ASSERT_TRUE(first.ok() && second.ok());
    ASSERT_EQ(first->route, second->route) << "unit " << id << " moved";
    cheap += first->route == kCheap;
    EXPECT_DOUBLE_EQ(first->propensity, first->route == kCheap ? 0.75 : 0.25);
  }
  EXPECT_NEAR(static_cast<double>(cheap) / kUnits, 0.75, 0.015);
}

TEST(EngineTest, CheapestMeetingAccuracyPicksCheapestAboveFloor) {
  auto engine = MakeEngine(ThreeRouteConfig(
      R"pb(policy {
             cheapest_meeting_accuracy { accuracy_floor: 0.8 min_feedback: 20 }
           })pb"));
  RouteStats stats(3, 2, absl::ZeroDuration());
  Judge(stats, kExpensive, 0, 50, 0.92);
  Judge(stats, kMid, 0, 50, 0.86);
  Judge(stats, kCheap, 0, 50, 0.60);  // Cheapest, but below the floor.
  auto decision = engine->Decide({}, *stats.Snapshot());
  ASSERT_TRUE(decision.ok()) << decision.status();
  EXPECT_EQ(decision->route, kMid);
  EXPECT_EQ(decision->policy, "cheapest_meeting_accuracy");
  EXPECT_EQ(decision->propensity, 1.0);
  // No other task informs the prior: Beta(1 + 43, 1 + 7).
  double p = 1 - RegularizedIncompleteBeta(44, 8, 0.8);
  EXPECT_THAT(decision->reason,
              HasSubstr(absl::StrFormat(
                  "mid: cheapest with P(acc >= 0.80) = %.2f", p)));
}

TEST(EngineTest, FloorIsNeverViolatedWhenAllRoutesAreKnown) {
  auto engine = MakeEngine(ThreeRouteConfig(
      R"pb(policy { cheapest_meeting_accuracy { accuracy_floor: 0.8 } })pb"));
  RouteStats stats(3, 2, absl::ZeroDuration());
  Judge(stats, kExpensive, 0, 40, 0.9);
  Judge(stats, kMid, 0, 40, 0.7);
  Judge(stats, kCheap, 0, 40, 0.5);
  absl::BitGen gen;
  for (int i = 0; i < 2000; ++i) {
    RequestFeatures features;
    features.uniform = absl::Uniform<double>(gen, 0, 1);
    auto decision = engine->Decide(features, *stats.Snapshot());
    ASSERT_TRUE(decision.ok());
    ASSERT_EQ(decision->route, kExpensive);
  }
}

TEST(EngineTest, RoutesWithThinEvidenceGetTheExploreShare) {
  auto engine = MakeEngine(ThreeRouteConfig(
      R"pb(policy {
             cheapest_meeting_accuracy {
               accuracy_floor: 0.8
               min_feedback: 20
               explore_share: 0.1
             }
           })pb"));
  RouteStats stats(3, 2, absl::ZeroDuration());
  Judge(stats, kExpensive, 0, 50, 0.9);
  Judge(stats, kMid, 0, 50, 0.85);
  Judge(stats, kCheap, 0, 5, 1.0);  // Too little feedback to trust.
  auto snapshot = stats.Snapshot();
  auto proposal = engine->Propose({}, *snapshot);
  ASSERT_TRUE(proposal.ok());
  EXPECT_DOUBLE_EQ(proposal->probability[kMid], 0.9);
  EXPECT_DOUBLE_EQ(proposal->probability[kCheap], 0.1);
  EXPECT_DOUBLE_EQ(Sum(proposal->probability), 1.0);

  absl::BitGen gen;
  constexpr int kDraws = 20000;
  int explored = 0;
  for (int i = 0; i < kDraws; ++i) {
    RequestFeatures features;
    features.uniform = absl::Uniform<double>(gen, 0, 1);
    auto decision = engine->Decide(features, *snapshot);
    ASSERT_TRUE(decision.ok());
    if (decision->route == kCheap) {
      ++explored;
      EXPECT_DOUBLE_EQ(decision->propensity, 0.1);
      EXPECT_THAT(decision->reason, HasSubstr("exploring"));
    } else {
      ASSERT_EQ(decision->route, kMid);
      EXPECT_DOUBLE_EQ(decision->propensity, 0.9);
    }
  }
  // 0.1 +- 5 standard deviations of a binomial share over 20k draws.
  EXPECT_NEAR(static_cast<double>(explored) / kDraws, 0.1, 0.011);
}

TEST(EngineTest, WithoutAnyFeedbackTrafficIsSpreadEvenly) {
  auto engine = MakeEngine(ThreeRouteConfig(
      R"pb(policy { cheapest_meeting_accuracy { accuracy_floor: 0.8 } })pb"));
  RouteStats stats(3, 2);
  auto proposal = engine->Propose({}, *stats.Snapshot());
  ASSERT_TRUE(proposal.ok());
  for (double p : proposal->probability)
    EXPECT_THAT(p, DoubleNear(1.0 / 3, 1e-12));
}

TEST(EngineTest, MinFeedbackZeroTrustsEveryRouteAtOnce) {
  // Five judged answers each: thin under the default of 20, trusted at 0.
  RouteStats stats(3, 2, absl::ZeroDuration());
  for (int r : {kExpensive, kMid, kCheap}) Judge(stats, r, 0, 5, 1.0);
  auto trusting = MakeEngine(ThreeRouteConfig(
      R"pb(policy {
             cheapest_meeting_accuracy { accuracy_floor: 0.8 min_feedback: 0 }
           })pb"));
  auto proposal = trusting->Propose({}, *stats.Snapshot());
  ASSERT_TRUE(proposal.ok()) << proposal.status();
  EXPECT_DOUBLE_EQ(proposal->probability[kCheap], 1.0);
  auto cautious = MakeEngine(ThreeRouteConfig(
      R"pb(policy { cheapest_meeting_accuracy { accuracy_floor: 0.8 } })pb"));
  proposal = cautious->Propose({}, *stats.Snapshot());
  ASSERT_TRUE(proposal.ok()) << proposal.status();
  for (double p : proposal->probability) {
    EXPECT_THAT(p, DoubleNear(1.0 / 3, 1e-12));
  }
}

TEST(EngineTest, NoRouteMeetsFloorFallsBackToMostAccurate) {
  auto engine = MakeEngine(ThreeRouteConfig(
      R"pb(policy { cheapest_meeting_accuracy { accuracy_floor: 0.95 } })pb"));
  RouteStats stats(3, 2, absl::ZeroDuration());
  Judge(stats, kExpensive, 0, 40, 0.7);
  Judge(stats, kMid, 0, 40, 0.9);
  Judge(stats, kCheap, 0, 40, 0.5);
  auto decision = engine->Decide({}, *stats.Snapshot());
  ASSERT_TRUE(decision.ok());
  EXPECT_EQ(decision->route, kMid);
  EXPECT_THAT(decision->reason, HasSubstr("no route meets accuracy 0.95"));
}

TEST(EngineTest, StatisticsAreKeptApartPerTask) {
  auto engine = MakeEngine(ThreeRouteConfig(
      R"pb(policy {
             cheapest_meeting_accuracy { accuracy_floor: 0.8 explore_share: 0 }
           })pb"));
  RouteStats stats(3, 2, absl::ZeroDuration());
  for (int task : {0, 1}) {
    Judge(stats, kExpensive, task, 40, 0.9);
    Judge(stats, kMid, task, 40, task == 0 ? 0.9 : 0.5);
    Judge(stats, kCheap, task, 40, 0.3);
  }
  RequestFeatures features;
  features.task = 0;
  EXPECT_EQ(engine->Decide(features, *stats.Snapshot())->route, kMid);
  features.task = 1;
  EXPECT_EQ(engine->Decide(features, *stats.Snapshot())->route, kExpensive);
}

TEST(EngineTest, MaxCostExcludesExpensiveRoutes) {
  auto engine = MakeEngine(ThreeRouteConfig(
      R"pb(policy {
             weighted {
               weights { key: "expensive" value: 1 }
               weights { key: "mid" value: 1 }
             }
           })pb"));
  RouteStats stats(3, 2);
  RequestFeatures features;
  features.max_cost_usd = 0.005;  // Below the expensive route's prior.
  auto proposal = engine->Propose(features, *stats.Snapshot());
  ASSERT_TRUE(proposal.ok());
  EXPECT_EQ(proposal->probability[kExpensive], 0);
  EXPECT_EQ(proposal->probability[kMid], 1);
}

TEST(EngineTest, NoQualifyingRouteFailsWithReasons) {
  auto engine = MakeEngine(
      ThreeRouteConfig(R"pb(policy { pinned { route: "expensive" } })pb"));
  RouteStats stats(3, 2);
  RequestFeatures features;
  features.max_cost_usd = 0.0001;
  auto decision = engine->Decide(features, *stats.Snapshot());
  ASSERT_FALSE(decision.ok());
  EXPECT_EQ(decision.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(decision.status().message(),
              HasSubstr("expensive: expected cost $0.010000 > max_cost_usd"));
}

TEST(EngineTest, MinAccuracyExcludesRoutesMeasuredBelowIt) {
  auto engine = MakeEngine(ThreeRouteConfig(
      R"pb(policy {
             weighted {
               weights { key: "expensive" value: 1 }
               weights { key: "cheap" value: 1 }
             }
           })pb"));
  RouteStats stats(3, 2, absl::ZeroDuration());
  Judge(stats, kExpensive, 0, 40, 0.9);
  Judge(stats, kCheap, 0, 40, 0.6);
  RequestFeatures features;
  features.min_accuracy = 0.8;
  auto proposal = engine->Propose(features, *stats.Snapshot());
  ASSERT_TRUE(proposal.ok());
  EXPECT_EQ(proposal->probability[kExpensive], 1);
  EXPECT_EQ(proposal->probability[kCheap], 0);
}

TEST(EngineTest, MinAccuracyHoldsOnlyOnEvidence) {
  auto engine = MakeEngine(ThreeRouteConfig(
      R"pb(policy {
             weighted {
               weights { key: "expensive" value: 1 }
               weights { key: "cheap" value: 1 }
             }
           })pb"));
  RouteStats stats(3, 2, absl::ZeroDuration());
  Judge(stats, kExpensive, 0, 40, 0.95);
  Judge(stats, kCheap, 0, 5, 1.0);  // Perfect, but on 5 answers of 20.
  RequestFeatures features;
  features.min_accuracy = 0.9;
  auto proposal = engine->Propose(features, *stats.Snapshot());
  ASSERT_TRUE(proposal.ok()) << proposal.status();
  EXPECT_EQ(proposal->probability[kExpensive], 1);
  EXPECT_EQ(proposal->probability[kCheap], 0);
}

TEST(EngineTest, MinAccuracyWithoutEvidenceFailsSayingWhyPerRoute) {
  auto engine = MakeEngine(ThreeRouteConfig(
      R"pb(policy { cheapest_meeting_accuracy { accuracy_floor: 0.5 } })pb"));
  RouteStats stats(3, 2, absl::ZeroDuration());
  Judge(stats, kMid, 0, 3, 1.0);
  RequestFeatures features;
  features.min_accuracy = 1.0;
  auto decision = engine->Decide(features, *stats.Snapshot());
  ASSERT_FALSE(decision.ok()) << decision->reason;
  EXPECT_EQ(decision.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(decision.status().message(),
              HasSubstr("mid: 3 judged answers, fewer than the 20 needed to "
                        "hold min_accuracy 1.000"));
  EXPECT_THAT(decision.status().message(),
              HasSubstr("expensive: 0 judged answers"));
  EXPECT_THAT(decision.status().message(),
              HasSubstr("cheap: 0 judged answers"));
}

TEST(EngineTest, TaskPoliciesOverrideTheDefault) {
  auto engine = MakeEngine(ThreeRouteConfig(
      R"pb(policy { pinned { route: "expensive" } }
           task_policies {
             key: "b"
             value { pinned { route: "cheap" } }
           })pb"));
  RouteStats stats(3, 2);
  RequestFeatures features;
  features.task = 0;
  EXPECT_EQ(engine->Decide(features, *stats.Snapshot())->route, kExpensive);
  features.task = 1;
  EXPECT_EQ(engine->Decide(features, *stats.Snapshot())->route, kCheap);
}

TEST(EngineTest, ExpectedCostUsesMeasuredCostOnceThereIsEnough) {
  auto engine = MakeEngine(
      ThreeRouteConfig(R"pb(policy { pinned { route: "expensive" } })pb"));
  RouteStats stats(3, 2, absl::ZeroDuration());
  EXPECT_DOUBLE_EQ(engine->ExpectedCostUsd(kMid, 0, *stats.Snapshot()), 0.002);
  for (int i = 0; i < 5; ++i) {
    stats.RecordCompletion(kMid, 0, {100, 10, 0.0042, 0.1});
  }
  EXPECT_NEAR(engine->ExpectedCostUsd(kMid, 0, *stats.Snapshot()), 0.0042,
              1e-12);
  // Another task borrows the route's overall figure.
  EXPECT_NEAR(engine->ExpectedCostUsd(kMid, 1, *stats.Snapshot()), 0.0042,
              1e-12);
}

TEST(EngineTest, ConfidenceDemandsEnoughEvidenceAboveTheFloor) {
  auto engine = MakeEngine(ThreeRouteConfig(
      R"pb(policy {
             cheapest_meeting_accuracy {
               accuracy_floor: 0.8
               confidence: 0.95
               explore_share: 0
             }
           })pb"));
  RouteStats stats(3, 2, absl::ZeroDuration());
  Judge(stats, kExpensive, 0, 400, 0.95);
  Judge(stats, kCheap, 0, 25, 0.84);  // Above the floor, but not surely.
  auto snapshot = stats.Snapshot();
  EXPECT_LT(engine->Posterior(kCheap, 0, *snapshot).ProbabilityAtLeast(0.8),
            0.95);
  EXPECT_EQ(engine->Decide({}, *snapshot)->route, kExpensive);
  Judge(stats, kCheap, 0, 400, 0.9);  // Now it surely is.
  EXPECT_EQ(engine->Decide({}, *stats.Snapshot())->route, kCheap);
}

TEST(EngineTest, ThinTasksBorrowFromTheRoutesOtherTasks) {
  auto engine = MakeEngine(ThreeRouteConfig(
      R"pb(policy { pinned { route: "mid" } }
           statistics { prior_strength: 10 })pb"));
  RouteStats stats(3, 2, absl::ZeroDuration());
  Judge(stats, kMid, 1, 100, 0.9);
  Judge(stats, kMid, 0, 2, 0.0);
  BetaPosterior posterior = engine->Posterior(kMid, 0, *stats.Snapshot());
  // Beta(1 + 10 * 0.9, 1 + 10 * 0.1 + 2): the prior outweighs two answers.
  EXPECT_DOUBLE_EQ(posterior.alpha, 10);
  EXPECT_DOUBLE_EQ(posterior.beta, 4);
  EXPECT_NEAR(posterior.mean(), 10.0 / 14, 1e-12);
  // Without shrinkage the same two answers say the route is useless.
  auto plain = MakeEngine(ThreeRouteConfig(
      R"pb(policy { pinned { route: "mid" } }
           statistics { prior_strength: 0 })pb"));
  EXPECT_NEAR(plain->Posterior(kMid, 0, *stats.Snapshot()).mean(), 0.25, 1e-12);
}

TEST(EngineTest, BestUtilityTradesAccuracyForCost) {
  RouteStats stats(3, 2, absl::ZeroDuration());
  for (int r : {kExpensive, kMid, kCheap}) {
    Judge(stats, r, 0, 100, r == kExpensive ? 0.95 : r == kMid ? 0.9 : 0.6);
    double cost = r == kExpensive ? 0.01 : r == kMid ? 0.001 : 0.0001;
    for (int i = 0; i < 10; ++i)
      stats.RecordCompletion(r, 0, {10, 10, cost, 0.1});
  }
  auto free = MakeEngine(
      ThreeRouteConfig(R"pb(policy { best_utility { cost_weight: 0 } })pb"));
  auto decision = free->Decide({}, *stats.Snapshot());
  EXPECT_EQ(decision->route, kExpensive);
  EXPECT_EQ(decision->policy, "best_utility");
  // At 100 accuracy points per dollar, $0.009 more is worth 0.9 points: too
  // much for 5 points of accuracy.
  auto thrifty = MakeEngine(
      ThreeRouteConfig(R"pb(policy { best_utility { cost_weight: 100 } })pb"));
  decision = thrifty->Decide({}, *stats.Snapshot());
  EXPECT_EQ(decision->route, kMid);
  EXPECT_THAT(decision->reason, HasSubstr("mid: best utility"));
}

TEST(EngineTest, ThompsonPropensitiesFollowPosteriorUncertainty) {
  auto engine = MakeEngine(ThreeRouteConfig(R"pb(policy { thompson {} })pb"));
  RouteStats stats(3, 2, absl::ZeroDuration());
  Judge(stats, kExpensive, 0, 500, 0.9);
  Judge(stats, kMid, 0, 500, 0.5);
  // kCheap has no feedback: uniform posterior, often drawn above 0.9.
  RequestFeatures features;
  features.seed = 42;
  auto proposal = engine->Propose(features, *stats.Snapshot());
  ASSERT_TRUE(proposal.ok());
  EXPECT_NEAR(Sum(proposal->probability), 1.0, 1e-12);
  EXPECT_GT(proposal->probability[kExpensive], 0.8);
  EXPECT_LT(proposal->probability[kMid], 0.01);
  EXPECT_GT(proposal->probability[kCheap], 0.03);
  // The same seed gives the same propensities; the decision agrees with them.
  auto again = engine->Propose(features, *stats.Snapshot());
  EXPECT_EQ(proposal->probability, again->probability);
  features.uniform = 0.999;
  auto decision = engine->Decide(features, *stats.Snapshot());
  ASSERT_TRUE(decision.ok());
  EXPECT_EQ(decision->policy, "thompson");
  EXPECT_DOUBLE_EQ(decision->propensity,
                   proposal->probability[decision->route]);
}

TEST(EngineTest, BudgetRaisesThePriceOfCostWhenOverspending) {
  auto engine = MakeEngine(ThreeRouteConfig(
      R"pb(policy {
             budget {
               target_cost_usd: 0.001
               learning_rate: 0.05
               explore_share: 0
             }
           })pb"));
  RouteStats stats(3, 2, absl::ZeroDuration());
  for (int r : {kExpensive, kCheap}) {
    Judge(stats, r, 0, 100, r == kExpensive ? 0.95 : 0.8);
    double cost = r == kExpensive ? 0.01 : 0.0002;
    for (int i = 0; i < 10; ++i)
      stats.RecordCompletion(r, 0, {10, 10, cost, 0.1});
  }
  Judge(stats, kMid, 0, 100, 0.1);
  // Weight 0: the most accurate route, whatever it costs.
  EXPECT_EQ(engine->Decide({}, *stats.Snapshot())->route, kExpensive);
  // Spending ten times the budget pushes the weight up until the cheap route
  // wins.
  int steps = 0;
  while (engine->Decide({}, *stats.Snapshot())->route == kExpensive) {
    engine->ObserveCost(0, 0.01);
    ASSERT_LT(++steps, 1000) << "the budget never bit";
  }
  auto decision = engine->Decide({}, *stats.Snapshot());
  EXPECT_EQ(decision->route, kCheap);
  EXPECT_THAT(decision->reason, HasSubstr("budget $0.001000/request"));
  // Underspending lowers it again.
  for (int i = 0; i < 1000; ++i) engine->ObserveCost(0, 0.0);
  EXPECT_EQ(engine->Decide({}, *stats.Snapshot())->route, kExpensive);
}

TEST(EngineTest, ContextualRoutesSimilarPromptsByWhatWorkedForThem) {
  auto engine = MakeEngine(ThreeRouteConfig(
      R"pb(policy { contextual { k: 10 explore_share: 0 min_feedback: 20 } }
           retrieval { embedding_dim: 4 })pb"));
  ASSERT_TRUE(engine->UsesContext(0));
  RouteStats stats(3, 2, absl::ZeroDuration());
  // Two kinds of prompt in one task: on "password" prompts only kMid is
  // right, on "invoice" prompts only kCheap; overall both sit at 50%.
  const std::vector<float> password = {1, 0, 0, 0};
  const std::vector<float> invoice = {0, 1, 0, 0};
  for (int i = 0; i < 40; ++i) {
    for (int r : {kMid, kCheap}) {
      bool on_password = i % 2 == 0;
      double score = (r == kMid) == on_password ? 1 : 0;
      stats.RecordFeedback(r, 0, score);
      engine->ObserveOutcome(0, r, on_password ? password : invoice, score);
    }
    stats.RecordFeedback(kExpensive, 0, 0.4);
  }
  RequestFeatures features;
  features.embedding = password;
  auto decision = engine->Decide(features, *stats.Snapshot());
  ASSERT_TRUE(decision.ok()) << decision.status();
  EXPECT_EQ(decision->route, kMid);
  EXPECT_EQ(decision->policy, "contextual");
  EXPECT_THAT(decision->reason, HasSubstr("mid: best for similar prompts"));
  features.embedding = invoice;
  EXPECT_EQ(engine->Decide(features, *stats.Snapshot())->route, kCheap);
  // A prompt like neither falls back to the task-level figures.
  const std::vector<float> other = {0, 0, 1, 0};
  features.embedding = other;
  auto fallback = engine->Decide(features, *stats.Snapshot());
  ASSERT_TRUE(fallback.ok());
  EXPECT_NE(fallback->route, kExpensive);  // 0.4 < 0.5.
}

TEST(EngineTest, ContextMemoryForgetsTheOldestWhenFull) {
  ContextMemory memory(2, 3);
  const std::vector<float> a = {1, 0};
  const std::vector<float> b = {0, 1};
  memory.Add(a, 0, 1);
  memory.Add(a, 0, 1);
  memory.Add(a, 0, 1);
  memory.Add(b, 1, 0);  // Overwrites the first.
  EXPECT_EQ(memory.size(), 3);
  auto nearest = memory.Nearest(b, 3);
  ASSERT_EQ(nearest.size(), 3u);
  EXPECT_EQ(nearest[0].route, 1);
  EXPECT_FLOAT_EQ(nearest[0].similarity, 1);
  EXPECT_TRUE(memory.Nearest(std::vector<float>{1, 0, 0}, 3).empty())
      << "wrong dimension";
}

TEST(EngineTest, BudgetCostWeightIsExportedAndRestoredByPlace) {
  const v1::Config config = ThreeRouteConfig(
      R"pb(policy { budget { target_cost_usd: 0.001 learning_rate: 0.05 } }
           task_policies {
             key: "b"
             value { budget { target_cost_usd: 0.002 learning_rate: 0.1 } }
           })pb");
  auto engine = MakeEngine(config);
  for (int i = 0; i < 10; ++i) engine->ObserveCost(1, 0.02);  // Task b.
  auto weights = engine->CostWeights();
  ASSERT_EQ(weights.size(), 2u);
  EXPECT_EQ(weights[0].first, "policy");
  EXPECT_EQ(weights[1].first, "task_policies.b");
  EXPECT_GT(weights[1].second, weights[0].second);
  auto restarted = MakeEngine(config);
  for (const auto& [strategy, weight] : weights) {
    EXPECT_TRUE(restarted->RestoreCostWeight(strategy, weight));
  }
  EXPECT_EQ(restarted->CostWeights(), weights);
  EXPECT_FALSE(restarted->RestoreCostWeight("task_policies.a", 1));
}

TEST(EngineTest, ContextualMemoryIsRestoredFromStoredOutcomes) {
  const v1::Config config = ThreeRouteConfig(
      R"pb(policy { contextual { k: 10 explore_share: 0 min_feedback: 20 } }
           retrieval { embedding_dim: 4 })pb");
  auto engine = MakeEngine(config);
  EXPECT_EQ(engine->StrategyOf(0), "policy");
  EXPECT_GT(engine->ContextCapacity(0), 0);
  RouteStats stats(3, 2, absl::ZeroDuration());
  const std::vector<float> password = {1, 0, 0, 0};
  const std::vector<float> invoice = {0, 1, 0, 0};
  // Only what the memory holds tells kMid (password) from kCheap (invoice).
  for (int i = 0; i < 40; ++i) {
    for (int r : {kMid, kCheap}) {
      const bool on_password = i % 2 == 0;
      stats.RecordFeedback(r, 0, (r == kMid) == on_password ? 1 : 0);
    }
    stats.RecordFeedback(kExpensive, 0, 0.4);
  }
  auto restarted = MakeEngine(config);
  for (int i = 0; i < 40; ++i) {
    for (int r : {kMid, kCheap}) {
      const bool on_password = i % 2 == 0;
      ASSERT_TRUE(restarted->RestoreOutcome(
          "policy", r, on_password ? password : invoice,
          (r == kMid) == on_password ? 1 : 0));
    }
  }
  RequestFeatures features;
  features.embedding = password;
  EXPECT_EQ(restarted->Decide(features, *stats.Snapshot())->route, kMid);
  features.embedding = invoice;
  EXPECT_EQ(restarted->Decide(features, *stats.Snapshot())->route, kCheap);
  EXPECT_FALSE(restarted->RestoreOutcome("task_policies.a", 0, password, 1));
}

TEST(EngineTest, BudgetNeedsAPositiveTarget) {
  auto engine = Engine::Create(
      ThreeRouteConfig(R"pb(policy { budget { target_cost_usd: 0 } })pb"),
      kPriors);
  ASSERT_FALSE(engine.ok());
  EXPECT_THAT(engine.status().message(),
              HasSubstr("policy.budget.target_cost_usd"));
}

TEST(EngineTest, UnknownRouteInPolicyIsRejectedAtCreate) {
  auto engine = Engine::Create(
      ThreeRouteConfig(R"pb(policy { pinned { route: "nope" } })pb"), kPriors);
  ASSERT_FALSE(engine.ok());
  EXPECT_THAT(engine.status().message(), HasSubstr("policy.pinned.route"));
}

}  // namespace
}  // namespace arbiter::policy
