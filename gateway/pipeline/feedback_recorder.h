#pragma once

#include <optional>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "arbiter/v1/gateway.pb.h"
#include "gateway/pipeline/gateway_parts.h"

namespace arbiter {

// Takes a judgement of an answer: verifies its request id (signed by this
// deployment, within the feedback window), counts it once, and credits the
// route, the experiment arm, the policy and the economics. Thread-safe.
class FeedbackRecorder final {
 public:
  explicit FeedbackRecorder(const GatewayParts& parts) : parts_(parts) {}

  FeedbackRecorder(const FeedbackRecorder&) = delete;
  FeedbackRecorder& operator=(const FeedbackRecorder&) = delete;

  // INVALID_ARGUMENT for a bad outcome or id, ALREADY_EXISTS for a repeat,
  // NOT_FOUND when the id's route or task left the config. With `tenant`,
  // the caller is that tenant: PERMISSION_DENIED for an id another tenant
  // (or an admin) was issued.
  [[nodiscard]] absl::StatusOr<v1::FeedbackResponse> Record(
      const v1::FeedbackRequest& request,
      std::optional<absl::string_view> tenant = std::nullopt);

 private:
  const GatewayParts& parts_;
};

}  // namespace arbiter
