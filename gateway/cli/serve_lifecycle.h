#pragma once

#include "gateway/config.h"
#include "gateway/gateway_host.h"

namespace arbiter::cli {

// `arbiter serve` once its config is loaded: builds the gateway, serves
// gRPC and /metrics, prints the banner, then waits for signals.
//
// SIGTERM or SIGINT drain: health checks report NOT_SERVING, the gRPC
// server stops taking calls, calls in flight get
// server.shutdown_grace_seconds to finish and what is left is cancelled
// (UNAVAILABLE); then the metrics server stops and 0 is returned. SIGHUP
// reloads the config through `reload` (GatewayHost::Reload). Returns 1, with
// a message on stderr, when something cannot start (e.g. a port in use).
int ServeUntilStopped(LoadedConfig loaded, GatewayHost::ConfigSource reload);

}  // namespace arbiter::cli
