#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace arbiter {

struct BackendMessage {
  std::string role;
  std::string content;
};

struct BackendRequest {
  std::string model;
  std::vector<BackendMessage> messages;
  int max_output_tokens = 0;
  std::optional<double> temperature;
  // The request fails with DEADLINE_EXCEEDED after this long.
  absl::Duration timeout = absl::Seconds(30);
};

struct BackendResponse {
  std::string text;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  bool usage_reported = false;  // False when the backend sent no usage.
};

// Counts prompt tokens as a chat model would bill them: each message's
// content plus a few tokens of framing per message. Used where a backend
// reports no usage.
[[nodiscard]] int64_t CountPromptTokens(
    const std::vector<BackendMessage>& messages);

using BackendCallback =
    absl::AnyInvocable<void(absl::StatusOr<BackendResponse>) &&>;

// Something that generates text. Complete never blocks its caller: the
// callback runs later on the backend's own event thread (never inline), with
// UNAVAILABLE or DEADLINE_EXCEEDED naming the backend when it fails.
// Implementations are thread-safe.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual void Complete(BackendRequest request, BackendCallback done) = 0;
  // Fails every request the backend holds, queued or in flight, with `why`
  // (on the backend's thread, as Complete's callbacks run). Used when
  // shutting down: a hung backend must not hold the process past its grace.
  virtual void CancelAll(const absl::Status& why) = 0;
  [[nodiscard]] virtual absl::string_view name() const = 0;
};

}  // namespace arbiter
