#include "policy/economics.h"

namespace arbiter::policy {

RequestCost PriceRequest(const v1::Pricing& pricing, int64_t input_tokens,
                         int64_t output_tokens, bool retrieved) {
  constexpr double kPerMillion = 1e-6;
  RequestCost cost;
  cost.input_usd = pricing.input_usd_per_mtok() * input_tokens * kPerMillion;
  cost.output_usd = pricing.output_usd_per_mtok() * output_tokens * kPerMillion;
  cost.request_usd = pricing.request_usd();
  cost.retrieval_usd = retrieved ? pricing.retrieval_usd_per_query() : 0;
  return cost;
}

}  // namespace arbiter::policy
