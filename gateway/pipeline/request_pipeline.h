#pragma once

#include <memory>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "arbiter/v1/gateway.pb.h"
#include "gateway/pipeline/gateway_parts.h"
#include "gateway/pipeline/infer_sink.h"
#include "gateway/resilience/backend_health.h"
#include "policy/engine.h"

namespace arbiter {

// One request's way through the gateway, the same for every front:
// validate, decide (policy or experiment), build the route's prompt
// (examples, retrieved context), call the backend, price the answer,
// record statistics, economics and metrics. Never blocks its caller.
// Thread-safe.
class RequestPipeline final {
 public:
  explicit RequestPipeline(const GatewayParts& parts) : parts_(parts) {}

  RequestPipeline(const RequestPipeline&) = delete;
  RequestPipeline& operator=(const RequestPipeline&) = delete;

  // `request` must live until the sink's OnEnd has run.
  std::shared_ptr<InferHandle> Infer(const v1::InferRequest& request,
                                     InferOptions options,
                                     std::shared_ptr<InferSink> sink);

  struct Call;

 private:
  absl::Status Validate(const v1::InferRequest& request, int* task,
                        int* pinned_route) const;
  // The experiment a request of this task takes part in, or -1.
  int ExperimentFor(int task) const;
  std::vector<float> EmbedPrompt(absl::string_view text) const;
  // The policy's (or the experiment arm's) choice among the routes not yet
  // tried whose backends are in service; UNAVAILABLE naming the ejected
  // ones when they were all that was left.
  absl::StatusOr<policy::Decision> Decide(Call& call);
  // Where a failed attempt goes next: its route's fallback_routes, else the
  // policy's next best.
  absl::StatusOr<policy::Decision> DecideFallback(Call& call,
                                                  absl::string_view failure);
  // Issues the attempt's request id and head, then calls the backend (after
  // retrieval, for a rag route).
  void StartAttempt(std::shared_ptr<Call> call, policy::Decision decision);
  // Builds the prompt (retrieving for a rag route) and calls the backend.
  void CallBackend(std::shared_ptr<Call> call);
  // A pinned request falls back only when it says it may.
  bool MayFallBack(const Call& call) const;
  const v1::Fallback& FallbackOf(int task) const;
  // Tries the request on another route if its settings, deadline and the
  // retry budget allow; false when it ends here.
  bool FallBack(Call& call, v1::FailureClass failure,
                const BackendResponse& usage);
  // Tries the attempt again on the same backend after a backoff, if its
  // backend's retry settings, the deadline and the retry budget allow;
  // false when it does not.
  bool Retry(Call& call, v1::FailureClass failure, const absl::Status& status,
             const BackendResponse& usage);
  // A failed attempt that another follows: its error and what it billed.
  void ChargeFailedAttempt(Call& call, const BackendResponse& usage);
  // Records the attempt that just ended (health, budget, attempts list).
  void EndAttempt(Call& call, const absl::Status& status, AttemptResult result);
  // The request ends: its handle, budget share and attempt count.
  void Conclude(Call& call);
  // The final failure, naming each attempt and why none followed.
  static absl::Status WithAttempts(const Call& call,
                                   const absl::Status& status);
  // Fails only for a rag route whose retrieval fails.
  absl::StatusOr<BackendRequest> BuildBackendRequest(Call& call);
  void Finish(Call& call, absl::Status status, BackendResponse usage);
  // A request that ended without an answer has nothing to judge: feedback
  // on its id (a stream's first chunk carried it) is refused from now on.
  void RefuseFeedbackOn(const Call& call);

  // Where a call's outcome is counted: the live parts (see LiveParts) and
  // the call's route, task and arm there, -1 where they have none.
  struct Tally {
    LiveParts live;
    int route;
    int task;
    int experiment;
    int arm;
  };
  [[nodiscard]] Tally TallyOf(const Call& call) const;
  // The attempt that just failed, in its route's error rate.
  static void CountAttemptError(const Tally& tally, const Call& call);

  const GatewayParts& parts_;
};

// The whole answer at once, for unary fronts: fills *response (the deltas'
// text joined) and calls done exactly once. `request` and `response` must
// live until then. `tenant` as in InferOptions.
std::shared_ptr<InferHandle> InferWhole(
    RequestPipeline& pipeline, const v1::InferRequest& request,
    absl::Time deadline, v1::InferResponse* response,
    absl::AnyInvocable<void(absl::Status) &&> done,
    const auth::TenantGrant* tenant = nullptr);

}  // namespace arbiter
