#pragma once

#include <array>

#include "arbiter/v1/config.pb.h"
#include "gateway/backends/backend.h"
#include "gateway/resilience/backend_health.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace arbiter {

// The per-backend series: arbiter_backend_up, arbiter_backend_errors_total
// and arbiter_backend_ejections_total. Apart from Metrics because a backend
// outlives the config generation that made it (a reload keeps it), and so
// must what it reports to.
class BackendMetrics final {
 public:
  // One backend's series, resolved once; they live as long as the registry.
  struct Series {
    prometheus::Gauge* up = nullptr;
    std::array<prometheus::Counter*, kBackendErrorCount> errors = {};
    std::array<prometheus::Counter*, kEjectionCount> ejections = {};
  };

  explicit BackendMetrics(prometheus::Registry& registry);

  BackendMetrics(const BackendMetrics&) = delete;
  BackendMetrics& operator=(const BackendMetrics&) = delete;

  // The backend's series, at zero and up the first time it is named.
  [[nodiscard]] Series Declare(const v1::Backend& backend);

 private:
  prometheus::Family<prometheus::Gauge>& up_;
  prometheus::Family<prometheus::Counter>& errors_;
  prometheus::Family<prometheus::Counter>& ejections_;
};

}  // namespace arbiter
