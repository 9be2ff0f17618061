#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "arbiter/v1/config.pb.h"
#include "gateway/backends/backend.h"
#include "gateway/judged_ids.h"
#include "gateway/metrics.h"
#include "gateway/request_id.h"
#include "gateway/resilience/backend_health.h"
#include "gateway/resilience/retry_budget.h"
#include "gateway/state_sync.h"
#include "gateway/timer_queue.h"
#include "gateway/worker_pool.h"
#include "policy/decision_log.h"
#include "policy/economics.h"
#include "policy/engine.h"
#include "policy/experiment.h"
#include "policy/route_stats.h"
#include "retrieval/collection.h"
#include "retrieval/embedder.h"

namespace arbiter {

// How one configured experiment's arms route. Constant after assembly.
struct ExperimentArms {
  std::vector<bool> tasks;     // Per task: takes part?
  std::vector<int> arm_route;  // Route of a route arm, else -1.
  std::vector<std::unique_ptr<policy::Engine>> arm_engine;  // Policy arms.
  std::vector<double> arm_share;
};

struct GatewayParts;

// The parts whose statistics are live, held so that no reload hands them
// over meanwhile: a generation's own until it is retired, then those of the
// generation that replaced it (see Gateway::Retire).
struct LiveParts {
  const GatewayParts* parts = nullptr;
  std::shared_lock<std::shared_mutex> hold;
};

// What the request pipeline, feedback and the admin views share, assembled
// from the config (gateway/gateway.h owns every part). Pointers are set
// once and outlive every user; what they point to is thread-safe or
// guarded as noted.
struct GatewayParts {
  const v1::Config* config = nullptr;
  absl::flat_hash_map<std::string, int> route_index;
  absl::flat_hash_map<std::string, int> task_index;
  std::vector<Backend*> route_backend;        // Per route.
  std::vector<absl::Duration> route_timeout;  // Per route, from its backend.
  std::vector<BackendHealth*> route_health;   // Per route, its backend's.
  std::vector<const v1::Retry*> route_retry;  // Per route, its backend's.
  RetryBudget* retry_budget = nullptr;
  // Where retries wait out their backoff: one thread for all of them.
  TimerQueue* retry_timer = nullptr;
  // The corpus rag routes search, or null; its search mode.
  retrieval::Collection* corpus = nullptr;
  retrieval::SearchMode search_mode = retrieval::SearchMode::kHybrid;
  // Embeds prompts for contextual policies unless the corpus's built-in
  // embedder does; may be null.
  const retrieval::HashedNgramEmbedder* prompt_embedder = nullptr;
  // Retrieval work (the rag step) runs here, never on a front's thread.
  WorkerPool* retrieval_pool = nullptr;
  policy::Engine* engine = nullptr;
  const std::vector<ExperimentArms>* experiments = nullptr;
  policy::ExperimentStats* experiment_stats = nullptr;
  policy::RouteStats* stats = nullptr;
  std::mutex* economics_mu = nullptr;
  policy::EconomicsLedger* economics = nullptr;  // Under economics_mu.
  policy::DecisionLog* decisions = nullptr;
  JudgedIds* judged = nullptr;
  // The durable copy; sync is set always, durable only with a state store.
  StateSync* state_sync = nullptr;
  bool durable = false;
  const RequestIdSigner* signer = nullptr;
  Metrics* metrics = nullptr;
  // Where outcomes and feedback are counted; set by the gateway.
  std::function<LiveParts()> live;

  // The ledger's figures as of now.
  [[nodiscard]] policy::EconomicsSnapshot EconomicsNow() const {
    std::lock_guard lock(*economics_mu);
    return economics->Snapshot(absl::Now());
  }
};

}  // namespace arbiter
