#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "arbiter/v1/gateway.pb.h"
#include "gateway/backends/backend.h"
#include "gateway/config.h"
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

// The gateway assembled from its config: backends, the document store and
// collections, the policy and experiments, statistics, economics, the
// durable state and request-id keys, wired into the components the fronts
// adapt (the request pipeline, feedback, admin views, retrieval service).
// Owns them all; they live as long as it does.
class Gateway final {
 public:
  static absl::StatusOr<std::unique_ptr<Gateway>> Create(
      LoadedConfig config, prometheus::Registry& registry);
  ~Gateway();

  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  [[nodiscard]] RequestPipeline& pipeline() { return *pipeline_; }
  [[nodiscard]] FeedbackRecorder& feedback() { return *feedback_; }
  [[nodiscard]] AdminService& admin() { return *admin_; }
  [[nodiscard]] RetrievalService& retrieval() { return *retrieval_; }
  // What the components share, for fronts that read it (the route table).
  [[nodiscard]] const GatewayParts& parts() const { return parts_; }

  // The unit economics as of now.
  [[nodiscard]] policy::EconomicsSnapshot EconomicsNow() const;

  // Fails every request still waiting on a backend with UNAVAILABLE; for
  // shutdown, once the grace period is over.
  void CancelInFlight();
  // The backends' event loops that the HTTP front's I/O threads may run
  // (see LoopGuest); they live as long as the gateway.
  [[nodiscard]] std::vector<LoopGuest*> BackendLoops() const;

  // Whether the named backend takes traffic (see BackendHealth).
  [[nodiscard]] const BackendHealth& health(const std::string& backend) const {
    return *health_.at(backend);
  }

  // What was loaded, for the start-up banner.
  [[nodiscard]] std::string Describe() const;

  [[nodiscard]] const v1::Config& config() const { return loaded_.config; }

 private:
  explicit Gateway(LoadedConfig config, prometheus::Registry& registry);
  absl::Status Init();
  absl::Status InitExperiments(const std::vector<double>& prior_costs);
  // Opens the state store of state.path, restores what it holds and starts
  // its writer; says so when state lives in memory only.
  absl::Status InitState();
  // Builds the request-id signer from the configured keys, else the key
  // kept in the state store, else a random one (ids die with the process).
  absl::Status InitRequestIds();
  // Hands the assembled parts to the components.
  void WireParts();
  void ScheduleForgetJudged();
  void SchedulePublish();
  void ScheduleEconomics();

  const LoadedConfig loaded_;
  GatewayParts parts_;
  absl::flat_hash_map<std::string, std::unique_ptr<Backend>> backends_;
  absl::flat_hash_map<std::string, std::unique_ptr<BackendHealth>> health_;
  std::unique_ptr<RetryBudget> retry_budget_;
  std::unique_ptr<TimerQueue> retry_timer_;
  // The corpus: SQLite store as truth, a derived index for search.
  std::unique_ptr<retrieval::DocumentStore> store_;
  // Embeds chunks and queries when retrieval.embedding_server is set.
  std::unique_ptr<retrieval::EmbeddingClient> embedding_client_;
  std::unique_ptr<Collections> collections_;
  // Blocking retrieval work runs here, never on a front's threads: reads
  // (searches, the rag step of Infer) and writes (ingest).
  std::unique_ptr<WorkerPool> retrieval_pool_;
  std::unique_ptr<WorkerPool> ingest_pool_;
  std::unique_ptr<retrieval::HashedNgramEmbedder> prompt_embedder_;
  std::unique_ptr<policy::Engine> engine_;
  std::vector<ExperimentArms> experiments_;  // Constant after Init.
  std::unique_ptr<policy::ExperimentStats> experiment_stats_;
  policy::RouteStats stats_;
  // Costs and feedback for unit economics; small critical sections.
  mutable std::mutex economics_mu_;
  std::unique_ptr<policy::EconomicsLedger> economics_
      ABSL_GUARDED_BY(economics_mu_);
  policy::DecisionLog decisions_;
  // Requests whose feedback was counted, for ALREADY_EXISTS.
  JudgedIds judged_;
  // The durable copy of what is learned and accounted; null in memory only.
  std::unique_ptr<state::StateStore> state_store_;
  std::unique_ptr<StateSync> state_sync_;
  // Signs request ids and verifies feedback's. Constant after Init.
  std::unique_ptr<RequestIdSigner> signer_;
  std::string signer_source_;  // Where its keys came from, for Describe.
  Metrics metrics_;
  std::unique_ptr<RequestPipeline> pipeline_;
  std::unique_ptr<FeedbackRecorder> feedback_;
  std::unique_ptr<AdminService> admin_;
  std::unique_ptr<RetrievalService> retrieval_;
  // Publishes statistics periodically; declared last so it stops first.
  std::atomic<bool> stopping_{false};
  std::unique_ptr<TimerQueue> ticker_;
};

}  // namespace arbiter
