#pragma once

#include "absl/status/statusor.h"
#include "arbiter/v1/gateway.pb.h"
#include "gateway/pipeline/gateway_parts.h"

namespace arbiter {

// Read-only views of what the gateway has learned and accounted: route
// statistics, experiment analyses, unit economics. Thread-safe.
class AdminService final {
 public:
  explicit AdminService(const GatewayParts& parts) : parts_(parts) {}

  AdminService(const AdminService&) = delete;
  AdminService& operator=(const AdminService&) = delete;

  // NOT_FOUND for a route the config does not define.
  [[nodiscard]] absl::StatusOr<v1::GetRouteStatsResponse> GetRouteStats(
      const v1::GetRouteStatsRequest& request) const;
  // NOT_FOUND for an experiment the config does not define.
  [[nodiscard]] absl::StatusOr<v1::ExperimentAnalysis> GetExperiment(
      const v1::GetExperimentRequest& request) const;
  [[nodiscard]] absl::StatusOr<v1::GetEconomicsResponse> GetEconomics(
      const v1::GetEconomicsRequest& request) const;

 private:
  const GatewayParts& parts_;
};

}  // namespace arbiter
