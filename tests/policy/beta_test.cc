#include "policy/beta.h"

#include "gtest/gtest.h"

namespace arbiter::policy {
namespace {

TEST(BetaTest, IncompleteBetaMatchesClosedForms) {
  for (double x : {0.0, 0.1, 0.37, 0.5, 0.9, 1.0}) {
    EXPECT_NEAR(RegularizedIncompleteBeta(1, 1, x), x, 1e-12);
    EXPECT_NEAR(RegularizedIncompleteBeta(2, 1, x), x * x, 1e-12);
    EXPECT_NEAR(RegularizedIncompleteBeta(1, 2, x), 1 - (1 - x) * (1 - x),
                1e-12);
  }
  // Beta(2, 3) at 0.3: sum_{j=2..4} C(4, j) 0.3^j 0.7^(4-j) = 0.3483.
  EXPECT_NEAR(RegularizedIncompleteBeta(2, 3, 0.3), 0.3483, 1e-12);
  // Symmetry: I_x(a, b) = 1 - I_{1-x}(b, a).
  EXPECT_NEAR(RegularizedIncompleteBeta(40.5, 7.25, 0.8),
              1 - RegularizedIncompleteBeta(7.25, 40.5, 0.2), 1e-12);
}

TEST(BetaTest, ProbabilityAtLeastIsTheUpperTail) {
  BetaPosterior uniform;
  EXPECT_NEAR(uniform.ProbabilityAtLeast(0.8), 0.2, 1e-12);
  BetaPosterior strong{901, 101};  // ~0.9 from 1000 answers.
  EXPECT_GT(strong.ProbabilityAtLeast(0.85), 0.999);
  EXPECT_LT(strong.ProbabilityAtLeast(0.95), 0.001);
}

TEST(BetaTest, SamplesAverageToTheMean) {
  BetaPosterior posterior{3, 7};
  std::mt19937_64 rng(7);
  double sum = 0;
  constexpr int kDraws = 40000;
  for (int i = 0; i < kDraws; ++i) {
    double draw = posterior.Sample(rng);
    ASSERT_GE(draw, 0);
    ASSERT_LE(draw, 1);
    sum += draw;
  }
  EXPECT_NEAR(sum / kDraws, 0.3, 0.005);
}

}  // namespace
}  // namespace arbiter::policy
