#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "arbiter/v1/config.pb.h"
#include "arbiter/v1/state.pb.h"
#include "gateway/backend_metrics.h"
#include "gateway/backends/backend.h"
#include "gateway/config.h"
#include "gateway/judged_ids.h"
#include "gateway/loop_guest.h"
#include "gateway/metrics.h"
#include "gateway/pipeline/retrieval_service.h"
#include "gateway/request_id.h"
#include "gateway/resilience/backend_health.h"
#include "gateway/resilience/retry_budget.h"
#include "gateway/timer_queue.h"
#include "gateway/worker_pool.h"
#include "policy/decision_log.h"
#include "prometheus/registry.h"
#include "retrieval/collection.h"
#include "retrieval/embedding_client.h"
#include "retrieval/retriever.h"
#include "state/state_store.h"

namespace arbiter {

// One backend as the foundation keeps it: made once per distinct setting.
struct BackendEntry {
  v1::Backend spec;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<BackendHealth> health;
};

// The backends a config names, by name.
using BackendTable = absl::flat_hash_map<std::string, BackendEntry*>;

// What outlives one config and is shared by every generation of the gateway
// built over it: the backends (with their connections and health), the
// retry budget, the document store and its collections, the worker pools,
// the decision log, the judged request ids, the state store and the
// request-id signer. The server, retrieval and state settings build it, so
// changing them needs a restart; everything else may be reloaded.
class GatewayFoundation final {
 public:
  static absl::StatusOr<std::unique_ptr<GatewayFoundation>> Create(
      const LoadedConfig& loaded, prometheus::Registry& registry);
  ~GatewayFoundation();

  GatewayFoundation(const GatewayFoundation&) = delete;
  GatewayFoundation& operator=(const GatewayFoundation&) = delete;

  // The config's backends: one whose settings equal those of a backend
  // made before is that backend, its connections and health kept; the
  // others are made now. Backends are kept until the foundation ends, as
  // an older generation's requests may still be using them.
  absl::StatusOr<BackendTable> BackendsFor(const v1::Config& config,
                                           const FileSource& files);

  // What state.path held at start (empty in memory only), for the first
  // generation to restore.
  [[nodiscard]] const v1::GatewayState& stored_state() const { return stored_; }
  // Starts the state store's writer once the first generation is up;
  // nothing when state lives in memory only.
  void StartStateWriter(std::function<state::StateBatch()> collect);
  // Writes the last batch; before the generations it collects from end.
  void CloseState();

  // Fails every request still waiting on a backend with UNAVAILABLE.
  void CancelInFlight();
  // Every backend's event loop that an I/O thread may run (see LoopGuest).
  [[nodiscard]] std::vector<LoopGuest*> BackendLoops() const;

  [[nodiscard]] RetryBudget& retry_budget() { return *retry_budget_; }
  [[nodiscard]] TimerQueue& retry_timer() { return *retry_timer_; }
  [[nodiscard]] WorkerPool& retrieval_pool() { return *retrieval_pool_; }
  [[nodiscard]] retrieval::Collection* corpus() const { return corpus_; }
  [[nodiscard]] retrieval::SearchMode search_mode() const {
    return search_mode_;
  }
  [[nodiscard]] const retrieval::HashedNgramEmbedder* prompt_embedder() const {
    return prompt_embedder_.get();
  }
  [[nodiscard]] policy::DecisionLog& decisions() { return decisions_; }
  [[nodiscard]] JudgedIds& judged() { return judged_; }
  [[nodiscard]] bool durable() const { return state_store_ != nullptr; }
  [[nodiscard]] state::StateStore* state_store() const {
    return state_store_.get();
  }
  [[nodiscard]] const RequestIdSigner& signer() const { return *signer_; }
  [[nodiscard]] RetrievalService& retrieval() { return *retrieval_; }
  // The corpus and request-id lines of the start-up banner.
  [[nodiscard]] std::string Describe() const;

 private:
  GatewayFoundation(const LoadedConfig& loaded, prometheus::Registry& registry);
  absl::Status Init(const FileSource& files);
  absl::Status InitCorpus(const FileSource& files);
  absl::Status InitState();
  absl::Status InitRequestIds();
  absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(
      const v1::Backend& spec, const FileSource& files,
      const BackendMetrics::Series& series);

  // The config it was built from: its server, retrieval and state settings
  // hold for its whole life.
  const v1::Config config_;
  // Series of what it owns (pools, corpus) that every generation shares.
  Metrics metrics_;
  BackendMetrics backend_metrics_;
  mutable std::mutex backends_mu_;  // std:: so ThreadSanitizer sees it.
  std::vector<std::unique_ptr<BackendEntry>> backends_
      ABSL_GUARDED_BY(backends_mu_);
  std::unique_ptr<RetryBudget> retry_budget_;
  std::unique_ptr<TimerQueue> retry_timer_;
  // The corpus: SQLite store as truth, a derived index for search.
  std::unique_ptr<retrieval::DocumentStore> store_;
  // Embeds chunks and queries when retrieval.embedding_server is set.
  std::unique_ptr<retrieval::EmbeddingClient> embedding_client_;
  std::unique_ptr<Collections> collections_;
  retrieval::Collection* corpus_ = nullptr;
  retrieval::SearchMode search_mode_ = retrieval::SearchMode::kHybrid;
  // Blocking retrieval work runs here, never on a front's threads: reads
  // (searches, the rag step of Infer) and writes (ingest).
  std::unique_ptr<WorkerPool> retrieval_pool_;
  std::unique_ptr<WorkerPool> ingest_pool_;
  std::unique_ptr<retrieval::HashedNgramEmbedder> prompt_embedder_;
  policy::DecisionLog decisions_;
  // Requests whose feedback was counted, for ALREADY_EXISTS.
  JudgedIds judged_;
  // The durable copy of what is learned and accounted; null in memory only.
  std::unique_ptr<state::StateStore> state_store_;
  v1::GatewayState stored_;
  // Signs request ids and verifies feedback's. Constant after Init.
  std::unique_ptr<RequestIdSigner> signer_;
  std::string signer_source_;  // Where its keys came from, for Describe.
  std::unique_ptr<RetrievalService> retrieval_;
};

}  // namespace arbiter
