#include "policy/beta.h"

#include <algorithm>
#include <cmath>

namespace arbiter::policy {
namespace {

// Lentz's continued fraction for the incomplete beta function; converges
// fast for x < (a + 1) / (a + b + 2).
double BetaContinuedFraction(double a, double b, double x) {
  constexpr int kMaxIterations = 300;
  constexpr double kEpsilon = 1e-14;
  constexpr double kTiny = 1e-300;
  double qab = a + b;
  double qap = a + 1;
  double qam = a - 1;
  double c = 1;
  double d = 1 - qab * x / qap;
  if (std::fabs(d) < kTiny) d = kTiny;
  d = 1 / d;
  double h = d;
  for (int m = 1; m <= kMaxIterations; ++m) {
    int m2 = 2 * m;
    double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
    d = 1 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1 / d;
    h *= d * c;
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
    d = 1 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1 / d;
    double delta = d * c;
    h *= delta;
    if (std::fabs(delta - 1) < kEpsilon) break;
  }
  return h;
}

double SampleGamma(double shape, std::mt19937_64& rng) {
  return std::gamma_distribution<double>(shape, 1.0)(rng);
}

}  // namespace

double RegularizedIncompleteBeta(double a, double b, double x) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  double log_front = std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) +
                     a * std::log(x) + b * std::log1p(-x);
  double front = std::exp(log_front);
  if (x < (a + 1) / (a + b + 2)) {
    return front * BetaContinuedFraction(a, b, x) / a;
  }
  return 1 - front * BetaContinuedFraction(b, a, 1 - x) / b;
}

double BetaPosterior::ProbabilityAtLeast(double x) const {
  return std::clamp(1 - RegularizedIncompleteBeta(alpha, beta, x), 0.0, 1.0);
}

double BetaPosterior::Sample(std::mt19937_64& rng) const {
  // With plenty of evidence the posterior is close to normal, and a normal
  // draw is several times cheaper than two gamma draws.
  constexpr double kNormalFrom = 10;
  if (alpha >= kNormalFrom && beta >= kNormalFrom) {
    double n = alpha + beta;
    double m = alpha / n;
    double sd = std::sqrt(m * (1 - m) / (n + 1));
    return std::clamp(m + sd * std::normal_distribution<double>()(rng), 0.0,
                      1.0);
  }
  double x = SampleGamma(alpha, rng);
  double y = SampleGamma(beta, rng);
  return x + y > 0 ? x / (x + y) : mean();
}

}  // namespace arbiter::policy
