#include "policy/replay.h"

#include "gateway/config.h"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

namespace arbiter::policy {
namespace {

using ::testing::HasSubstr;

// Two routes: "small" is cheap, always right on easy requests and right on
// 3 hard ones in 10; "large" costs 20x more and is right on 19 in 20 of both.
v1::Config TwoRouteConfig(const std::string& policy) {
  v1::Config config;
  google::protobuf::TextFormat::ParseFromString(
      R"pb(
        tasks: "easy"
        tasks: "hard"
        default_task: "easy"
        routes {
          name: "small"
          kind: ROUTE_KIND_FINE_TUNED
          pricing { input_usd_per_mtok: 1 output_usd_per_mtok: 2 }
          max_output_tokens: 100
        }
        routes {
          name: "large"
          kind: ROUTE_KIND_PROMPTED
          pricing { input_usd_per_mtok: 20 output_usd_per_mtok: 40 }
          max_output_tokens: 100
        }
      )pb",
      &config);
  google::protobuf::TextFormat::MergeFromString(policy, &config);
  ApplyConfigDefaults(config);
  return config;
}

std::vector<LoggedRequest> Log(int n) {
  std::vector<LoggedRequest> log;
  for (int i = 0; i < n; ++i) {
    LoggedRequest item;
    item.id = std::to_string(i);
    item.task = i % 2 ? "hard" : "easy";
    bool small_right = item.task == "easy" || (i / 2) % 10 < 3;
    bool large_right = i % 20 != 7;
    item.outcomes["small"] = {small_right ? 1.0 : 0.0, 1000, 100, 0.1};
    item.outcomes["large"] = {large_right ? 1.0 : 0.0, 1000, 100, 0.5};
    log.push_back(item);
  }
  return log;
}

// Per request: small = 1000 * 1e-6 + 100 * 2e-6 = 0.0012; large = 0.024.
constexpr double kSmallCost = 0.0012;
constexpr double kLargeCost = 0.024;

TEST(ReplayTest, SingleRoutesAndOracleAreExact) {
  auto report = Replay(
      TwoRouteConfig(R"pb(policy { pinned { route: "small" } })pb"), Log(400));
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->routes.size(), 2u);
  const ReplayResult& large = report->routes[0];  // Sorted by name.
  const ReplayResult& small = report->routes[1];
  EXPECT_EQ(small.name, "small");
  EXPECT_DOUBLE_EQ(small.accuracy, (200 + 60) / 400.0);
  EXPECT_NEAR(small.total_cost_usd, 400 * kSmallCost, 1e-12);
  EXPECT_NEAR(small.cost_per_correct_usd, 400 * kSmallCost / 260, 1e-12);
  EXPECT_DOUBLE_EQ(large.accuracy, 380 / 400.0);
  EXPECT_NEAR(large.cost_per_request_usd, kLargeCost, 1e-12);
  // The oracle takes small whenever it is right, else large if that is
  // right; the 20 requests both get wrong go to the cheaper small.
  EXPECT_DOUBLE_EQ(report->oracle.accuracy, (400 - 20) / 400.0);
  EXPECT_NEAR(report->oracle.traffic_share.at("small"), (260 + 20) / 400.0,
              1e-12);
}

TEST(ReplayTest, PinnedPoliciesSitAtTheEndsOfThePgrScale) {
  auto weak = Replay(
      TwoRouteConfig(R"pb(policy { pinned { route: "small" } })pb"), Log(400));
  ASSERT_TRUE(weak.ok());
  ASSERT_TRUE(weak->routing.has_value());
  EXPECT_EQ(weak->routing->weak_route, "small");
  EXPECT_EQ(weak->routing->strong_route, "large");
  EXPECT_DOUBLE_EQ(weak->routing->pgr, 0);
  EXPECT_DOUBLE_EQ(weak->routing->strong_share, 0);
  auto strong = Replay(
      TwoRouteConfig(R"pb(policy { pinned { route: "large" } })pb"), Log(400));
  ASSERT_TRUE(strong.ok());
  EXPECT_DOUBLE_EQ(strong->routing->pgr, 1);
  EXPECT_DOUBLE_EQ(strong->routing->strong_share, 1);
}

TEST(ReplayTest, LearningPolicyBeatsRandomRoutingOnTheSweep) {
  auto report = Replay(
      // Enough evidence per task before trusting it: 30 answers outweigh the
      // prior borrowed from the route's other task (10).
      TwoRouteConfig(R"pb(policy {
                            best_utility { cost_weight: 10 min_feedback: 30 }
                          })pb"),
      Log(2000));
  ASSERT_TRUE(report.ok()) << report.status();
  const RoutingMetrics& m = *report->routing;
  // At $1 = 10 points, large's extra $0.0228 costs 0.23 points: worth it on
  // hard requests (+0.65), not on easy ones (-0.05). So easy -> small, hard
  // -> large: most of the gain for half the strong calls.
  EXPECT_GT(m.pgr, 0.85);
  EXPECT_LT(m.strong_share, 0.6);
  EXPECT_GT(report->policy.traffic_share.at("small"), 0.4);
  // Random routing has APGR 0.5; the best possible here is about 0.7 (all
  // hard requests to large for PGR ~0.9 at 50% strong calls).
  EXPECT_GT(m.apgr, 0.6);
  ASSERT_TRUE(m.cpt50.has_value());
  EXPECT_LT(*m.cpt50, 0.5);
  EXPECT_FALSE(m.curve.empty());
}

TEST(ReplayTest, SameSeedSameReport) {
  auto config = TwoRouteConfig(R"pb(policy { thompson { cost_weight: 5 } })pb");
  auto a = Replay(config, Log(300), 9);
  auto b = Replay(config, Log(300), 9);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->policy.accuracy, b->policy.accuracy);
  EXPECT_EQ(a->policy.traffic_share, b->policy.traffic_share);
  EXPECT_EQ(a->routing->apgr, b->routing->apgr);
}

TEST(ReplayTest, OnlyRoutesWithALoggedOutcomeAreChosen) {
  std::vector<LoggedRequest> log = Log(50);
  for (LoggedRequest& item : log) item.outcomes.erase("large");
  auto report = Replay(TwoRouteConfig(R"pb(policy { thompson {} })pb"), log);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_DOUBLE_EQ(report->policy.traffic_share.at("small"), 1.0);
  EXPECT_FALSE(report->routing.has_value());
}

TEST(ReplayTest, UnknownRouteOrTaskNamesTheRequest) {
  std::vector<LoggedRequest> log = Log(5);
  log[3].outcomes["medium"] = {1, 1, 1, 0};
  auto report = Replay(TwoRouteConfig(R"pb(policy { thompson {} })pb"), log);
  ASSERT_FALSE(report.ok());
  EXPECT_THAT(
      report.status().message(),
      HasSubstr("request 4 (id \"3\"): route \"medium\" is not in the config"));
  log = Log(5);
  log[1].task = "poetry";
  report = Replay(TwoRouteConfig(R"pb(policy { thompson {} })pb"), log);
  ASSERT_FALSE(report.ok());
  EXPECT_THAT(report.status().message(), HasSubstr("task \"poetry\""));
}

}  // namespace
}  // namespace arbiter::policy
