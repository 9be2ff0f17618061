#pragma once

#include <cstdint>

#include "arbiter/v1/config.pb.h"

namespace arbiter::policy {

// What one request cost, by component.
struct RequestCost {
  double input_usd = 0;
  double output_usd = 0;
  double request_usd = 0;
  double retrieval_usd = 0;

  [[nodiscard]] double total_usd() const {
    return input_usd + output_usd + request_usd + retrieval_usd;
  }
};

// Prices a request from its token usage and the route's price table.
//
//   pricing: {input_usd_per_mtok: 3, output_usd_per_mtok: 15}
//   PriceRequest(pricing, 1000, 200, false).total_usd() == 0.006
[[nodiscard]] RequestCost PriceRequest(const v1::Pricing& pricing,
                                       int64_t input_tokens,
                                       int64_t output_tokens, bool retrieved);

}  // namespace arbiter::policy
