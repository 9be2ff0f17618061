// serve, check-config and sim-server.

#include <cstdio>
#include <iostream>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gateway/cli/client.h"
#include "gateway/cli/commands.h"
#include "gateway/cli/flags.h"
#include "gateway/cli/serve_lifecycle.h"
#include "gateway/cli/stop_signals.h"
#include "gateway/config.h"
#include "gateway/gateway.h"
#include "gateway/grpc_server.h"
#include "gateway/sim/sim_server.h"
#include "prometheus/registry.h"

namespace arbiter::cli {
namespace {

// An empty --config is the embedded quickstart config.
absl::StatusOr<LoadedConfig> LoadFromFlag(const std::string& config) {
  return config.empty() ? LoadEmbeddedConfig() : LoadConfigFile(config);
}

// Splits "host:port" (IPv4 or a name) for servers that want them apart.
absl::Status SplitHostPort(const std::string& address, std::string* host,
                           int* port) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(address.substr(colon + 1), port)) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", address, "\" is not host:port"));
  }
  *host = address.substr(0, colon);
  return absl::OkStatus();
}

}  // namespace

CLI::App* AddServeCommand(CLI::App& arbiter, ServeFlags& flags) {
  CLI::App* serve = AddCommand(
      arbiter, "serve",
      "Start the gateway.\nServes the gRPC API, the OpenAI-compatible HTTP "
      "API and Prometheus metrics over\nthe config's routes; SIGINT or "
      "SIGTERM drains the calls in flight and stops.",
      "arbiter serve --config quickstart/arbiter.yaml --grpc-listen "
      "127.0.0.1:50051");
  serve->add_option("--config", flags.config, "the config (YAML)")
      ->type_name("FILE")
      ->default_str("the embedded quickstart config");
  serve->add_option("--grpc-listen", flags.grpc_listen, "the gRPC address")
      ->type_name("ADDR")
      ->default_str("the config's server.grpc_listen")
      ->check(HostPort());
  serve
      ->add_option("--metrics-listen", flags.metrics_listen,
                   "the address of /metrics")
      ->type_name("ADDR")
      ->default_str("the config's server.metrics_listen")
      ->check(HostPort());
  serve
      ->add_option("--http-listen", flags.http_listen,
                   "the address of the OpenAI-compatible HTTP front, or off")
      ->type_name("ADDR")
      ->default_str("the config's server.http_listen")
      ->check(HostPort() | CLI::IsMember({"off"}));
  CLI::Option* state =
      serve->add_option("--state", flags.state, "the state file (SQLite)")
          ->type_name("FILE")
          ->default_str("the config's state.path");
  serve
      ->add_flag("--no-state", flags.no_state,
                 "keep state in memory only, whatever the config says")
      ->excludes(state);
  return serve;
}

CLI::App* AddCheckConfigCommand(CLI::App& arbiter, CheckConfigFlags& flags) {
  CLI::App* check = AddCommand(
      arbiter, "check-config",
      "Validate a config without serving.\nChecks the config and what it "
      "points at (corpus, question sets); exits 1 listing\nevery error.",
      "arbiter check-config quickstart/arbiter.yaml");
  check->add_option("FILE", flags.file, "the config (YAML)")->required();
  return check;
}

CLI::App* AddSimServerCommand(CLI::App& arbiter, SimServerFlags& flags) {
  CLI::App* sim = AddCommand(
      arbiter, "sim-server",
      "Serve a config's simulated LLM over OpenAI-compatible HTTP.\n"
      "POST /v1/chat/completions, POST /v1/embeddings, GET /v1/models, "
      "GET /health.",
      "arbiter sim-server --listen 127.0.0.1:8000 --config "
      "quickstart/arbiter.yaml");
  sim->add_option("--listen", flags.listen, "the HTTP address; port 0: any")
      ->type_name("ADDR")
      ->capture_default_str()
      ->check(HostPort());
  sim->add_option("--config", flags.config, "the config (YAML)")
      ->type_name("FILE")
      ->default_str("the embedded quickstart config");
  sim->add_option("--backend", flags.backend, "the config's sim backend")
      ->type_name("NAME")
      ->default_str("the first");
  sim->add_option("--embedding-dim", flags.embedding_dim,
                  "dimension of /v1/embeddings vectors")
      ->type_name("N")
      ->capture_default_str()
      ->check(Integer())
      ->check(Between(1, 8192));
  return sim;
}

