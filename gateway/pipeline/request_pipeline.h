#pragma once

#include <memory>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "arbiter/v1/gateway.pb.h"
#include "gateway/pipeline/gateway_parts.h"
#include "gateway/pipeline/infer_sink.h"

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
  // Builds the prompt (retrieving for a rag route), starts the sink and
  // calls the backend.
  void CallBackend(std::shared_ptr<Call> call);
  // Fails only for a rag route whose retrieval fails.
  absl::StatusOr<BackendRequest> BuildBackendRequest(Call& call);
  void Finish(Call& call, absl::Status status, BackendResponse usage);
  // A request that ended without an answer has nothing to judge: feedback
  // on its id (a stream's first chunk carried it) is refused from now on.
  void RefuseFeedbackOn(const Call& call);

  const GatewayParts& parts_;
};

// The whole answer at once, for unary fronts: fills *response (the deltas'
// text joined) and calls done exactly once. `request` and `response` must
// live until then.
std::shared_ptr<InferHandle> InferWhole(
    RequestPipeline& pipeline, const v1::InferRequest& request,
    absl::Time deadline, v1::InferResponse* response,
    absl::AnyInvocable<void(absl::Status) &&> done);

}  // namespace arbiter
