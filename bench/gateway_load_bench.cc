// Holds a fixed request rate against sim-server directly (OpenAI-compatible
// HTTP) and through the gateway (gRPC -> gateway -> HTTP -> sim-server), in
// one run, and prints latency percentiles and the overhead the gateway adds.
// Latency is measured from each request's scheduled send time, so a stall
// shows up instead of being hidden (no coordinated omission).
//
//   ./build/bench/gateway_load_bench [--qps 200] [--seconds 10] [--route rag]

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "gateway/config.h"
#include "gateway/gateway_host.h"
#include "gateway/grpc_server.h"
#include "gateway/sim/sim_server.h"
#include "grpcpp/create_channel.h"
#include "nlohmann/json.hpp"
#include "prometheus/registry.h"

namespace arbiter {
namespace {

struct Options {
  double qps = 200;
  double seconds = 10;
  std::string route = "fine-tuned";
  // A state store file (created afresh), or empty for state in memory.
  std::string state;
};

struct Percentiles {
  double p50 = 0, p99 = 0, p999 = 0, max = 0;
  size_t n = 0;
  size_t errors = 0;
};

Percentiles Summarize(std::vector<double> ms, size_t errors) {
  Percentiles p;
  p.n = ms.size();
  p.errors = errors;
  if (ms.empty()) return p;
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) {
    return ms[static_cast<size_t>(q * (ms.size() - 1))];
  };
  p.p50 = at(0.5);
  p.p99 = at(0.99);
  p.p999 = at(0.999);
  p.max = ms.back();
  return p;
}

const char* kQuestions[] = {"How do I reset my password?",
                            "What does the Plus plan cost?",
                            "Why is sync stuck?"};

// Direct: a pool of keep-alive HTTP clients takes requests off a schedule.
Percentiles RunDirect(int port, const Options& options) {
  const int total = static_cast<int>(options.qps * options.seconds);
  const absl::Time start = absl::Now() + absl::Milliseconds(100);
  std::vector<double> latencies(total, -1);
  std::atomic<int> next{0};
  std::atomic<size_t> errors{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < 64; ++w) {
    workers.emplace_back([&] {
      httplib::Client client("127.0.0.1", port);
      client.set_keep_alive(true);
      client.set_tcp_nodelay(true);
      for (;;) {
        int i = next.fetch_add(1);
        if (i >= total) return;
        absl::Time scheduled = start + absl::Seconds(i / options.qps);
        absl::SleepFor(scheduled - absl::Now());
        nlohmann::json body = {
            {"model", "quill-small-ft"},
            {"messages", {{{"role", "user"}, {"content", kQuestions[i % 3]}}}}};
        auto result = client.Post("/v1/chat/completions", body.dump(),
                                  "application/json");
        if (!result || result->status != 200) {
          ++errors;
          continue;
        }
        latencies[i] = absl::ToDoubleMilliseconds(absl::Now() - scheduled);
      }
    });
  }
  for (auto& worker : workers) worker.join();
  std::erase_if(latencies, [](double v) { return v < 0; });
  return Summarize(std::move(latencies), errors);
}

// Through the gateway: asynchronous gRPC calls sent on schedule.
Percentiles RunGateway(int port, const Options& options) {
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::Gateway::NewStub(channel);
  const int total = static_cast<int>(options.qps * options.seconds);
  std::vector<double> latencies(total, -1);
  std::atomic<int> done{0};
  std::atomic<size_t> errors{0};
  struct Call {
    grpc::ClientContext context;
    v1::InferRequest request;
    v1::InferResponse response;
    absl::Time scheduled;
  };
  const absl::Time start = absl::Now() + absl::Milliseconds(100);
  for (int i = 0; i < total; ++i) {
    absl::Time scheduled = start + absl::Seconds(i / options.qps);
    absl::SleepFor(scheduled - absl::Now());
    auto* call = new Call;
    call->scheduled = scheduled;
    v1::ChatMessage* message = call->request.add_messages();
    message->set_role(v1::ROLE_USER);
    message->set_content(kQuestions[i % 3]);
    call->request.set_route(options.route);
    stub->async()->Infer(&call->context, &call->request, &call->response,
                         [&, call, i](grpc::Status status) {
                           if (status.ok()) {
                             latencies[i] = absl::ToDoubleMilliseconds(
                                 absl::Now() - call->scheduled);
                           } else {
                             ++errors;
                           }
                           delete call;
                           ++done;
                         });
  }
  while (done.load() < total) absl::SleepFor(absl::Milliseconds(5));
  std::erase_if(latencies, [](double v) { return v < 0; });
  return Summarize(std::move(latencies), errors);
}

int Main(int argc, char** argv) {
  Options options;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--qps") absl::SimpleAtod(argv[i + 1], &options.qps);
    if (flag == "--seconds") absl::SimpleAtod(argv[i + 1], &options.seconds);
    if (flag == "--route") options.route = argv[i + 1];
    if (flag == "--state") options.state = argv[i + 1];
  }
  auto quickstart = LoadEmbeddedConfig();
  if (!quickstart.ok()) {
    std::cerr << quickstart.status() << "\n";
    return 1;
  }
  v1::SimBackend sim_config = quickstart->config.backends(0).sim();
  sim_config.set_time_to_first_token_seconds(0.005);
  sim_config.set_seconds_per_token(0);
  auto simulator = MakeSimulator(sim_config, *quickstart->files);
  if (!simulator.ok()) return 1;
  auto sim_server = sim::SimServer::Start(*simulator, "127.0.0.1", 0);
  if (!sim_server.ok()) return 1;
  const int sim_port = (*sim_server)->port();

