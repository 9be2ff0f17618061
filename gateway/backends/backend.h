#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "gateway/loop_guest.h"

namespace arbiter {

struct BackendMessage {
  BackendMessage() = default;
  BackendMessage(std::string role, std::string content)
      : role(std::move(role)), content(std::move(content)) {}
  BackendMessage(std::string role, std::string content,
                 std::string tool_calls_json, std::string tool_call_id,
                 std::string name)
      : role(std::move(role)),
        content(std::move(content)),
        tool_calls_json(std::move(tool_calls_json)),
        tool_call_id(std::move(tool_call_id)),
        name(std::move(name)) {}

  std::string role;
  std::string content;
  // An assistant's tool calls, a JSON array; empty for none.
  std::string tool_calls_json;
  std::string tool_call_id;  // A tool message's; empty otherwise.
  std::string name;          // Empty for none.
};

struct BackendRequest {
  std::string model;
  std::vector<BackendMessage> messages;
  int max_output_tokens = 0;
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::vector<std::string> stop;
  std::optional<int64_t> seed;
  // OpenAI request fields arbiter does not read (tools, response_format...),
  // a JSON object whose members go into the backend's request unchanged;
  // empty for none. A backend that cannot honour them fails the call with
  // INVALID_ARGUMENT naming the first field.
  std::string passthrough_json;
  // Ask the backend to stream (SSE): deltas arrive as generated. Unary
  // calls get the whole text as one delta.
  bool stream = false;
  // The request fails with DEADLINE_EXCEEDED after this long.
  absl::Duration timeout = absl::Seconds(30);
};

// A piece of the answer, in order.
struct BackendDelta {
  std::string text;
  // The delta's other fields the backend sent (tool_calls, logprobs...), a
  // JSON object for the client; empty for none.
  std::string fields_json;
};

struct BackendResponse {
  // The whole text: filled by Complete; a stream's text went out as deltas.
  std::string text;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  bool usage_reported = false;  // False when the backend sent no usage.
  // "stop", "length", "tool_calls"...; empty when the backend said none.
  std::string finish_reason;
  // The answer's other fields matching passthrough_json (message.tool_calls,
  // logprobs, system_fingerprint), a JSON object; empty for none.
  std::string fields_json;
};

// Hears one streamed call, on the backend's event thread, in order: OnDelta
// zero or more times, then OnEnd exactly once. Must not block.
class StreamObserver {
 public:
  virtual ~StreamObserver() = default;
  virtual void OnDelta(BackendDelta delta) = 0;
  // status is OK, the failure, or CANCELLED after Cancel. usage holds the
  // tokens produced so far even when the call failed or was cancelled
  // (counted locally where the backend reported none): they are billed.
  virtual void OnEnd(absl::Status status, BackendResponse usage) = 0;
};

// Cancels one call: the transfer stops at once and OnEnd follows with
// CANCELLED. Thread-safe, idempotent, harmless after the end.
class CallHandle {
 public:
  virtual ~CallHandle() = default;
  virtual void Cancel() = 0;
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
  kRateLimited,  // HTTP 429: a 4xx that is the backend's state, not ours.
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

// A failed call's status carries its BackendError, so the pipeline can tell
// a backend's fault (worth trying elsewhere) from a refused request.
void MarkBackendError(absl::Status& status, BackendError error);
[[nodiscard]] std::optional<BackendError> BackendErrorOf(
    const absl::Status& status);
// How long the backend asked to be left alone (HTTP Retry-After), carried
// the same way.
void MarkRetryAfter(absl::Status& status, absl::Duration wait);
[[nodiscard]] std::optional<absl::Duration> RetryAfterOf(
    const absl::Status& status);

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

// A call that cannot be cancelled (it ends on its own soon).
class UncancellableCall final : public CallHandle {
 public:
  void Cancel() override {}
};

// Something that generates text. Stream never blocks its caller: the
// observer hears the call later, on the backend's own event thread (never
// inline), and its end says UNAVAILABLE, DEADLINE_EXCEEDED or
// RESOURCE_EXHAUSTED (too many requests already waiting) naming the backend
// when it fails. Implementations are thread-safe.
class Backend {
 public:
  virtual ~Backend() = default;
  // The returned handle cancels this call; the observer is kept until its
  // OnEnd has run.
  virtual std::shared_ptr<CallHandle> Stream(
      BackendRequest request, std::shared_ptr<StreamObserver> observer) = 0;
  // Stream gathered into one answer (text joined): done runs exactly once,
  // on the backend's thread.
  void Complete(BackendRequest request, BackendCallback done);
  // Fails every request the backend holds, queued or in flight, with `why`
  // (on the backend's thread, as Complete's callbacks run). Used when
  // shutting down: a hung backend must not hold the process past its grace.
  virtual void CancelAll(const absl::Status& why) = 0;
  [[nodiscard]] virtual absl::string_view name() const = 0;
  // The event loops this backend runs that another thread may host (see
  // LoopGuest); they live as long as the backend.
  [[nodiscard]] virtual std::vector<LoopGuest*> loop_guests() { return {}; }
};

}  // namespace arbiter
