// The `openai` backend under overload: sim-server answering after 2 s, 64
// connections (32 req/s at most), a fixed offered rate for a while, every
// request with the same timeout. Prints how the requests ended and how late
// the timeouts came: each must come within its timeout + 50 ms, whether it
// waited for a connection or not.
//
//   ./build/bench/backend_overload_bench [--qps 150] [--seconds 30]
//       [--timeout 30] [--max-queued 1024]

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gateway/backends/openai_backend.h"
#include "gateway/config.h"
#include "gateway/sim/sim_server.h"
#include "gateway/sim/simulator.h"

namespace arbiter {
namespace {

struct Options {
  double qps = 150;
  double seconds = 30;
  double timeout = 30;
  int max_queued = 1024;  // The config default.
};

bool ParseFlags(int argc, char** argv, Options& options) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const char* value = argv[i + 1];
    bool ok = false;
    if (flag == "--qps") ok = absl::SimpleAtod(value, &options.qps);
    if (flag == "--seconds") ok = absl::SimpleAtod(value, &options.seconds);
    if (flag == "--timeout") ok = absl::SimpleAtod(value, &options.timeout);
    if (flag == "--max-queued")
      ok = absl::SimpleAtoi(value, &options.max_queued);
    if (!ok) {
      std::fprintf(stderr, "bad flag %s %s\n", flag.c_str(), value);
      return false;
    }
  }
  return true;
}

int Run(const Options& options) {
  v1::SimBackend sim_config;
  sim_config.set_time_to_first_token_seconds(2);
  sim_config.set_output_tokens(16);
  auto simulator = sim::Simulator::Create(sim_config, {});
  if (!simulator.ok()) return 1;
  auto server = sim::SimServer::Start(
      std::shared_ptr<const sim::Simulator>(*std::move(simulator)), "127.0.0.1",
      0);
  if (!server.ok()) return 1;

  v1::OpenAIBackend config;
  config.set_base_url(
      absl::StrCat("http://127.0.0.1:", (*server)->port(), "/v1"));
  config.set_max_connections(64);
  config.set_max_queued_requests(options.max_queued);
  ApplyOpenAIBackendDefaults(config);
  OpenAIBackend backend("sim", config, "");

  const absl::Duration timeout = absl::Seconds(options.timeout);
  const int total = static_cast<int>(options.qps * options.seconds);
  std::mutex mu;
  std::map<std::string, int> outcomes;
  std::vector<double> late_ms;  // Timeouts: answer time - timeout.
  std::atomic<int> finished{0};
  absl::Notification all_done;
  const absl::Time start = absl::Now();
  for (int i = 0; i < total; ++i) {
    absl::SleepFor(start + absl::Seconds(i / options.qps) - absl::Now());
    BackendRequest request;
    request.model = "m";
    request.messages = {{"user", "How do I reset my password?"}};
    request.timeout = timeout;
    const absl::Time sent = absl::Now();
    backend.Complete(
        std::move(request),
        [&, sent](absl::StatusOr<BackendResponse> response) {
          const absl::Duration took = absl::Now() - sent;
          {
            std::lock_guard lock(mu);
            ++outcomes[absl::StatusCodeToString(response.status().code())];
            if (absl::IsDeadlineExceeded(response.status())) {
              late_ms.push_back(absl::ToDoubleMilliseconds(took - timeout));
            }
          }
          if (++finished == total) all_done.Notify();
        });
  }
  all_done.WaitForNotification();
  std::printf(
      "%d requests at %.0f req/s for %.0f s; 64 connections, 2 s answers "
      "(32 req/s), timeout %.0f s, max_queued_requests %d\n",
      total, options.qps, options.seconds, options.timeout, options.max_queued);
  for (const auto& [code, n] : outcomes)
    std::printf("  %-20s %d\n", code.c_str(), n);
  if (!late_ms.empty()) {
    std::sort(late_ms.begin(), late_ms.end());
    const size_t over = static_cast<size_t>(
        late_ms.end() - std::upper_bound(late_ms.begin(), late_ms.end(), 50.0));
    std::printf(
        "timeouts: %zu, answered after timeout + 50 ms: %zu; lateness p50 "
        "%.1f ms, p99 %.1f ms, max %.1f ms\n",
        late_ms.size(), over, late_ms[late_ms.size() / 2],
        late_ms[static_cast<size_t>(0.99 * (late_ms.size() - 1))],
        late_ms.back());
  }
  return 0;
}

}  // namespace
}  // namespace arbiter

int main(int argc, char** argv) {
  arbiter::Options options;
  if (!arbiter::ParseFlags(argc, argv, options)) return 2;
  return arbiter::Run(options);
}
