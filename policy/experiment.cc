#include "policy/experiment.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "policy/hash.h"

namespace arbiter::policy {
namespace {

// Standard normal quantile (Acklam's rational approximation, relative error
// below 1.2e-9).
double NormalQuantile(double p) {
  static constexpr double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                                 -2.759285104469687e+02, 1.383577518672690e+02,
                                 -3.066479806614716e+01, 2.506628277459239e+00};
  static constexpr double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                                 -1.556989798598866e+02, 6.680131188771972e+01,
                                 -1.328068155288572e+01};
  static constexpr double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                                 -2.400758277161838e+00, -2.549732539343734e+00,
                                 4.374664141464968e+00,  2.938163982698783e+00};
  static constexpr double d[] = {7.784695709041462e-03, 3.224671290700398e-01,
                                 2.445134137142996e+00, 3.754408661907416e+00};
  constexpr double kLow = 0.02425;
  if (p < kLow) {
    double q = std::sqrt(-2 * std::log(p));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q +
            c[5]) /
           ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  if (p > 1 - kLow) return -NormalQuantile(1 - p);
  double q = p - 0.5;
  double r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) *
         q / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

// Regularized lower incomplete gamma P(a, x), by series or continued
// fraction (whichever converges fast for the arguments).
double RegularizedGammaP(double a, double x) {
  if (x <= 0) return 0;
  double log_front = -x + a * std::log(x) - std::lgamma(a);
  if (x < a + 1) {
    double sum = 1 / a;
    double term = sum;
    for (int n = 1; n < 500; ++n) {
      term *= x / (a + n);
      sum += term;
      if (std::fabs(term) < std::fabs(sum) * 1e-15) break;
    }
    return sum * std::exp(log_front);
  }
  constexpr double kTiny = 1e-300;
  double b = x + 1 - a;
  double c = 1 / kTiny;
  double d = 1 / b;
  double h = d;
  for (int i = 1; i < 500; ++i) {
    double an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = b + an / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1 / d;
    double delta = d * c;
    h *= delta;
    if (std::fabs(delta - 1) < 1e-15) break;
  }
  return 1 - std::exp(log_front) * h;
}

// Mixing variance of the sequential test's prior over the true difference:
// effects of around 10 percentage points are the ones it is tuned to find.
constexpr double kMixingVariance = 0.1 * 0.1;

}  // namespace

int ExperimentBucket(absl::string_view salt, absl::string_view unit) {
  return static_cast<int>(StableHash64(absl::StrCat(salt, "\x1f", unit)) %
                          kExperimentBuckets);
}

int ArmForBucket(const v1::Experiment& experiment, int bucket) {
  double total = 0;
  for (const auto& arm : experiment.arms())
    total += std::max(0.0, arm.weight());
  double cumulative = 0;
  for (int i = 0; i < experiment.arms_size(); ++i) {
    cumulative += std::max(0.0, experiment.arms(i).weight());
    if (bucket < std::round(cumulative / total * kExperimentBuckets)) return i;
  }
  return experiment.arms_size() - 1;
}

Interval WilsonInterval(double successes, double n, double alpha) {
  if (n <= 0) return {0, 1};
  double z = NormalQuantile(1 - alpha / 2);
  double p = successes / n;
  double z2 = z * z;
  double denominator = 1 + z2 / n;
  double center = (p + z2 / (2 * n)) / denominator;
  double half = z * std::sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator;
  return {std::max(0.0, center - half), std::min(1.0, center + half)};
}

double ChiSquareSurvival(double x, int df) {
  if (df <= 0) return 1;
  return std::clamp(1 - RegularizedGammaP(df / 2.0, x / 2), 0.0, 1.0);
}

SequentialTest CompareProportions(double control_successes, double control_n,
                                  double treatment_successes,
                                  double treatment_n, double alpha) {
  SequentialTest test;
  if (control_n < 1 || treatment_n < 1) {
    test.confidence = {-1, 1};
    return test;
  }
  double pa = control_successes / control_n;
  double pb = treatment_successes / treatment_n;
  test.difference = pb - pa;
  // Variances from lightly smoothed rates, so 0/n or n/n still has spread.
  double sa = (control_successes + 0.5) / (control_n + 1);
  double sb = (treatment_successes + 0.5) / (treatment_n + 1);
  double v = sa * (1 - sa) / control_n + sb * (1 - sb) / treatment_n;
  double t2 = kMixingVariance;
  double log_ratio = 0.5 * std::log(v / (v + t2)) + t2 * test.difference *
                                                        test.difference /
                                                        (2 * v * (v + t2));
  test.p_value = std::min(1.0, std::exp(-log_ratio));
  double half = std::sqrt(v * (v + t2) / t2 *
                          (2 * std::log(1 / alpha) + std::log((v + t2) / v)));
  test.confidence = {test.difference - half, test.difference + half};
  test.significant = test.p_value <= alpha;
  return test;
}

ExperimentStats::ExperimentStats(const v1::Config& config) {
  for (const v1::Experiment& experiment : config.experiments()) {
    arms_.emplace_back(experiment.arms_size());
  }
}

void ExperimentStats::RecordCompletion(int experiment, int arm, double cost_usd,
                                       double latency_seconds) {
  std::lock_guard lock(mu_);
  ArmTally& tally = arms_[experiment][arm];
  ++tally.requests;
  tally.cost_usd += cost_usd;
  tally.latency.Add(latency_seconds);
}

void ExperimentStats::RecordError(int experiment, int arm,
                                  double latency_seconds) {
  std::lock_guard lock(mu_);
  ArmTally& tally = arms_[experiment][arm];
  ++tally.requests;
  ++tally.errors;
  tally.latency.Add(latency_seconds);
}

