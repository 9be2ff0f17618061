#include "policy/latency_sketch.h"

#include <algorithm>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace arbiter::policy {
namespace {

double Exact(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  return values[static_cast<size_t>(q * (values.size() - 1))];
}

TEST(LatencySketchTest, QuantilesAreWithinTheRelativeAccuracy) {
  std::mt19937_64 rng(1);
  std::lognormal_distribution<double> latency(-2.0, 0.8);  // ~135 ms median.
  LatencySketch sketch(0.01);
  std::vector<double> values;
  for (int i = 0; i < 50000; ++i) {
    double v = latency(rng);
    values.push_back(v);
    sketch.Add(v);
  }
  for (double q : {0.01, 0.5, 0.9, 0.95, 0.99, 0.999}) {
    double exact = Exact(values, q);
    EXPECT_NEAR(sketch.Quantile(q), exact, 0.0101 * exact) << "q=" << q;
  }
  EXPECT_EQ(sketch.count(), 50000);
}

TEST(LatencySketchTest, MergeEqualsOneSketchOfEverything) {
  LatencySketch a, b, all;
  for (int i = 1; i <= 1000; ++i) {
    double v = i * 0.001;
    (i % 2 ? a : b).Add(v);
    all.Add(v);
  }
  a.Merge(b);
  for (double q : {0.1, 0.5, 0.99}) EXPECT_EQ(a.Quantile(q), all.Quantile(q));
  EXPECT_EQ(a.count(), 1000);
}

TEST(LatencySketchTest, EmptyAndZeroValues) {
  LatencySketch sketch;
  EXPECT_EQ(sketch.Quantile(0.5), 0);
  sketch.Add(0);
  sketch.Add(0);
  sketch.Add(1);
  EXPECT_EQ(sketch.Quantile(0.5), 0);
  EXPECT_NEAR(sketch.Quantile(1), 1, 0.01);
}

TEST(LatencySketchTest, InfiniteAndHugeValuesAreClampedToADay) {
  LatencySketch sketch(0.01);
  sketch.Add(std::numeric_limits<double>::infinity());
  sketch.Add(1e300);
  EXPECT_NEAR(sketch.Quantile(1), 86'400, 86'400 * 0.01);
}

TEST(LatencySketchTest, PartsRestoreTheSameQuantiles) {
  LatencySketch sketch;
  for (int i = 0; i < 1000; ++i) sketch.Add(0.001 * (i % 97) + 1e-7 * i);
  sketch.Add(0);
  auto restored = LatencySketch::FromParts(sketch.parts());
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(restored->count(), sketch.count());
  for (double q : {0.0, 0.5, 0.9, 0.99, 1.0}) {
    EXPECT_EQ(restored->Quantile(q), sketch.Quantile(q)) << q;
  }
}

TEST(LatencySketchTest, PartsThatDoNotAddUpAreRefused) {
  LatencySketch sketch;
  sketch.Add(0.2);
  LatencySketch::Parts parts = sketch.parts();
  parts.count = 5;
  EXPECT_EQ(LatencySketch::FromParts(parts).status().code(),
            absl::StatusCode::kInvalidArgument);
  parts = sketch.parts();
  parts.relative_accuracy = 0;
  EXPECT_EQ(LatencySketch::FromParts(parts).status().code(),
            absl::StatusCode::kInvalidArgument);
  parts = sketch.parts();
  parts.buckets.begin()->second = -1;
  parts.count = -1;
  EXPECT_EQ(LatencySketch::FromParts(parts).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace arbiter::policy
