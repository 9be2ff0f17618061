#include "policy/economics.h"

#include "gtest/gtest.h"

namespace arbiter::policy {
namespace {

v1::Pricing Prices(double in, double out, double request, double retrieval) {
  v1::Pricing pricing;
  pricing.set_input_usd_per_mtok(in);
  pricing.set_output_usd_per_mtok(out);
  pricing.set_request_usd(request);
  pricing.set_retrieval_usd_per_query(retrieval);
  return pricing;
}

TEST(EconomicsTest, PricesTokensPerMillion) {
  // 1,000 input tokens at $3/M = $0.003; 200 output at $15/M = $0.003.
  RequestCost cost = PriceRequest(Prices(3, 15, 0, 0), 1000, 200, false);
  EXPECT_DOUBLE_EQ(cost.input_usd, 0.003);
  EXPECT_DOUBLE_EQ(cost.output_usd, 0.003);
  EXPECT_DOUBLE_EQ(cost.total_usd(), 0.006);
}

TEST(EconomicsTest, AddsRequestFeeAndRetrievalOnlyWhenRetrieved) {
  v1::Pricing pricing = Prices(0.3, 1.2, 0.0005, 0.0001);
  // 250 * 0.3e-6 + 40 * 1.2e-6 + 0.0005 = 0.000075 + 0.000048 + 0.0005.
  EXPECT_NEAR(PriceRequest(pricing, 250, 40, false).total_usd(), 0.000623,
              1e-15);
  EXPECT_NEAR(PriceRequest(pricing, 250, 40, true).total_usd(), 0.000723,
              1e-15);
  EXPECT_DOUBLE_EQ(PriceRequest(pricing, 250, 40, true).retrieval_usd, 0.0001);
}

TEST(EconomicsTest, NoUsageCostsOnlyTheFees) {
  EXPECT_DOUBLE_EQ(
      PriceRequest(Prices(3, 15, 0.01, 0), 0, 0, false).total_usd(), 0.01);
}

}  // namespace
}  // namespace arbiter::policy