int RunServe(const ServeFlags& flags) {
  // Read at start and again at each reload, the flags applied over it.
  GatewayHost::ConfigSource read = [flags]() -> absl::StatusOr<LoadedConfig> {
    auto loaded = LoadFromFlag(flags.config);
    if (!loaded.ok()) return loaded.status();
    v1::Server& server_config = *loaded->config.mutable_server();
    if (!flags.grpc_listen.empty()) {
      server_config.set_grpc_listen(flags.grpc_listen);
    }
    if (!flags.metrics_listen.empty()) {
      server_config.set_metrics_listen(flags.metrics_listen);
    }
    if (!flags.http_listen.empty()) {
      server_config.set_http_listen(flags.http_listen);
    }
    if (!flags.state.empty()) {
      loaded->config.mutable_state()->set_path(flags.state);
    }
    if (flags.no_state) loaded->config.mutable_state()->clear_path();
    return loaded;
  };
  auto loaded = read();
  if (!loaded.ok()) return Fail(loaded.status());
  return ServeUntilStopped(*std::move(loaded), std::move(read));
}

int RunCheckConfig(const CheckConfigFlags& flags) {
  const std::string& path = flags.file;
  auto loaded = LoadConfigFile(path);
  if (!loaded.ok()) return Fail(loaded.status());
  // What the config points at is read, never created or written: building
  // the gateway would create the store and write index snapshots.
  std::vector<std::string> errors =
      CheckConfigReferences(loaded->config, *loaded->files);
  if (!errors.empty()) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat(path, " is invalid (", errors.size(),
                     errors.size() == 1 ? " error" : " errors", "):\n  ",
                     absl::StrJoin(errors, "\n  "))));
  }
  std::cout << path << ": ok\n" << DescribeConfig(*loaded);
  return 0;
}

int RunSimServer(const SimServerFlags& flags) {
  std::string host;
  int port = 0;
  absl::Status split = SplitHostPort(flags.listen, &host, &port);
  if (!split.ok()) return Fail(split);
  auto loaded = LoadFromFlag(flags.config);
  if (!loaded.ok()) return Fail(loaded.status());
  const v1::Backend* chosen = nullptr;
  for (const v1::Backend& backend : loaded->config.backends()) {
    if (!backend.has_sim()) continue;
    if (!flags.backend.empty() ? backend.name() == flags.backend
                               : chosen == nullptr) {
      chosen = &backend;
    }
  }
  if (chosen == nullptr) {
    return Fail(absl::NotFoundError(
        !flags.backend.empty() ? absl::StrCat("no sim backend \"",
                                              flags.backend, "\" in the config")
                               : std::string("the config has no sim backend")));
  }
  StopSignals& signals = StopSignals::Install();
  signals.Block();
  auto simulator = MakeSimulator(chosen->sim(), *loaded->files);
  if (!simulator.ok()) return Fail(simulator.status());
  const int embedding_dim = flags.embedding_dim;
  auto server = sim::SimServer::Start(*simulator, host, port, embedding_dim);
  if (!server.ok()) return Fail(server.status());
  std::cout << "arbiter sim-server (simulated LLM, backend \"" << chosen->name()
            << "\", " << (*simulator)->question_count() << " known questions)\n"
            << "sim-server listening on " << host << ":" << (*server)->port()
            << "\n"
            << "OpenAI-compatible endpoint: http://" << host << ":"
            << (*server)->port() << "/v1/chat/completions (and /v1/embeddings, "
            << embedding_dim << "-d)" << std::endl;
  signals.Unblock();
  const std::string signal = signals.WaitForStop([] {
    std::cout << "SIGHUP: the sim-server has nothing to reload; ignored"
              << std::endl;
  });
  std::cout << "received " << signal << ", stopping" << std::endl;
  (*server)->Stop();
  return 0;
}

}  // namespace arbiter::cli