  // The quickstart's routes, served by sim-server over real HTTP.
  LoadedConfig config = *quickstart;
  v1::Backend* backend = config.config.mutable_backends(0);
  backend->clear_sim();
  backend->mutable_openai()->set_base_url(
      absl::StrCat("http://127.0.0.1:", sim_port, "/v1"));
  backend->mutable_openai()->set_timeout_seconds(30);
  backend->mutable_openai()->set_max_connections(256);
  // The loaded config had its defaults applied before this backend existed.
  ApplyOpenAIBackendDefaults(*backend->mutable_openai());
  // A state store only when asked for, in a fresh file.
  config.config.mutable_state()->set_path(options.state);
  if (!options.state.empty()) {
    for (const char* suffix : {"", "-wal", "-shm"}) {
      std::filesystem::remove(options.state + suffix);
    }
  }
  prometheus::Registry registry;
  auto gateway = GatewayHost::Create(config, registry, nullptr);
  if (!gateway.ok()) {
    std::cerr << gateway.status() << "\n";
    return 1;
  }
  auto server = GrpcServer::Start(**gateway, "127.0.0.1:0");
  if (!server.ok()) return 1;

  std::cout << absl::StrFormat(
      "fixed rate %.0f req/s for %.0f s each; sim-server answers after 5 ms; "
      "route %s; state %s\n",
      options.qps, options.seconds, options.route,
      options.state.empty() ? "in memory" : options.state);
  Percentiles direct = RunDirect(sim_port, options);
  Percentiles through = RunGateway((*server)->port(), options);
  std::cout << absl::StrFormat("%-26s %8s %8s %9s %9s %9s %7s\n", "path", "n",
                               "p50 ms", "p99 ms", "p99.9 ms", "max ms",
                               "errors");
  auto row = [](const char* name, const Percentiles& p) {
    std::cout << absl::StrFormat("%-26s %8d %8.2f %9.2f %9.2f %9.2f %7d\n",
                                 name, p.n, p.p50, p.p99, p.p999, p.max,
                                 p.errors);
  };
  row("direct HTTP to sim-server", direct);
  row("gRPC through the gateway", through);
  std::cout << absl::StrFormat(
      "gateway overhead: p50 +%.2f ms, p99 +%.2f ms, p99.9 +%.2f ms\n",
      through.p50 - direct.p50, through.p99 - direct.p99,
      through.p999 - direct.p999);
  (*server)->Shutdown(absl::Seconds(1));
  return direct.errors + through.errors > 0 ? 1 : 0;
}

}  // namespace
}  // namespace arbiter

int main(int argc, char** argv) { return arbiter::Main(argc, argv); }
