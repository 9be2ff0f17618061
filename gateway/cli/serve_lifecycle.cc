#include "gateway/cli/serve_lifecycle.h"

#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gateway/auth/exposure.h"
#include "gateway/cli/client.h"
#include "gateway/cli/stop_signals.h"
#include "gateway/gateway_host.h"
#include "gateway/grpc_server.h"
#include "gateway/http/http_server.h"
#include "gateway/http/metrics_handler.h"
#include "gateway/http_front.h"
#include "gateway/readiness.h"
#include "prometheus/registry.h"

namespace arbiter::cli {
namespace {

std::string HostOf(const std::string& host_port) {
  return host_port.substr(0, host_port.rfind(':'));
}

}  // namespace

int ServeUntilStopped(LoadedConfig loaded, GatewayHost::ConfigSource reload) {
  StopSignals& signals = StopSignals::Install();
  signals.Block();
  const v1::Server config = loaded.config.server();
  if (absl::Status exposed = auth::CheckExposure(loaded.config);
      !exposed.ok()) {
    return Fail(exposed);
  }
  if (const std::string warning = auth::OpenAccessWarning(loaded.config);
      !warning.empty()) {
    std::cerr << warning << std::endl;
  }
  auto registry = std::make_shared<prometheus::Registry>();
  auto host =
      GatewayHost::Create(std::move(loaded), *registry, std::move(reload));
  if (!host.ok()) return Fail(host.status());

  http::HttpServerOptions metrics_options;
  metrics_options.address = config.metrics_listen();
  http::Routes routes;
  routes.Add(http::Verb::get, "/metrics", http::MetricsHandler(registry));
  auto metrics =
      http::HttpServer::Start(std::move(metrics_options), std::move(routes));
  if (!metrics.ok()) {
    return Fail(absl::StrCat("metrics: ", metrics.status().message()));
  }
  Readiness readiness(**host);  // Outlives both fronts.
  auto grpc = GrpcServer::Start(**host, config.grpc_listen(), &readiness);
  if (!grpc.ok()) return Fail(grpc.status());
  std::unique_ptr<HttpFront> front;
  if (config.http_listen() != "off") {
    auto started = HttpFront::Start(**host, readiness);
    if (!started.ok()) {
      return Fail(absl::StrCat("http: ", started.status().message()));
    }
    front = *std::move(started);
  }

  std::cout << "arbiter 0.1.0 serving\n"
            << (*host)->Describe() << "grpc listening on "
            << HostOf(config.grpc_listen()) << ":" << (*grpc)->port() << "\n"
            << "metrics on http://" << HostOf(config.metrics_listen()) << ":"
            << (*metrics)->port() << "/metrics\n";
  if (front != nullptr) {
    std::cout << "http listening on http://" << HostOf(config.http_listen())
              << ":" << front->port() << "/v1 (OpenAI-compatible)\n";
  }
  std::cout << "press Ctrl-C to stop" << std::endl;

  signals.Unblock();  // Any that came meanwhile are delivered now.
  const std::string signal = signals.WaitForStop([&host] {
    std::cout << "received SIGHUP, reloading the config" << std::endl;
    // The outcome is logged by the host either way.
    [[maybe_unused]] auto report = (*host)->Reload();
  });
  const absl::Duration grace = absl::Seconds(config.shutdown_grace_seconds());
  std::cout << "received " << signal << ", draining (grace "
            << absl::FormatDuration(grace) << ")" << std::endl;
  const absl::Time grace_over = absl::Now() + grace;
  if (front != nullptr) front->Drain();
  (*grpc)->Shutdown(grace);
  if (front != nullptr && !front->WaitIdle(grace_over)) {
    (*host)->foundation().CancelInFlight();  // The grace is over for HTTP too.
    front->WaitIdle(absl::Now() + absl::Seconds(1));
  }
  front.reset();
  metrics->reset();  // Scrapes are answered while gRPC drains.
  std::cout << "stopped" << std::endl;
  return 0;
}

}  // namespace arbiter::cli
