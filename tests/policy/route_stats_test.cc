#include "policy/route_stats.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "policy/context_memory.h"

namespace arbiter::policy {
namespace {

TEST(RouteStatsTest, PublishMakesUpdatesVisible) {
  RouteStats stats(2, 2, absl::Hours(1));
  stats.RecordFeedback(0, 0, 1);  // The first update publishes at once.
  stats.RecordCompletion(1, 0, {100, 20, 0.5, 0.25});
  EXPECT_EQ(stats.Snapshot()->Cell(1, 0).requests, 0) << "published early";
  stats.Publish();
  const RouteTaskCounters& cell = stats.Snapshot()->Cell(1, 0);
  EXPECT_EQ(cell.requests, 1);
  EXPECT_EQ(cell.input_tokens, 100);
  EXPECT_EQ(cell.output_tokens, 20);
  EXPECT_DOUBLE_EQ(cell.cost_usd, 0.5);
  EXPECT_DOUBLE_EQ(cell.latency_seconds_sum, 0.25);
}

TEST(RouteStatsTest, PublishIfChangedPublishesOnlyChanges) {
  RouteStats stats(1, 1, absl::Hours(1));
  auto before = stats.Snapshot();
  stats.PublishIfChanged();
  EXPECT_EQ(stats.Snapshot(), before);
  stats.RecordFeedback(0, 0, 1);
  stats.PublishIfChanged();
  EXPECT_EQ(stats.Snapshot()->Cell(0, 0).feedback_count, 1);
}

TEST(RouteStatsTest, AccuracyAndCostFiguresFollowTheirDefinitions) {
  RouteStats stats(1, 2, absl::ZeroDuration());
  stats.RecordCompletion(0, 1, {0, 0, 0.002, 0.1});
  stats.RecordCompletion(0, 1, {0, 0, 0.004, 0.1});
  stats.RecordError(0, 1, 0.5);
  stats.RecordFeedback(0, 1, 1);
  stats.RecordFeedback(0, 1, 0);
  stats.RecordFeedback(0, 1, 0.5);
  const RouteTaskCounters& cell = stats.Snapshot()->Cell(0, 1);
  EXPECT_EQ(cell.requests, 3);
  EXPECT_EQ(cell.errors, 1);
  EXPECT_DOUBLE_EQ(cell.accuracy(), 0.5);
  EXPECT_DOUBLE_EQ(cell.cost_per_request_usd(), 0.003);  // Errors cost nothing.
  EXPECT_DOUBLE_EQ(cell.cost_per_correct_usd(), 0.006);
  EXPECT_EQ(stats.Snapshot()->RouteTotal(0).requests, 3);
  EXPECT_EQ(stats.Snapshot()->Cell(0, 0).requests, 0);
}

TEST(RouteStatsTest, NoFeedbackMeansNoCostPerCorrect) {
  RouteTaskCounters cell;
  cell.requests = 3;
  cell.cost_usd = 1;
  EXPECT_EQ(cell.accuracy(), 0);
  EXPECT_EQ(cell.cost_per_correct_usd(), 0);
}

TEST(RouteStatsTest, RecentEvidenceDecaysWithTheHalfLife) {
  StatsOptions options;
  options.publish_interval = absl::ZeroDuration();
  options.half_life = absl::Hours(1);
  RouteStats stats(1, 1, options);
  absl::Time t0 = absl::FromUnixSeconds(1'000'000);
  stats.RecordFeedback(0, 0, 1, t0);
  stats.RecordFeedback(0, 0, 0, t0);
  stats.RecordCompletion(0, 0, {10, 10, 0.004, 0.2}, t0);
  stats.Publish(t0 + absl::Hours(1));
  const RouteTaskCounters& cell = stats.Snapshot()->Cell(0, 0);
  EXPECT_NEAR(cell.recent.feedback, 1.0, 1e-12);  // Two answers, half weight.
  EXPECT_NEAR(cell.recent.score, 0.5, 1e-12);
  EXPECT_NEAR(cell.recent.cost_per_request_usd(), 0.004,
              1e-15);                 // Ratios hold.
  EXPECT_EQ(cell.feedback_count, 2);  // Lifetime totals never decay.
  // New evidence counts in full next to the faded old.
  stats.RecordFeedback(0, 0, 1, t0 + absl::Hours(2));
  stats.Publish(t0 + absl::Hours(2));
  EXPECT_NEAR(stats.Snapshot()->Cell(0, 0).recent.feedback, 1.5, 1e-12);
  EXPECT_NEAR(stats.Snapshot()->Cell(0, 0).recent.score, 1.25, 1e-12);
}

TEST(RouteStatsTest, LatencyQuantilesComeFromTheSketch) {
  RouteStats stats(1, 1, absl::ZeroDuration());
  for (int i = 1; i <= 100; ++i) {
    stats.RecordCompletion(0, 0, {1, 1, 0, i * 0.01});
  }
  const RouteTaskCounters& cell = stats.Snapshot()->Cell(0, 0);
  EXPECT_NEAR(cell.latency.Quantile(0.5), 0.50, 0.0101);
  EXPECT_NEAR(cell.latency.Quantile(0.99), 0.99, 0.0101);
}

// Run under TSan: writers and lock-free readers at once.
TEST(RouteStatsTest, ConcurrentWritersAndReadersAgreeOnTotals) {
  RouteStats stats(3, 2, absl::Microseconds(50));
  constexpr int kPerThread = 5000;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&stats, t] {
      for (int i = 0; i < kPerThread; ++i) {
        stats.RecordCompletion(t % 3, i % 2, {1, 1, 0.001, 0.01});
        stats.RecordFeedback(t % 3, i % 2, 1);
      }
    });
  }
  threads.emplace_back([&stats] {
    int64_t last = 0;
    for (int i = 0; i < 20000; ++i) {
      int64_t now = 0;
      auto snapshot = stats.Snapshot();
      for (int r = 0; r < 3; ++r) now += snapshot->RouteTotal(r).requests;
      ASSERT_GE(now, last) << "a snapshot went backwards";
      last = now;
    }
  });
  for (auto& thread : threads) thread.join();
  stats.Publish();
  int64_t requests = 0;
  int64_t feedback = 0;
  for (int r = 0; r < 3; ++r) {
    requests += stats.Snapshot()->RouteTotal(r).requests;
    feedback += stats.Snapshot()->RouteTotal(r).feedback_count;
  }
  EXPECT_EQ(requests, 4 * kPerThread);
  EXPECT_EQ(feedback, 4 * kPerThread);
}

