#include "gateway/backend_metrics.h"

#include <string>

namespace arbiter {

using prometheus::BuildCounter;
using prometheus::BuildGauge;

BackendMetrics::BackendMetrics(prometheus::Registry& registry)
    : up_(BuildGauge()
              .Name("arbiter_backend_up")
              .Help("1 while a backend is in service, 0 while it is ejected or "
                    "on probation.")
              .Register(registry)),
      errors_(BuildCounter()
                  .Name("arbiter_backend_errors_total")
                  .Help("Failed calls to an openai backend, by reason "
                        "(malformed, too_large, http_3xx, http_4xx, http_429, "
                        "http_5xx, http_other, connect, transport, timeout, "
                        "queue_full, internal).")
                  .Register(registry)),
      ejections_(BuildCounter()
                     .Name("arbiter_backend_ejections_total")
                     .Help("Times a backend was taken out of service, by "
                           "reason (consecutive_failures, failure_rate, "
                           "probe_failed).")
                     .Register(registry)) {}

BackendMetrics::Series BackendMetrics::Declare(const v1::Backend& backend) {
  Series series;
  series.up = &up_.Add({{"backend", backend.name()}});
  series.up->Set(1);
  for (int i = 0; i < kBackendErrorCount; ++i) {
    // Only openai backends fail this way; a simulator's series would stay
    // at zero forever.
    if (!backend.has_openai()) break;
    series.errors[i] = &errors_.Add(
        {{"backend", backend.name()},
         {"reason",
          std::string(BackendErrorName(static_cast<BackendError>(i)))}});
  }
  for (int i = 0; i < kEjectionCount; ++i) {
    series.ejections[i] = &ejections_.Add(
        {{"backend", backend.name()},
         {"reason", std::string(EjectionName(static_cast<Ejection>(i)))}});
  }
  return series;
}

}  // namespace arbiter
