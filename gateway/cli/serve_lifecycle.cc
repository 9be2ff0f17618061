#include "gateway/cli/serve_lifecycle.h"

#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gateway/auth/exposure.h"
#include "gateway/cli/client.h"
#include "gateway/cli/stop_signals.h"
#include "gateway/gateway_host.h"
#include "gateway/grpc_server.h"
#include "gateway/http/basic_auth.h"
#include "gateway/http/http_server.h"
#include "gateway/http/metrics_handler.h"
#include "gateway/http_front.h"
#include "gateway/readiness.h"
#include "gateway/tls/tls_identity.h"
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

  std::optional<TlsIdentity> tls;
  if (TlsConfigured(config.tls())) {
    auto read = ReadTlsIdentity(config.tls());
    if (!read.ok()) return Fail(read.status());
    tls = *std::move(read);
  }

  http::HttpServerOptions metrics_options;
  metrics_options.address = config.metrics_listen();
  if (config.metrics_tls()) metrics_options.tls = tls;
  http::Handler scrape = http::MetricsHandler(registry);
  if (config.has_metrics_basic_auth()) {
    scrape =
        http::RequireBasicAuth({config.metrics_basic_auth().username(),
                                config.metrics_basic_auth().password_sha256()},
                               "arbiter metrics", std::move(scrape));
  }
  http::Routes routes;
  routes.Add(http::Verb::get, "/metrics", std::move(scrape));
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
    auto started = HttpFront::Start(**host, readiness, tls);
    if (!started.ok()) {
      return Fail(absl::StrCat("http: ", started.status().message()));
    }
    front = *std::move(started);
  }

  if (tls.has_value()) {
    // Rotated certificates are taken at every reload; a file that no longer
    // reads refuses the reload, and the running certificates stay.
    (*host)->AddReloadStep([&front, &metrics, tls_files = config.tls(),
                            metrics_tls = config.metrics_tls()]() {
      auto read = ReadTlsIdentity(tls_files);
      if (!read.ok()) return read.status();
      if (front != nullptr) {
        if (absl::Status set = front->SetTls(*read); !set.ok()) return set;
      }
      if (metrics_tls) return (*metrics)->SetTls(*read);
      return absl::OkStatus();
    });
  }
  const char* scheme = tls.has_value() ? "https://" : "http://";
  std::cout << "arbiter 0.1.0 serving\n"
            << (*host)->Describe() << "grpc listening on "
            << HostOf(config.grpc_listen()) << ":" << (*grpc)->port()
            << (tls.has_value() ? " (TLS)" : "") << "\n"
            << "metrics on " << (config.metrics_tls() ? "https://" : "http://")
            << HostOf(config.metrics_listen()) << ":" << (*metrics)->port()
            << "/metrics\n";
  if (front != nullptr) {
    std::cout << "http listening on " << scheme << HostOf(config.http_listen())
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
