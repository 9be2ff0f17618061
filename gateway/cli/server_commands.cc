// serve, check-config and sim-server.

#include <csignal>
#include <cstdio>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gateway/cli/args.h"
#include "gateway/cli/client.h"
#include "gateway/cli/commands.h"
#include "gateway/cli/serve_lifecycle.h"
#include "gateway/config.h"
#include "gateway/gateway.h"
#include "gateway/grpc_server.h"
#include "gateway/sim/sim_server.h"
#include "prometheus/registry.h"

namespace arbiter::cli {
namespace {

// Blocks SIGINT and SIGTERM in every thread started after this, so the
// calling thread can wait for them with sigwait.
sigset_t BlockStopSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

int WaitForStopSignal(const sigset_t& signals) {
  int signal = 0;
  sigwait(&signals, &signal);
  return signal;
}

absl::StatusOr<LoadedConfig> LoadFromArgs(const Args& args) {
  return args.Has("config") ? LoadConfigFile(args.Get("config"))
                            : LoadEmbeddedConfig();
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

int RunServe(int argc, char** argv) {
  auto args =
      Args::Parse(argc, argv, {"config", "grpc-listen", "metrics-listen"}, {});
  if (!args.ok()) return Fail(args.status());
  auto loaded = LoadFromArgs(*args);
  if (!loaded.ok()) return Fail(loaded.status());
  v1::Server& server_config = *loaded->config.mutable_server();
  if (args->Has("grpc-listen")) {
    server_config.set_grpc_listen(args->Get("grpc-listen"));
  }
  if (args->Has("metrics-listen")) {
    server_config.set_metrics_listen(args->Get("metrics-listen"));
  }
  return ServeUntilStopped(*std::move(loaded));
}

int RunCheckConfig(int argc, char** argv) {
  auto args = Args::Parse(argc, argv, {}, {});
  if (!args.ok()) return Fail(args.status());
  if (args->positional().size() != 1) {
    std::cerr << "usage: arbiter check-config FILE\n";
    return 2;
  }
  const std::string& path = args->positional().front();
  auto loaded = LoadConfigFile(path);
  if (!loaded.ok()) return Fail(loaded.status());
  // Building the gateway also checks what the config points at (corpus,
  // question sets), without listening anywhere.
  prometheus::Registry registry;
  auto gateway = Gateway::Create(*std::move(loaded), registry);
  if (!gateway.ok()) return Fail(gateway.status());
  std::cout << path << ": ok\n" << (*gateway)->Describe();
  return 0;
}

int RunSimServer(int argc, char** argv) {
  auto args = Args::Parse(argc, argv,
                          {"listen", "config", "backend", "embedding-dim"}, {});
  if (!args.ok()) return Fail(args.status());
  std::string host;
  int port = 0;
  absl::Status split =
      SplitHostPort(args->Get("listen", "127.0.0.1:8000"), &host, &port);
  if (!split.ok()) return Fail(split);
  auto loaded = LoadFromArgs(*args);
  if (!loaded.ok()) return Fail(loaded.status());
  const v1::Backend* chosen = nullptr;
  for (const v1::Backend& backend : loaded->config.backends()) {
    if (!backend.has_sim()) continue;
    if (args->Has("backend") ? backend.name() == args->Get("backend")
                             : chosen == nullptr) {
      chosen = &backend;
    }
  }
  if (chosen == nullptr) {
    return Fail(absl::NotFoundError(
        args->Has("backend")
            ? absl::StrCat("no sim backend \"", args->Get("backend"),
                           "\" in the config")
            : std::string("the config has no sim backend")));
  }
  sigset_t signals = BlockStopSignals();
  auto simulator = MakeSimulator(chosen->sim(), *loaded->files);
  if (!simulator.ok()) return Fail(simulator.status());
  int embedding_dim = 384;
  if (args->Has("embedding-dim") &&
      (!absl::SimpleAtoi(args->Get("embedding-dim"), &embedding_dim) ||
       embedding_dim < 1 || embedding_dim > 8192)) {
    return Fail(
        absl::InvalidArgumentError("--embedding-dim: an integer in [1, 8192]"));
  }
  auto server = sim::SimServer::Start(*simulator, host, port, embedding_dim);
  if (!server.ok()) return Fail(server.status());
  std::cout << "arbiter sim-server (simulated LLM, backend \"" << chosen->name()
            << "\", " << (*simulator)->question_count() << " known questions)\n"
            << "sim-server listening on " << host << ":" << (*server)->port()
            << "\n"
            << "OpenAI-compatible endpoint: http://" << host << ":"
            << (*server)->port() << "/v1/chat/completions (and /v1/embeddings, "
            << embedding_dim << "-d)" << std::endl;
  WaitForStopSignal(signals);
  (*server)->Stop();
  return 0;
}

}  // namespace arbiter::cli
