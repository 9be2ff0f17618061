#include "gateway/backends/backend.h"

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "retrieval/tokenizer.h"

namespace arbiter {
namespace {

constexpr absl::string_view kBackendErrorPayload = "arbiter.backend_error";
constexpr absl::string_view kRetryAfterPayload = "arbiter.retry_after_ms";

}  // namespace

void MarkBackendError(absl::Status& status, BackendError error) {
  if (status.ok()) return;
  status.SetPayload(kBackendErrorPayload,
                    absl::Cord(std::to_string(static_cast<int>(error))));
}

std::optional<BackendError> BackendErrorOf(const absl::Status& status) {
  auto payload = status.GetPayload(kBackendErrorPayload);
  int value = 0;
  if (!payload.has_value() ||
      !absl::SimpleAtoi(std::string(*payload), &value) || value < 0 ||
      value >= kBackendErrorCount) {
    return std::nullopt;
  }
  return static_cast<BackendError>(value);
}

void MarkRetryAfter(absl::Status& status, absl::Duration wait) {
  if (status.ok()) return;
  status.SetPayload(
      kRetryAfterPayload,
      absl::Cord(std::to_string(absl::ToInt64Milliseconds(wait))));
}

std::optional<absl::Duration> RetryAfterOf(const absl::Status& status) {
  auto payload = status.GetPayload(kRetryAfterPayload);
  int64_t millis = 0;
  if (!payload.has_value() ||
      !absl::SimpleAtoi(std::string(*payload), &millis) || millis < 0) {
    return std::nullopt;
  }
  return absl::Milliseconds(millis);
}

int64_t CountPromptTokens(const std::vector<BackendMessage>& messages) {
  constexpr int64_t kFramingPerMessage = 4;  // Role and separators.
  int64_t tokens = 0;
  for (const BackendMessage& message : messages) {
    tokens += retrieval::CountTokens(message.content) +
              retrieval::CountTokens(message.tool_calls_json) +
              kFramingPerMessage;
  }
  return tokens;
}

absl::string_view BackendErrorName(BackendError error) {
  switch (error) {
    case BackendError::kMalformed:
      return "malformed";
    case BackendError::kTooLarge:
      return "too_large";
    case BackendError::kHttp3xx:
      return "http_3xx";
    case BackendError::kHttp4xx:
      return "http_4xx";
    case BackendError::kRateLimited:
      return "http_429";
    case BackendError::kHttp5xx:
      return "http_5xx";
    case BackendError::kHttpOther:
      return "http_other";
    case BackendError::kConnect:
      return "connect";
    case BackendError::kTransport:
      return "transport";
    case BackendError::kTimeout:
      return "timeout";
    case BackendError::kQueueFull:
      return "queue_full";
    case BackendError::kInternal:
      return "internal";
  }
  return "internal";
}

}  // namespace arbiter

namespace arbiter {
namespace {

// Gathers a stream into one answer for Complete.
class GatheringObserver final : public StreamObserver {
 public:
  explicit GatheringObserver(BackendCallback done) : done_(std::move(done)) {}

  void OnDelta(BackendDelta delta) override {
    absl::StrAppend(&text_, delta.text);
  }

  void OnEnd(absl::Status status, BackendResponse usage) override {
    if (!status.ok()) {
      std::move(done_)(std::move(status));
      return;
    }
    usage.text = std::move(text_);
    std::move(done_)(std::move(usage));
  }

 private:
  BackendCallback done_;
  std::string text_;
};

}  // namespace

void Backend::Complete(BackendRequest request, BackendCallback done) {
  request.stream = false;
  Stream(std::move(request),
         std::make_shared<GatheringObserver>(std::move(done)));
}

}  // namespace arbiter
