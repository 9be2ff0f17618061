#pragma once

#include <array>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "arbiter/v1/config.pb.h"
#include "gateway/backends/backend.h"
#include "gateway/request_id.h"
#include "gateway/resilience/backend_health.h"
#include "policy/economics.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace arbiter {

// How a request that reached a route ended.
enum class Outcome { kOk, kUnavailable, kTimeout, kError, kCancelled };

// Why a request was refused at once, a metric label each.
enum class RejectReason {
  kInvalidRequest,  // It failed validation.
  kNoRoute,         // No route could take it (constraints, ejections).
  kMaxInFlight,     // server.max_in_flight requests were in flight already.
  kRetrievalQueue,  // The retrieval pool's queue was full.
  kBackendQueue,    // Its backend's connections and queue were full.
  kNotPermitted,    // Its tenant may not use the route or task it named.
};
absl::string_view RejectReasonName(RejectReason reason);

// Why a call's API key was refused (UNAUTHENTICATED), a metric label each.
enum class AuthFailure { kMissing, kMalformed, kUnknown, kExpired };

// The gateway's worker pools, a metric label each.
enum class Pool { kRetrieval, kIngest };

// The gateway's Prometheus metrics. Every label value comes from the config
// (route, kind, task, backend) or a fixed set (outcome, direction, code), so
// series stay bounded. Series for each (route, task) exist from the start at
// zero, and the hot path touches them through pre-resolved pointers.
class Metrics final {
 public:
  Metrics(prometheus::Registry& registry, const v1::Config& config);

  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  void RecordDecision(int route, int task, absl::string_view policy,
                      absl::string_view reason_class);
  void RecordCompletion(int route, int task, int64_t input_tokens,
                        int64_t output_tokens, const policy::RequestCost& cost,
                        double latency_seconds);
  void RecordFailure(int route, int task, Outcome outcome,
                     double latency_seconds);
  // A request whose caller went away mid-answer: what was produced is
  // billed (tokens, cost) and also counted apart as cancelled cost.
  void RecordCancelled(int route, int task, int64_t input_tokens,
                       int64_t output_tokens, const policy::RequestCost& cost,
                       double latency_seconds);
  // A request refused at once; code is the gRPC code name. A backend's full
  // queue is counted here too, beside its route's failure.
  void RecordRejected(absl::string_view code, RejectReason reason);
  // A failed attempt tried again on another route; reason is its failure
  // class ("unavailable", "timeout", "rate_limited", "server_error").
  void RecordFallback(int from_route, int to_route, absl::string_view reason);
  // A failed attempt tried again on its own backend, by failure class.
  void RecordRetry(absl::string_view backend, absl::string_view reason);
  // How many attempts a request took, when it ended (1: no fallback).
  void RecordAttempts(int attempts);
  // A fallback the retry budget refused.
  void RecordRetryBudgetExhausted();
  // What a failed attempt billed before its request went on (tokens, cost).
  void RecordFailedAttemptBill(int route, int task, int64_t input_tokens,
                               int64_t output_tokens,
                               const policy::RequestCost& cost);
  // score in [0, 1]; binary feedback is 1 or 0.
  void RecordFeedback(int route, int task, double score, bool graded);
  // Feedback refused because its request id did not verify.
  void RecordFeedbackRejected(RequestIdRejection reason);
  void RecordAuthFailure(AuthFailure reason);
  // Feedback for a request whose feedback was counted already.
  void RecordFeedbackDuplicate();
  // Feedback for a request that failed or was cancelled.
  void RecordFeedbackUnanswered();
  void RecordRetrieval(double seconds);
  // A request or feedback of an experiment's arm (indices into the config).
  void RecordExperimentRequest(int experiment, int arm, bool ok);
  void RecordExperimentFeedback(int experiment, int arm, double score);
  void SetCorpus(size_t documents, size_t chunks);
  // The state store's writer: batches committed and failed so far, and how
  // long the last commit took.
  void SetStateWrites(int64_t committed, int64_t failed,
                      double last_commit_seconds);
  // Fixed costs accrued, cost per correct answer and break-even; called
  // periodically with the ledger's latest figures.
  void UpdateEconomics(const policy::EconomicsSnapshot& snapshot);
  // A worker pool's tasks waiting and running, and tasks it refused.
  void SetPoolLoad(Pool pool, size_t queued, size_t busy);
  void RecordPoolRejected(Pool pool);

