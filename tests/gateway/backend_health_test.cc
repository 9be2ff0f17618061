#include "gateway/resilience/backend_health.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gateway/resilience/retry_budget.h"
#include "gtest/gtest.h"

namespace arbiter {
namespace {

v1::OutlierDetection Settings() {
  v1::OutlierDetection settings;
  settings.set_consecutive_failures(3);
  settings.set_failure_rate_percent(50);
  settings.set_failure_rate_min_requests(10);
  settings.set_failure_rate_window_seconds(10);
  settings.set_base_ejection_seconds(2);
  settings.set_max_ejection_seconds(30);
  settings.set_probe_requests(2);
  return settings;
}

class BackendHealthTest : public ::testing::Test {
 protected:
  BackendHealthTest()
      : health_(Settings(), {[this](Ejection reason, absl::Duration length) {
                               ejections_.push_back({reason, length});
                             },
                             [this] { ++restored_; }}) {}

  void Attempt(AttemptResult result) {
    const bool probe = health_.Begin(now_);
    health_.End(probe, result, now_);
  }

  struct Ejected {
    Ejection reason;
    absl::Duration length;
  };
  absl::Time now_ = absl::FromUnixSeconds(1'000'000);
  std::vector<Ejected> ejections_;
  int restored_ = 0;
  BackendHealth health_;
};

TEST_F(BackendHealthTest, ConsecutiveFailuresEjectForTheBaseTime) {
  Attempt(AttemptResult::kFailed);
  Attempt(AttemptResult::kFailed);
  Attempt(AttemptResult::kOk);  // The run starts over.
  Attempt(AttemptResult::kFailed);
  Attempt(AttemptResult::kFailed);
  EXPECT_TRUE(health_.Available(now_));
  Attempt(AttemptResult::kFailed);
  ASSERT_EQ(ejections_.size(), 1u);
  EXPECT_EQ(ejections_[0].reason, Ejection::kConsecutiveFailures);
  EXPECT_EQ(ejections_[0].length, absl::Seconds(2));
  EXPECT_FALSE(health_.up());
  EXPECT_FALSE(health_.Available(now_));
  EXPECT_FALSE(health_.Available(now_ + absl::Milliseconds(1999)));
  EXPECT_EQ(health_.Describe(now_ + absl::Milliseconds(500)),
            "ejected for 1.5s more (3 failures in a row)");
  EXPECT_TRUE(health_.Available(now_ + absl::Seconds(2)));
}

TEST_F(BackendHealthTest, ProbesOneAtATimeDecideTheReturn) {
  for (int i = 0; i < 3; ++i) Attempt(AttemptResult::kFailed);
  now_ += absl::Seconds(2);
  ASSERT_TRUE(health_.Begin(now_));
  // While the probe is out nothing else goes there.
  EXPECT_FALSE(health_.Available(now_));
  EXPECT_FALSE(health_.Begin(now_));
  health_.End(true, AttemptResult::kOk, now_);
  EXPECT_FALSE(health_.up());
  EXPECT_TRUE(health_.Available(now_));
  Attempt(AttemptResult::kOk);
  EXPECT_TRUE(health_.up());
  EXPECT_EQ(restored_, 1);
  EXPECT_EQ(health_.Describe(now_), "in service");
}

TEST_F(BackendHealthTest, AFailedProbeEjectsAgainForTwiceAsLongUpToTheMax) {
  for (int i = 0; i < 3; ++i) Attempt(AttemptResult::kFailed);
  std::vector<absl::Duration> lengths = {absl::Seconds(2)};
  for (int round = 0; round < 5; ++round) {
    now_ += lengths.back();
    Attempt(AttemptResult::kFailed);
    ASSERT_EQ(ejections_.size(), lengths.size() + 1);
    EXPECT_EQ(ejections_.back().reason, Ejection::kProbeFailed);
    lengths.push_back(ejections_.back().length);
  }
  EXPECT_EQ(lengths,
            (std::vector<absl::Duration>{
                absl::Seconds(2), absl::Seconds(4), absl::Seconds(8),
                absl::Seconds(16), absl::Seconds(30), absl::Seconds(30)}));
}

TEST_F(BackendHealthTest, LongInServiceStartsTheEjectionTimeOver) {
  for (int i = 0; i < 3; ++i) Attempt(AttemptResult::kFailed);
  now_ += absl::Seconds(2);
  Attempt(AttemptResult::kOk);
  Attempt(AttemptResult::kOk);
  ASSERT_TRUE(health_.up());
  // Soon after: twice the base.
  for (int i = 0; i < 3; ++i) Attempt(AttemptResult::kFailed);
  EXPECT_EQ(ejections_.back().length, absl::Seconds(4));
  now_ += absl::Seconds(4);
  Attempt(AttemptResult::kOk);
  Attempt(AttemptResult::kOk);
  // A max_ejection_seconds in service later: the base again.
  now_ += absl::Seconds(30);
  for (int i = 0; i < 3; ++i) Attempt(AttemptResult::kFailed);
  EXPECT_EQ(ejections_.back().length, absl::Seconds(2));
}

TEST_F(BackendHealthTest, AFailureRateOverTheWindowEjects) {
  // Alternating: never 3 in a row, but over half fail once 10 are seen.
  for (int i = 0; i < 9; ++i) {
    Attempt(i % 3 == 2 ? AttemptResult::kOk : AttemptResult::kFailed);
    now_ += absl::Milliseconds(100);
  }
  ASSERT_TRUE(ejections_.empty());
  Attempt(AttemptResult::kFailed);
  ASSERT_EQ(ejections_.size(), 1u);
  EXPECT_EQ(ejections_[0].reason, Ejection::kFailureRate);
}

TEST_F(BackendHealthTest, OldAttemptsLeaveTheWindow) {
  for (int i = 0; i < 9; ++i) {
    Attempt(i % 3 == 2 ? AttemptResult::kOk : AttemptResult::kFailed);
  }
  // Two windows later the old failures count for nothing.
  now_ += absl::Seconds(25);
  Attempt(AttemptResult::kFailed);
  EXPECT_TRUE(ejections_.empty());
  EXPECT_TRUE(health_.up());
}

TEST_F(BackendHealthTest, RefusalsAndCancelsSayNothing) {
  for (int i = 0; i < 20; ++i) Attempt(AttemptResult::kNeutral);
  Attempt(AttemptResult::kFailed);
  Attempt(AttemptResult::kNeutral);
  Attempt(AttemptResult::kFailed);
  EXPECT_TRUE(health_.up());
  Attempt(AttemptResult::kFailed);
  EXPECT_FALSE(health_.up());
}

TEST_F(BackendHealthTest, AttemptsStartedBeforeAnEjectionDoNotExtendIt) {
  for (int i = 0; i < 3; ++i) Attempt(AttemptResult::kFailed);
  ASSERT_EQ(ejections_.size(), 1u);
  health_.End(false, AttemptResult::kFailed, now_);
  health_.End(false, AttemptResult::kOk, now_);
  EXPECT_EQ(ejections_.size(), 1u);
  EXPECT_FALSE(health_.up());
}

TEST(BackendHealthConcurrencyTest, ManyThreadsEjectAndRestoreConsistently) {
  v1::OutlierDetection settings = Settings();
  settings.set_base_ejection_seconds(0.001);
  settings.set_max_ejection_seconds(0.002);
  settings.set_probe_requests(1);
  std::atomic<int> ejected{0};
  std::atomic<int> restored{0};
  BackendHealth health(settings, {[&](Ejection, absl::Duration) { ++ejected; },
                                  [&] { ++restored; }});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        const absl::Time now = absl::Now();
        if (!health.Available(now)) continue;
        const bool probe = health.Begin(now);
        health.End(
            probe,
            (i + t) % 4 == 0 ? AttemptResult::kOk : AttemptResult::kFailed,
            absl::Now());
        (void)health.Describe(now);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_GT(ejected.load(), 0);
  // Each return follows an ejection; the last state matches the count.
  EXPECT_LE(restored.load(), ejected.load());
  EXPECT_EQ(health.up(), restored.load() == ejected.load());
}

TEST(RetryBudgetTest, AllowsTheMinimumThenAShareOfTheRequestsInFlight) {
  v1::RetryBudget settings;
  settings.set_budget_percent(20);
  settings.set_min_concurrent(2);
  RetryBudget budget(settings);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(budget.TryRequestStarted(1000));
  EXPECT_TRUE(budget.TryStartRetry());
  EXPECT_TRUE(budget.TryStartRetry());
  EXPECT_FALSE(budget.TryStartRetry());  // 20% of 5 is 1; the minimum is 2.
  for (int i = 0; i < 15; ++i) ASSERT_TRUE(budget.TryRequestStarted(1000));
  EXPECT_TRUE(budget.TryStartRetry());  // 20% of 20 is 4.
  EXPECT_TRUE(budget.TryStartRetry());
  EXPECT_FALSE(budget.TryStartRetry());
  EXPECT_EQ(budget.retries_in_flight(), 4);
  budget.RetryEnded();
  EXPECT_TRUE(budget.TryStartRetry());
}

TEST(RetryBudgetTest, ZeroPercentAndNoMinimumAllowsNone) {
  v1::RetryBudget settings;
  settings.set_budget_percent(0);
  settings.set_min_concurrent(0);
  RetryBudget budget(settings);
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(budget.TryRequestStarted(1000));
  EXPECT_FALSE(budget.TryStartRetry());
}

TEST(RetryBudgetTest, RefusesRequestsBeyondMaxInFlightUntilOneEnds) {
  RetryBudget budget(v1::RetryBudget{});
  EXPECT_TRUE(budget.TryRequestStarted(2));
  EXPECT_TRUE(budget.TryRequestStarted(2));
  EXPECT_FALSE(budget.TryRequestStarted(2));
  EXPECT_EQ(budget.requests_in_flight(), 2);  // The refusal left no trace.
  budget.RequestEnded();
  EXPECT_TRUE(budget.TryRequestStarted(2));
}

}  // namespace
}  // namespace arbiter
