#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
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

// Why a backend call failed, for arbiter_backend_errors_total: a small fixed
// set, so the metric's series stay bounded.
enum class BackendError {
  kMalformed,  // The answer is not the JSON a chat completion must be.
  kTooLarge,   // The answer is over max_response_bytes.
  kHttp3xx,    // An HTTP status other than 200, by class.
  kHttp4xx,
  kHttp5xx,
  kHttpOther,
  kConnect,    // No connection (refused, unreachable, name not resolved).
  kTransport,  // The connection broke or the protocol failed.
  kTimeout,    // No answer within the request's timeout.
  kQueueFull,  // Too many requests already waiting for a connection.
  kInternal,   // Our own failure (an exception on the event thread).
};
inline constexpr int kBackendErrorCount =
    static_cast<int>(BackendError::kInternal) + 1;

// The metric's label value: "malformed", "too_large", "http_4xx"...
[[nodiscard]] absl::string_view BackendErrorName(BackendError error);

// Told of every failed call, on the backend's thread; must be cheap and
// thread-safe. May be empty.
using BackendErrorObserver = std::function<void(BackendError)>;

// The last line of defence on a backend's event thread: runs `produce` and
// turns an exception into INTERNAL naming `what`, so one request fails
// instead of the process.
template <typename T>
[[nodiscard]] absl::StatusOr<T> CatchAll(
    absl::string_view what, absl::FunctionRef<absl::StatusOr<T>()> produce) {
  try {
    return produce();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(what, ": unknown exception"));
  }
}

// Something that generates text. Complete never blocks its caller: the
// callback runs exactly once, later, on the backend's own event thread (never
// inline), with UNAVAILABLE, DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED (too
// many requests already waiting) naming the backend when it fails.
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