// Run under TSan: the contextual memory read and written at once.
TEST(ContextMemoryTest, ConcurrentAddsAndSearches) {
  ContextMemory memory(8, 500);
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&memory, t] {
      std::vector<float> v(8, 0);
      for (int i = 0; i < 2000; ++i) {
        std::fill(v.begin(), v.end(), 0);
        v[(i + t) % 8] = 1;
        if (t == 0) {
          memory.Add(v, i % 3, i % 2);
        } else {
          auto nearest = memory.Nearest(v, 5);
          ASSERT_LE(nearest.size(), 5u);
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(memory.size(), 500);
}

TEST(RouteStatsTest, RestoredCellsGiveTheSameCellsAndTotals) {
  const absl::Time t0 = absl::FromUnixSeconds(1'800'000'000);
  StatsOptions options{absl::Milliseconds(10), absl::Hours(1)};
  RouteStats before(2, 3, options);
  for (int i = 0; i < 30; ++i) {
    before.RecordCompletion(i % 2, i % 3, {100, 10 + i, 0.01 * i, 0.1 * i},
                            t0 + absl::Seconds(i));
    before.RecordFeedback(i % 2, i % 3, i % 4 == 0, t0 + absl::Seconds(i));
    if (i % 7 == 0) before.RecordError(1, 2, 0.5, t0 + absl::Seconds(i));
  }
  const absl::Time stored_at = t0 + absl::Minutes(1);
  before.Publish(stored_at);
  std::shared_ptr<const StatsSnapshot> a = before.Snapshot();
  std::vector<RouteStats::StoredCell> cells;
  for (int r = 0; r < 2; ++r) {
    for (int t = 0; t < 3; ++t) cells.push_back({r, t, a->Cell(r, t)});
  }
  RouteStats after(2, 3, options);
  after.Restore(cells, stored_at);
  std::shared_ptr<const StatsSnapshot> b = after.Snapshot();
  auto same = [](const RouteTaskCounters& x, const RouteTaskCounters& y) {
    EXPECT_EQ(x.requests, y.requests);
    EXPECT_EQ(x.errors, y.errors);
    EXPECT_EQ(x.output_tokens, y.output_tokens);
    EXPECT_NEAR(x.cost_usd, y.cost_usd, 1e-12);
    EXPECT_EQ(x.feedback_count, y.feedback_count);
    EXPECT_NEAR(x.recent.completions, y.recent.completions, 1e-9);
    EXPECT_NEAR(x.recent.score, y.recent.score, 1e-9);
    EXPECT_NEAR(x.recent.feedback, y.recent.feedback, 1e-9);
    EXPECT_EQ(x.latency.count(), y.latency.count());
    EXPECT_EQ(x.latency.Quantile(0.9), y.latency.Quantile(0.9));
  };
  for (int r = 0; r < 2; ++r) {
    for (int t = 0; t < 3; ++t) same(a->Cell(r, t), b->Cell(r, t));
    same(a->RouteTotal(r), b->RouteTotal(r));
  }
  // Evidence keeps decaying from where it was stored.
  after.Publish(stored_at + absl::Hours(1));
  EXPECT_NEAR(after.Snapshot()->Cell(0, 0).recent.completions,
              a->Cell(0, 0).recent.completions / 2, 1e-9);
}

}  // namespace
}  // namespace arbiter::policy
