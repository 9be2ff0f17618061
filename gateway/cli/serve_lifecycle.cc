#include "gateway/cli/serve_lifecycle.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gateway/cli/client.h"
#include "gateway/gateway.h"
#include "gateway/grpc_server.h"
#include "gateway/http/http_server.h"
#include "gateway/http/metrics_handler.h"
#include "prometheus/registry.h"

namespace arbiter::cli {
namespace {

// SIGTERM, SIGINT and SIGHUP, taken by a handler that writes their number
// to a pipe the serving thread reads. Not sigwait alone: libraries start
// threads of their own before main (OpenBLAS's pool), and a signal that
// reaches one of those while no thread waits in sigwait would end the
// process. Threads started while a Signals is Blocked() leave them to it.
class Signals final {
 public:
  Signals() {
    if (pipe2(fds_, O_CLOEXEC) != 0) fds_[0] = fds_[1] = -1;
    write_fd_ = fds_[1];
    struct sigaction action = {};
    action.sa_handler = &Signals::OnSignal;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    sigemptyset(&set_);
    for (int signal : {SIGTERM, SIGINT, SIGHUP}) {
      sigaction(signal, &action, nullptr);
      sigaddset(&set_, signal);
    }
  }
  Signals(const Signals&) = delete;
  Signals& operator=(const Signals&) = delete;

  // While threads are started, so that they inherit the mask.
  void Block() { pthread_sigmask(SIG_BLOCK, &set_, nullptr); }
  void Unblock() { pthread_sigmask(SIG_UNBLOCK, &set_, nullptr); }

  // Waits for SIGTERM or SIGINT and returns its name; logs SIGHUP.
  std::string WaitForStop() {
    for (;;) {
      unsigned char signal = 0;
      ssize_t n = read(fds_[0], &signal, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n != 1) return "SIGTERM";  // No pipe: stop rather than spin.
      if (signal == SIGHUP) {
        std::cout << "SIGHUP: reload is not supported yet; ignored"
                  << std::endl;
        continue;
      }
      return signal == SIGINT ? "SIGINT" : "SIGTERM";
    }
  }

 private:
  static void OnSignal(int signal) {
    const int saved_errno = errno;
    const unsigned char byte = static_cast<unsigned char>(signal);
    [[maybe_unused]] ssize_t ignored = write(write_fd_, &byte, 1);
    errno = saved_errno;
  }

  static inline volatile sig_atomic_t write_fd_ = -1;
  int fds_[2] = {-1, -1};
  sigset_t set_ = {};
};

std::string HostOf(const std::string& host_port) {
  return host_port.substr(0, host_port.rfind(':'));
}

}  // namespace

int ServeUntilStopped(LoadedConfig loaded) {
  static Signals& signals = *new Signals();  // The handler outlives us.
  signals.Block();
  const v1::Server config = loaded.config.server();
  auto registry = std::make_shared<prometheus::Registry>();
  auto gateway = Gateway::Create(std::move(loaded), *registry);
  if (!gateway.ok()) return Fail(gateway.status());

  http::HttpServerOptions metrics_options;
  metrics_options.address = config.metrics_listen();
  http::Routes routes;
  routes.Add(http::Verb::get, "/metrics", http::MetricsHandler(registry));
  auto metrics =
      http::HttpServer::Start(std::move(metrics_options), std::move(routes));
  if (!metrics.ok()) {
    return Fail(absl::StrCat("metrics: ", metrics.status().message()));
  }
  auto grpc = GrpcServer::Start(**gateway, config.grpc_listen());
  if (!grpc.ok()) return Fail(grpc.status());

  std::cout << "arbiter 0.1.0 serving\n"
            << (*gateway)->Describe() << "grpc listening on "
            << HostOf(config.grpc_listen()) << ":" << (*grpc)->port() << "\n"
            << "metrics on http://" << HostOf(config.metrics_listen()) << ":"
            << (*metrics)->port() << "/metrics\n"
            << "press Ctrl-C to stop" << std::endl;

  signals.Unblock();  // Any that came meanwhile are delivered now.
  const std::string signal = signals.WaitForStop();
  const absl::Duration grace = absl::Seconds(config.shutdown_grace_seconds());
  std::cout << "received " << signal << ", draining (grace "
            << absl::FormatDuration(grace) << ")" << std::endl;
  (*grpc)->Shutdown(grace);
  metrics->reset();  // Scrapes are answered while gRPC drains.
  std::cout << "stopped" << std::endl;
  return 0;
}

}  // namespace arbiter::cli
