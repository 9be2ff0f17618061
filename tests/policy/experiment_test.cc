#include "policy/experiment.h"

#include <random>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

namespace arbiter::policy {
namespace {

using ::testing::HasSubstr;

v1::Experiment TwoArms(double a, double b) {
  v1::Experiment experiment;
  google::protobuf::TextFormat::ParseFromString(
      absl::StrFormat(R"pb(
                        name: "prompt-vs-rag"
                        salt: "s1"
                        alpha: 0.05
                        arms { name: "A" weight: %f route: "prompted" }
                        arms { name: "B" weight: %f route: "rag" }
                      )pb",
                      a, b),
      &experiment);
  return experiment;
}

TEST(ExperimentTest, AssignmentIsStickyAndFollowsWeights) {
  v1::Experiment experiment = TwoArms(1, 3);
  int b = 0;
  constexpr int kUnits = 100000;
  for (int u = 0; u < kUnits; ++u) {
    std::string unit = "user-" + std::to_string(u);
    int bucket = ExperimentBucket("s1", unit);
    ASSERT_GE(bucket, 0);
    ASSERT_LT(bucket, kExperimentBuckets);
    ASSERT_EQ(bucket, ExperimentBucket("s1", unit));
    b += ArmForBucket(experiment, bucket);
  }
  EXPECT_NEAR(static_cast<double>(b) / kUnits, 0.75, 0.01);
}

TEST(ExperimentTest, ChangingWeightsMovesOnlyTheUnitsAtTheBorder) {
  v1::Experiment before = TwoArms(50, 50);
  v1::Experiment after = TwoArms(60, 40);
  int moved = 0;
  constexpr int kUnits = 50000;
  for (int u = 0; u < kUnits; ++u) {
    int bucket = ExperimentBucket("s1", "u" + std::to_string(u));
    int was = ArmForBucket(before, bucket);
    int now = ArmForBucket(after, bucket);
    if (was != now) {
      ++moved;
      EXPECT_EQ(was, 1) << "only B units move to A";
    }
  }
  EXPECT_NEAR(static_cast<double>(moved) / kUnits, 0.10, 0.01);
}

TEST(ExperimentTest, AnotherSaltReshuffles) {
  int same = 0;
  for (int u = 0; u < 10000; ++u) {
    std::string unit = "u" + std::to_string(u);
    same += (ExperimentBucket("s1", unit) < 5000) ==
            (ExperimentBucket("s2", unit) < 5000);
  }
  EXPECT_NEAR(same / 10000.0, 0.5, 0.03);
}

TEST(ExperimentTest, WilsonIntervalMatchesTheFormula) {
  Interval interval = WilsonInterval(8, 10, 0.05);
  EXPECT_NEAR(interval.low, 0.4902, 1e-4);
  EXPECT_NEAR(interval.high, 0.9433, 1e-4);
  interval = WilsonInterval(0, 20, 0.05);
  EXPECT_EQ(interval.low, 0);
  EXPECT_NEAR(interval.high, 0.1611, 1e-4);
}

TEST(ExperimentTest, ChiSquareSurvivalAtKnownCriticalValues) {
  EXPECT_NEAR(ChiSquareSurvival(3.841459, 1), 0.05, 1e-5);
  EXPECT_NEAR(ChiSquareSurvival(5.991465, 2), 0.05, 1e-5);
  EXPECT_NEAR(ChiSquareSurvival(0, 3), 1, 1e-12);
}

TEST(ExperimentTest, SequentialTestFindsARealDifference) {
  SequentialTest test = CompareProportions(700, 1000, 900, 1000, 0.05);
  EXPECT_TRUE(test.significant);
  EXPECT_NEAR(test.difference, 0.2, 1e-12);
  EXPECT_LT(test.confidence.low, 0.2);
  EXPECT_GT(test.confidence.low, 0);
  EXPECT_GT(test.confidence.high, 0.2);
  SequentialTest none = CompareProportions(80, 100, 82, 100, 0.05);
  EXPECT_FALSE(none.significant);
  EXPECT_LT(none.confidence.low, 0);
  EXPECT_GT(none.confidence.high, 0);
}

// Peeking after every 50 answers of an A/A test must not inflate false
// positives beyond alpha: the point of an always-valid test.
TEST(ExperimentTest, PeekingAtAnAATestKeepsFalsePositivesUnderAlpha) {
  std::mt19937_64 rng(11);
  std::bernoulli_distribution answer(0.8);
  constexpr int kExperiments = 300;
  int false_positives = 0;
  for (int e = 0; e < kExperiments; ++e) {
    double a = 0, b = 0;
    for (int n = 1; n <= 4000; ++n) {
      a += answer(rng);
      b += answer(rng);
      if (n % 50 == 0 && CompareProportions(a, n, b, n, 0.05).significant) {
        ++false_positives;
        break;
      }
    }
  }
  EXPECT_LE(static_cast<double>(false_positives) / kExperiments, 0.05);
}

TEST(ExperimentTest, AnalysisReportsArmsSrmGuardrailsAndAVerdict) {
  v1::Experiment experiment = TwoArms(1, 1);
  experiment.mutable_guardrails()->set_max_latency_p95_seconds(0.5);
  std::vector<ArmTally> tallies(2);
  for (int i = 0; i < 2000; ++i) {
    ArmTally& a = tallies[0];
    ++a.requests;
    a.cost_usd += 0.001;
    a.latency.Add(0.1);
    ++a.feedback;
    a.score += i % 10 < 7;  // 70%.
    ArmTally& b = tallies[1];
    ++b.requests;
    b.cost_usd += 0.002;
    b.latency.Add(0.9);
    ++b.feedback;
    b.score += i % 10 < 9;  // 90%.
  }
  ExperimentAnalysis analysis = AnalyzeExperiment(experiment, tallies);
  ASSERT_EQ(analysis.arms.size(), 2u);
  EXPECT_EQ(analysis.control, "A");
  EXPECT_NEAR(analysis.arms[0].accuracy, 0.7, 1e-12);
  EXPECT_NEAR(analysis.arms[1].cost_per_correct_usd, 0.002 / 0.9, 1e-12);
  EXPECT_FALSE(analysis.srm_detected);
  ASSERT_TRUE(analysis.arms[1].versus_control.has_value());
  EXPECT_TRUE(analysis.arms[1].versus_control->significant);
  EXPECT_THAT(analysis.verdict, HasSubstr("B beats A on accuracy by +20.0 pp"));
  EXPECT_THAT(analysis.verdict, HasSubstr("cost +$0.001000/request"));
  EXPECT_THAT(analysis.verdict, HasSubstr("SRM ok"));
  EXPECT_THAT(analysis.verdict, HasSubstr("guardrail: B latency p95"));

  tallies[0].requests = 1200;  // 1200 vs 2000 at 50/50.
  analysis = AnalyzeExperiment(experiment, tallies);
  EXPECT_TRUE(analysis.srm_detected);
  EXPECT_THAT(analysis.verdict, HasSubstr("SRM detected"));
}

}  // namespace
}  // namespace arbiter::policy