void ExperimentStats::RecordFeedback(int experiment, int arm, double score) {
  std::lock_guard lock(mu_);
  ArmTally& tally = arms_[experiment][arm];
  ++tally.feedback;
  tally.score += score;
}

std::vector<ArmTally> ExperimentStats::Tallies(int experiment) const {
  std::lock_guard lock(mu_);
  return arms_[experiment];
}

void ExperimentStats::Restore(int experiment, int arm, ArmTally tally) {
  std::lock_guard lock(mu_);
  arms_[experiment][arm] = std::move(tally);
}

ExperimentAnalysis AnalyzeExperiment(const v1::Experiment& experiment,
                                     const std::vector<ArmTally>& tallies) {
  ExperimentAnalysis analysis;
  analysis.name = experiment.name();
  const double alpha = experiment.alpha();
  int control = 0;
  for (int i = 0; i < experiment.arms_size(); ++i) {
    if (experiment.arms(i).name() == experiment.control()) control = i;
  }
  analysis.control = experiment.arms(control).name();
  double total_weight = 0;
  for (const auto& arm : experiment.arms()) total_weight += arm.weight();
  int64_t total_requests = 0;
  for (const ArmTally& tally : tallies) total_requests += tally.requests;

  const v1::Guardrails& guard = experiment.guardrails();
  double chi_square = 0;
  for (int i = 0; i < experiment.arms_size(); ++i) {
    ArmAnalysis arm;
    arm.name = experiment.arms(i).name();
    arm.weight_share = experiment.arms(i).weight() / total_weight;
    arm.tally = tallies[i];
    const ArmTally& t = tallies[i];
    int64_t ok = t.requests - t.errors;
    arm.accuracy = t.feedback > 0 ? t.score / t.feedback : 0;
    arm.accuracy_interval = WilsonInterval(t.score, t.feedback, alpha);
    arm.cost_per_request_usd = ok > 0 ? t.cost_usd / ok : 0;
    arm.cost_per_correct_usd =
        arm.accuracy > 0 ? arm.cost_per_request_usd / arm.accuracy : 0;
    arm.latency_p50_seconds = t.latency.Quantile(0.5);
    arm.latency_p95_seconds = t.latency.Quantile(0.95);
    arm.error_rate =
        t.requests > 0 ? static_cast<double>(t.errors) / t.requests : 0;
    if (guard.max_latency_p95_seconds() > 0 &&
        arm.latency_p95_seconds > guard.max_latency_p95_seconds()) {
      arm.guardrail_breaches.push_back(absl::StrFormat(
          "latency p95 %.0f ms > %.0f ms", arm.latency_p95_seconds * 1000,
          guard.max_latency_p95_seconds() * 1000));
    }
    if (guard.max_error_rate() > 0 && arm.error_rate > guard.max_error_rate()) {
      arm.guardrail_breaches.push_back(
          absl::StrFormat("error rate %.2f%% > %.2f%%", arm.error_rate * 100,
                          guard.max_error_rate() * 100));
    }
    if (guard.max_cost_per_request_usd() > 0 &&
        arm.cost_per_request_usd > guard.max_cost_per_request_usd()) {
      arm.guardrail_breaches.push_back(absl::StrFormat(
          "cost $%.6f/request > $%.6f", arm.cost_per_request_usd,
          guard.max_cost_per_request_usd()));
    }
    double expected = arm.weight_share * total_requests;
    if (expected > 0) {
      chi_square +=
          (t.requests - expected) * (t.requests - expected) / expected;
    }
    analysis.arms.push_back(std::move(arm));
  }
  const ArmAnalysis& base = analysis.arms[control];
  std::vector<std::string> parts;
  for (int i = 0; i < static_cast<int>(analysis.arms.size()); ++i) {
    if (i == control) continue;
    ArmAnalysis& arm = analysis.arms[i];
    arm.versus_control =
        CompareProportions(base.tally.score, base.tally.feedback,
                           arm.tally.score, arm.tally.feedback, alpha);
    arm.cost_difference_usd =
        arm.cost_per_request_usd - base.cost_per_request_usd;
    const SequentialTest& test = *arm.versus_control;
    std::string effect =
        absl::StrFormat("%+.1f pp [%.1f, %.1f]", test.difference * 100,
                        test.confidence.low * 100, test.confidence.high * 100);
    std::string cost = absl::StrFormat("cost %s$%.6f/request",
                                       arm.cost_difference_usd < 0 ? "-" : "+",
                                       std::fabs(arm.cost_difference_usd));
    if (!test.significant) {
      parts.push_back(absl::StrCat(arm.name, " vs ", base.name,
                                   ": no significant difference yet (", effect,
                                   "), ", cost));
    } else {
      parts.push_back(
          absl::StrCat(arm.name, test.difference > 0 ? " beats " : " trails ",
                       base.name, " on accuracy by ", effect, ", ", cost));
    }
  }
  analysis.srm_p_value =
      total_requests > 0
          ? ChiSquareSurvival(chi_square, experiment.arms_size() - 1)
          : 1;
  // A strict threshold: SRM means the assignment itself is broken.
  analysis.srm_detected = analysis.srm_p_value < 0.001;
  parts.push_back(
      analysis.srm_detected
          ? absl::StrFormat("SRM detected (p=%.2g)", analysis.srm_p_value)
          : std::string("SRM ok"));
  for (const ArmAnalysis& arm : analysis.arms) {
    for (const std::string& breach : arm.guardrail_breaches) {
      parts.push_back(absl::StrCat("guardrail: ", arm.name, " ", breach));
    }
  }
  analysis.verdict = absl::StrJoin(parts, "; ");
  return analysis;
}

}  // namespace arbiter::policy
