#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "arbiter/v1/config.pb.h"

namespace arbiter::policy {

// What one route did on one logged request.
struct LoggedOutcome {
  double score = 0;  // 1 correct, 0 wrong, or a graded score in [0, 1].
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  double latency_seconds = 0;
};

// One logged request with the outcome of every route that was tried on it.
struct LoggedRequest {
  std::string id;
  std::string task;
  std::string prompt;
  std::map<std::string, LoggedOutcome> outcomes;  // By route name.
};

// How one way of routing did over the log.
struct ReplayResult {
  std::string name;  // "policy", a route name, or "oracle".
  int64_t requests = 0;
  double accuracy = 0;  // Mean score.
  double total_cost_usd = 0;
  double cost_per_request_usd = 0;
  double cost_per_correct_usd = 0;  // Total cost / summed score; 0 if none.
  std::map<std::string, double> traffic_share;  // By route.
};

// RouteLLM's routing metrics for a log with exactly two routes: the weaker
// (less accurate alone) and the stronger. PGR = (acc - acc_weak) /
// (acc_strong - acc_weak); cost is the share of calls to the strong route.
struct RoutingMetrics {
  std::string weak_route;
  std::string strong_route;
  double pgr = 0;  // At the policy's configured operating point.
  double strong_share = 0;
  double apgr = 0;  // Area under PGR over strong-call share in [0, 1].
  // The smallest strong-call share reaching 50% / 80% PGR; nullopt if the
  // sweep never reaches it.
  std::optional<double> cpt50;
  std::optional<double> cpt80;
  // The sweep: (strong share, PGR) per cost weight tried.
  std::vector<std::pair<double, double>> curve;
};

struct ReplayReport {
  ReplayResult policy;
  std::vector<ReplayResult> routes;  // Each route alone.
  ReplayResult oracle;  // Per request, the cheapest route with the best score.
  std::optional<RoutingMetrics> routing;
};

// Runs the config's policy over the log in order, exactly as it would learn
// live: decide (among the routes with a logged outcome), price the logged
// usage with the config's prices, then feed the outcome back as feedback.
// Deterministic for a given seed. INVALID_ARGUMENT names the first request
// whose task or routes the config does not know.
[[nodiscard]] absl::StatusOr<ReplayReport> Replay(
    const v1::Config& config, const std::vector<LoggedRequest>& log,
    uint64_t seed = 1);

}  // namespace arbiter::policy
