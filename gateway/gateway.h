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
#include "gateway/state_sync.h"
#include "gateway/request_id.h"
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

// The request pipeline, independent of the wire: validate, decide, build the
// route's prompt (examples, retrieved context), call the backend, price the
// answer, record statistics and metrics. Thread-safe; Infer never blocks on a
// backend.
class Gateway final {
 public:
  static absl::StatusOr<std::unique_ptr<Gateway>> Create(
      LoadedConfig config, prometheus::Registry& registry);
  ~Gateway();

  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  using Done = absl::AnyInvocable<void(absl::Status) &&>;

  // Fills *response, then calls done exactly once, possibly on another
  // thread. deadline is the caller's (absl::InfiniteFuture() for none).
  void Infer(const v1::InferRequest& request, absl::Time deadline,
             v1::InferResponse* response, Done done);

  [[nodiscard]] absl::StatusOr<v1::FeedbackResponse> Feedback(
      const v1::FeedbackRequest& request);

  [[nodiscard]] absl::StatusOr<v1::GetRouteStatsResponse> GetRouteStats(
      const v1::GetRouteStatsRequest& request);

  // The Retrieval service: ingestion and search of document collections.
  // Each runs on a worker pool (ingest for Upsert and Delete, retrieval for
  // the reads), fills *response and calls done once on that pool's thread;
  // a full pool calls done at once with RESOURCE_EXHAUSTED. `request` and
  // `response` must live until done is called.
  void Upsert(const v1::UpsertRequest& request, v1::UpsertResponse* response,
              Done done);
  void Delete(const v1::DeleteRequest& request, v1::DeleteResponse* response,
              Done done);
  void Search(const v1::SearchRequest& request, v1::SearchResponse* response,
              Done done);
  void GetCollection(const v1::GetCollectionRequest& request,
                     v1::CollectionInfo* response, Done done);

  // NOT_FOUND for an experiment the config does not define.
  [[nodiscard]] absl::StatusOr<v1::ExperimentAnalysis> GetExperiment(
      const v1::GetExperimentRequest& request);
  [[nodiscard]] absl::StatusOr<v1::GetEconomicsResponse> GetEconomics(
      const v1::GetEconomicsRequest& request);
  // The unit economics as of now.
  [[nodiscard]] policy::EconomicsSnapshot EconomicsNow() const;

  // Fails every request still waiting on a backend with UNAVAILABLE; for
  // shutdown, once the grace period is over.
  void CancelInFlight();

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
  void ScheduleForgetJudged();
  // The experiment a request of this task takes part in, or -1.
  int ExperimentFor(int task) const;
  std::vector<float> EmbedPrompt(absl::string_view text) const;
  retrieval::CollectionOptions CollectionOptionsFor(
      const std::string& name) const;
  void SchedulePublish();
  void ScheduleEconomics();
  absl::Status Validate(const v1::InferRequest& request, int* task,
                        int* pinned_route) const;
  // Fails only for a rag route whose retrieval fails.
  absl::StatusOr<BackendRequest> BuildBackendRequest(
      const v1::Route& route, const v1::InferRequest& request,
      v1::InferResponse* response);
  // What Infer has decided, carried to the backend call (on a retrieval
  // thread for a rag route).
  struct InferCall;
  void CallBackend(std::unique_ptr<InferCall> call);
  // The retrieval methods' work, run on a pool.
  absl::StatusOr<v1::UpsertResponse> UpsertNow(
      const v1::UpsertRequest& request);
  absl::StatusOr<v1::DeleteResponse> DeleteNow(
      const v1::DeleteRequest& request);
  absl::StatusOr<v1::SearchResponse> SearchNow(
      const v1::SearchRequest& request);
  absl::StatusOr<v1::CollectionInfo> GetCollectionNow(
      const v1::GetCollectionRequest& request);

  const LoadedConfig loaded_;
  absl::flat_hash_map<std::string, int> route_index_;
  absl::flat_hash_map<std::string, int> task_index_;
  std::vector<Backend*> route_backend_;        // Per route; owned by backends_.
  std::vector<absl::Duration> route_timeout_;  // Per route, from its backend.
  absl::flat_hash_map<std::string, std::unique_ptr<Backend>> backends_;
  // The corpus: SQLite store as truth, a derived index for search.
  std::unique_ptr<retrieval::DocumentStore> store_;
  // Embeds chunks and queries when retrieval.embedding_server is set.
  std::unique_ptr<retrieval::EmbeddingClient> embedding_client_;
  retrieval::Collection* corpus_ = nullptr;  // In collections_, if any.
  // A collection by name, opened (and created) on demand for `create`.
  // Opening one holds only open_mu_, so lookups of open collections (under
  // collections_mu_) never wait for an index to load.
  absl::StatusOr<retrieval::Collection*> FindCollection(const std::string& name,
                                                        bool create);
  std::mutex open_mu_;         // One open at a time; std:: for TSan.
  std::mutex collections_mu_;  // Held only to look up or insert.
  // Entries are never removed, so the pointers handed out stay valid.
  absl::flat_hash_map<std::string, std::unique_ptr<retrieval::Collection>>
      collections_ ABSL_GUARDED_BY(collections_mu_);
  // Blocking retrieval work runs here, never on gRPC's threads: reads
  // (searches, the rag step of Infer) and writes (ingest).
  std::unique_ptr<WorkerPool> retrieval_pool_;
  std::unique_ptr<WorkerPool> ingest_pool_;
  retrieval::SearchMode search_mode_ = retrieval::SearchMode::kHybrid;
  // Embeds prompts for contextual policies unless the corpus's built-in
  // embedder does.
  std::unique_ptr<retrieval::HashedNgramEmbedder> prompt_embedder_;
  std::unique_ptr<policy::Engine> engine_;
  // Per configured experiment: how each arm routes. Constant after Init.
  struct ExperimentRuntime {
    std::vector<bool> tasks;     // Per task: takes part?
    std::vector<int> arm_route;  // Route of a route arm, else -1.
    std::vector<std::unique_ptr<policy::Engine>> arm_engine;  // Policy arms.
    std::vector<double> arm_share;
  };
  std::vector<ExperimentRuntime> experiments_;
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
  // Publishes statistics periodically; declared last so it stops first.
  std::atomic<bool> stopping_{false};
  std::unique_ptr<TimerQueue> ticker_;
};

}  // namespace arbiter
