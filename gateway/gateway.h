#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "arbiter/v1/gateway.pb.h"
#include "gateway/auth/authenticator.h"
#include "gateway/backends/backend.h"
#include "gateway/config.h"
#include "gateway/gateway_foundation.h"
#include "gateway/judged_ids.h"
#include "gateway/metrics.h"
#include "gateway/pipeline/admin_service.h"
#include "gateway/pipeline/feedback_recorder.h"
#include "gateway/pipeline/gateway_parts.h"
#include "gateway/pipeline/request_pipeline.h"
#include "gateway/pipeline/retrieval_service.h"
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
#include "retrieval/embedding_client.h"
#include "retrieval/retriever.h"
#include "state/state_store.h"

namespace arbiter {

namespace sim {
class Simulator;
}

// Loads the quickstart question set a sim backend needs (shared by the
// gateway's sim backends and `arbiter sim-server`).
[[nodiscard]] absl::StatusOr<std::shared_ptr<const sim::Simulator>>
MakeSimulator(const v1::SimBackend& config, const FileSource& files);

// One generation of the gateway: the policy, experiments, statistics and
// economics of one config, wired with the foundation's backends and
// retrieval into the components the fronts adapt (the request pipeline,
// feedback, admin views). A reload makes a new generation that takes over
// what this one learned (TakeOver) while requests this one started finish
// on it (Retire).
class Gateway final {
 public:
  // `foundation` and `handover` outlive it; a reload holds `handover`
  // exclusively while statistics change hands.
  static absl::StatusOr<std::unique_ptr<Gateway>> Create(
      LoadedConfig config, GatewayFoundation& foundation,
      prometheus::Registry& registry, std::shared_mutex& handover);
  ~Gateway();

  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  [[nodiscard]] RequestPipeline& pipeline() { return *pipeline_; }
  [[nodiscard]] FeedbackRecorder& feedback() { return *feedback_; }
  [[nodiscard]] AdminService& admin() { return *admin_; }
  [[nodiscard]] StateSync& state_sync() { return *state_sync_; }
  // Who may call this generation: a reload brings the new config's keys.
  [[nodiscard]] const auth::Authenticator& authenticator() const {
    return authenticator_;
  }
  // What the components share, for fronts that read it (the route table).
  [[nodiscard]] const GatewayParts& parts() const { return parts_; }

  // The unit economics as of now.
  [[nodiscard]] policy::EconomicsSnapshot EconomicsNow() const;

  // Whether the named backend takes traffic (see BackendHealth).
  [[nodiscard]] const BackendHealth& health(const std::string& backend) const {
    return *backends_.at(backend)->health;
  }

  // Its backends by name, as the foundation made or kept them.
  [[nodiscard]] const BackendTable& backends() const { return backends_; }

  // Restores what the state store held at start; lines for the log.
  std::vector<std::string> RestoreStored();
  // Takes over what `predecessor` learned and accounted, by name, and the
  // entries it noted for the state store; the caller holds the handover
  // exclusively. Lines for the log.
  std::vector<std::string> TakeOver(Gateway& predecessor);
  // Stops its periodic work; what its requests still in flight count goes
  // to `successor` from now on. The caller holds the handover exclusively.
  void Retire(std::shared_ptr<Gateway> successor);

  // What was loaded, for the start-up banner.
  [[nodiscard]] std::string Describe() const;

  [[nodiscard]] const v1::Config& config() const { return loaded_.config; }

 private:
  Gateway(LoadedConfig config, GatewayFoundation& foundation,
          prometheus::Registry& registry, std::shared_mutex& handover);
  absl::Status Init();
  absl::Status InitExperiments(const std::vector<double>& prior_costs);
  // Hands the assembled parts to the components.
  void WireParts();
  [[nodiscard]] LiveParts Live() const;
  void ScheduleForgetJudged();
  void SchedulePublish();
  void ScheduleEconomics();

  const LoadedConfig loaded_;
  GatewayFoundation& foundation_;
  std::shared_mutex& handover_;
  GatewayParts parts_;
  BackendTable backends_;
  std::unique_ptr<policy::Engine> engine_;
  std::vector<ExperimentArms> experiments_;  // Constant after Init.
  std::unique_ptr<policy::ExperimentStats> experiment_stats_;
  policy::RouteStats stats_;
  // Costs and feedback for unit economics; small critical sections.
  mutable std::mutex economics_mu_;
  std::unique_ptr<policy::EconomicsLedger> economics_
      ABSL_GUARDED_BY(economics_mu_);
  std::unique_ptr<StateSync> state_sync_;
  Metrics metrics_;
  const auth::Authenticator authenticator_;
  std::unique_ptr<RequestPipeline> pipeline_;
  std::unique_ptr<FeedbackRecorder> feedback_;
  std::unique_ptr<AdminService> admin_;
  // Set once retired, under the handover.
  std::shared_ptr<Gateway> successor_;
  // Publishes statistics periodically; declared last so it stops first.
  std::atomic<bool> stopping_{false};
  std::unique_ptr<TimerQueue> ticker_;
};

}  // namespace arbiter
