#pragma once

#include <random>

namespace arbiter::policy {

// A Beta(alpha, beta) posterior over a route's accuracy: alpha - 1 judged
// successes and beta - 1 failures on top of a uniform prior, or any prior
// expressed in the same pseudo-counts.
struct BetaPosterior {
  double alpha = 1;
  double beta = 1;

  [[nodiscard]] double mean() const { return alpha / (alpha + beta); }
  // P(accuracy >= x).
  [[nodiscard]] double ProbabilityAtLeast(double x) const;
  // One draw from the posterior.
  [[nodiscard]] double Sample(std::mt19937_64& rng) const;
};

// The regularized incomplete beta function I_x(a, b) = P(X <= x) for
// X ~ Beta(a, b); a, b > 0, x in [0, 1].
[[nodiscard]] double RegularizedIncompleteBeta(double a, double b, double x);

}  // namespace arbiter::policy