 private:
  void RegisterEconomics(prometheus::Registry& registry,
                         const v1::Config& config);

  struct Cell {
    prometheus::Counter* ok;
    prometheus::Counter* unavailable;
    prometheus::Counter* timeout;
    prometheus::Counter* error;
    prometheus::Counter* cancelled;
    prometheus::Counter* cancelled_cost;
    prometheus::Labels labels;  // route, kind, backend, task.
    prometheus::Counter* input_tokens;
    prometheus::Counter* output_tokens;
    prometheus::Counter* cost_input;
    prometheus::Counter* cost_output;
    prometheus::Counter* cost_fee;
    prometheus::Counter* cost_retrieval;
    prometheus::Counter* cost_embedding;
    prometheus::Histogram* duration;
    prometheus::Counter* feedback_correct;
    prometheus::Counter* feedback_incorrect;
    prometheus::Counter* feedback_graded;
    prometheus::Counter* feedback_score;
  };
  Cell& At(int route, int task) { return cells_[route * num_tasks_ + task]; }
  // Tokens, cost components and duration of what a request produced.
  static void Bill(Cell& cell, int64_t input_tokens, int64_t output_tokens,
                   const policy::RequestCost& cost, double latency_seconds);
  static void BillTokens(Cell& cell, int64_t input_tokens,
                         int64_t output_tokens,
                         const policy::RequestCost& cost);

  const int num_tasks_;
  std::vector<Cell> cells_;
  prometheus::Family<prometheus::Counter>& rejected_;
  // By RequestIdRejection. Constant after construction.
  std::array<prometheus::Counter*, 3> feedback_rejected_;
  std::array<prometheus::Counter*, 4> auth_failures_;
  prometheus::Counter* feedback_duplicate_;
  prometheus::Counter* feedback_unanswered_;
  prometheus::Family<prometheus::Counter>* decisions_;
  struct RouteGauges {
    std::string route;
    std::string baseline;
    prometheus::Counter* hosting;
    prometheus::Counter* training;
  };
  std::mutex economics_mu_;  // One updater at a time.
  std::vector<RouteGauges> routes_;
  std::vector<std::string> task_names_;
  prometheus::Family<prometheus::Gauge>* cost_per_correct_;
  prometheus::Family<prometheus::Gauge>* route_cost_per_correct_;
  prometheus::Family<prometheus::Gauge>* recovered_;
  prometheus::Family<prometheus::Gauge>* savings_;
  prometheus::Family<prometheus::Gauge>* savings_per_request_;
  prometheus::Family<prometheus::Gauge>* remaining_;
  prometheus::Family<prometheus::Gauge>* requests_remaining_;
  prometheus::Family<prometheus::Gauge>* days_remaining_;
  prometheus::Family<prometheus::Gauge>* never_;
  struct ArmCounters {
    prometheus::Counter* ok;
    prometheus::Counter* error;
    prometheus::Counter* feedback;
    prometheus::Counter* score;
  };
  std::vector<std::vector<ArmCounters>> experiment_arms_;
  std::vector<std::string> route_names_;
  prometheus::Family<prometheus::Counter>* fallbacks_;
  prometheus::Family<prometheus::Counter>* retries_;
  prometheus::Histogram* attempts_;
  prometheus::Counter* retry_budget_exhausted_;
  prometheus::Histogram* retrieval_duration_;
  prometheus::Counter* state_committed_;
  prometheus::Counter* state_failed_;
  prometheus::Gauge* state_last_commit_;
  prometheus::Gauge* corpus_documents_;
  prometheus::Gauge* corpus_chunks_;
  struct PoolSeries {
    prometheus::Gauge* queued;
    prometheus::Gauge* busy;
    prometheus::Counter* rejected;
  };
  PoolSeries pools_[2];  // By Pool.
};

}  // namespace arbiter
