#pragma once

#include <memory>

#include "gateway/http/http_server.h"
#include "prometheus/collectable.h"

namespace arbiter::http {

inline constexpr char kMetricsContentType[] =
    "text/plain; version=0.0.4; charset=utf-8";

// GET /metrics: what `collectable` holds (e.g. a prometheus::Registry), in
// Prometheus' text exposition format 0.0.4.
//
//   routes.Add(Verb::get, "/metrics", MetricsHandler(registry));
[[nodiscard]] Handler MetricsHandler(
    std::shared_ptr<const prometheus::Collectable> collectable);

}  // namespace arbiter::http
