#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "arbiter/v1/config.pb.h"
#include "policy/latency_sketch.h"

namespace arbiter::policy {

// Units are hashed into this many buckets; arms own contiguous bucket ranges
// in config order, so changing weights moves only the units at the borders.
inline constexpr int kExperimentBuckets = 10000;

// The bucket of a unit: a stable hash of salt and unit id.
[[nodiscard]] int ExperimentBucket(absl::string_view salt,
                                   absl::string_view unit);

// The arm owning a bucket under the experiment's weights.
[[nodiscard]] int ArmForBucket(const v1::Experiment& experiment, int bucket);

// Wilson score interval for a proportion at confidence 1 - alpha.
struct Interval {
  double low = 0;
  double high = 0;
};
[[nodiscard]] Interval WilsonInterval(double successes, double n,
                                      double alpha = 0.05);

// P(X >= x) for X ~ chi-square with `df` degrees of freedom.
[[nodiscard]] double ChiSquareSurvival(double x, int df);

// An always-valid test of the difference of two proportions (mixture
// sequential probability ratio test, normal approximation): looking at it
// after every request does not inflate false positives.
struct SequentialTest {
  double difference = 0;  // p_treatment - p_control.
  Interval confidence;    // Always-valid confidence sequence at 1 - alpha.
  double p_value = 1;     // Always-valid p-value (1 / likelihood ratio).
  bool significant = false;
};
[[nodiscard]] SequentialTest CompareProportions(double control_successes,
                                                double control_n,
                                                double treatment_successes,
                                                double treatment_n,
                                                double alpha);

// What happened in one arm.
struct ArmTally {
  int64_t requests = 0;
  int64_t errors = 0;
  double cost_usd = 0;
  int64_t feedback = 0;
  double score = 0;
  LatencySketch latency;
};

// Live per-arm tallies of every configured experiment. Thread-safe.
class ExperimentStats final {
 public:
  explicit ExperimentStats(const v1::Config& config);

  void RecordCompletion(int experiment, int arm, double cost_usd,
                        double latency_seconds);
  void RecordError(int experiment, int arm, double latency_seconds);
  void RecordFeedback(int experiment, int arm, double score);
  [[nodiscard]] std::vector<ArmTally> Tallies(int experiment) const;
  // Replaces an arm's tally with a stored one (a restart).
  void Restore(int experiment, int arm, ArmTally tally);

 private:
  mutable std::mutex mu_;  // std:: so ThreadSanitizer sees it.
  std::vector<std::vector<ArmTally>> arms_ ABSL_GUARDED_BY(mu_);
};

struct ArmAnalysis {
  std::string name;
  double weight_share = 0;
  ArmTally tally;
  double accuracy = 0;
  Interval accuracy_interval;  // Wilson, at 1 - alpha.
  double cost_per_request_usd = 0;
  double cost_per_correct_usd = 0;
  double latency_p50_seconds = 0;
  double latency_p95_seconds = 0;
  double error_rate = 0;
  std::optional<SequentialTest> versus_control;  // Unset for the control.
  double cost_difference_usd = 0;                // Per request, vs control.
  std::vector<std::string> guardrail_breaches;
};

struct ExperimentAnalysis {
  std::string name;
  std::string control;
  std::vector<ArmAnalysis> arms;
  double srm_p_value = 1;  // Sample-ratio mismatch: requests vs weights.
  bool srm_detected = false;
  std::string verdict;  // One line for people.
};

// `experiment` has its defaults applied (alpha, control).
[[nodiscard]] ExperimentAnalysis AnalyzeExperiment(
    const v1::Experiment& experiment, const std::vector<ArmTally>& tallies);

}  // namespace arbiter::policy
