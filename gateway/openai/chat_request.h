#pragma once

#include <optional>

// POST /v1/chat/completions: OpenAI's request schema read into arbiter's
// InferRequest. Every error is INVALID_ARGUMENT naming the field path, with
// the path attached as OpenAI's `param` (ParamOf in errors.h), so a handler
// answers any failure with ErrorFor(status):
//
//   std::vector<std::pair<absl::string_view, absl::string_view>> headers;
//   for (const auto& field : request) {
//     headers.emplace_back(field.name_string(), field.value());
//   }
//   auto chat = ParseChatCompletionRequest(request.body(), headers);
//   if (!chat.ok()) return Reply(ErrorFor(chat.status()));
//   // A pinned route (model, or arbiter.route beside arbiter/auto):
//   if (!chat->request.route().empty() && !known(chat->request.route()))
//     return Reply(ErrorFor(UnknownModel(*chat, route_names)));   // 404
//   pipeline.Infer(chat->request, ...);   // or stream if chat->stream
//
// The schema (README.md, "OpenAI-compatible HTTP front: request schema"):
//   model       required: "arbiter/auto" (the policy chooses) or a route
//               name (pins that route: request.route)
//   messages    required, non-empty; role system, developer (= system),
//               user or assistant; content a string or an array of
//               {"type": "text", "text"} parts, joined with "\n". Image,
//               audio and file parts, tool and function messages, tool
//               calls and `name` are refused naming the field: arbiter's
//               messages carry a role and text only.
//   max_completion_tokens, max_tokens   integers >= 1; both may be sent
//               only with the same value
//   temperature [0, 2]; top_p (0, 1]; stop a string or up to 4; seed an
//               integer; n 1 (n > 1: "arbiter returns one choice")
//   user        the unit id for sticky experiment assignment, unless
//               arbiter's own unit id is given
//   stream, stream_options.include_usage (stream_options needs stream)
//   metadata    up to 16 string values, keys <= 64 bytes, values <= 512
//   arbiter     {task, unit_id, route, max_cost_usd, min_accuracy,
//               allow_fallback}; each
//               overrides the matching header (headers are a client's
//               defaults, the body is this request's)
//   kPassThrough fields go to the backend unchanged (passthrough_json);
//   any other field is refused naming it. null is the same as absent.
// Headers: x-arbiter-task, x-arbiter-unit-id, x-arbiter-max-cost-usd,
// x-arbiter-min-accuracy; another x-arbiter-* header is refused (a typo
// must not go unnoticed), others are ignored.

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "arbiter/v1/gateway.pb.h"

namespace arbiter::openai {

// The model name that lets the policy choose the route.
inline constexpr absl::string_view kAutoModel = "arbiter/auto";

// Request fields arbiter does not read, copied unchanged into
// InferRequest.passthrough_json (a JSON object) for the backend; their
// answers come back through InferResponse.passthrough_json (see
// chat_response.h). A backend that cannot honour one refuses the request.
inline constexpr absl::string_view kPassThrough[] = {
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "response_format",
    "logprobs",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "service_tier",
    "reasoning_effort",
    // Sampling knobs of vLLM, TGI and llama.cpp servers (OpenAI refuses
    // them, as it should).
    "top_k",
    "min_p",
    "repetition_penalty",
};

// The request headers arbiter reads (lower case; matched case-insensitively).
inline constexpr absl::string_view kTaskHeader = "x-arbiter-task";
inline constexpr absl::string_view kUnitIdHeader = "x-arbiter-unit-id";
inline constexpr absl::string_view kMaxCostHeader = "x-arbiter-max-cost-usd";
inline constexpr absl::string_view kMinAccuracyHeader =
    "x-arbiter-min-accuracy";
// "true" lets a request pinned to a route fall back to others.
inline constexpr absl::string_view kAllowFallbackHeader =
    "x-arbiter-allow-fallback";
// Milliseconds the whole request may take (every attempt and every wait);
// past it the answer is 504 with what was still waited on.
inline constexpr absl::string_view kTimeoutHeader = "x-arbiter-timeout-ms";

// A request's header fields, as the HTTP server has them (names in any case).
using HeaderFields =
    absl::Span<const std::pair<absl::string_view, absl::string_view>>;

struct ChatCompletion {
  // For the pipeline: messages, task, unit_id, route (pinned unless the
  // model is kAutoModel), limits, constraints, metadata, passthrough_json.
  v1::InferRequest request;
  // As the client sent it.
  std::string model;
  // model is kAutoModel: the policy chooses (or arbiter.route pins).
  bool auto_route = false;
  // The field that named request.route ("model" or "arbiter.route"), for
  // the error when the caller does not know the route; empty without one.
  std::string route_param;
  bool stream = false;
  // stream_options.include_usage: a usage chunk ends the stream.
  bool include_usage = false;
  // x-arbiter-timeout-ms or arbiter.timeout_ms: the request's deadline is
  // this long after it arrived.
  std::optional<absl::Duration> timeout;
};

[[nodiscard]] absl::StatusOr<ChatCompletion> ParseChatCompletionRequest(
    absl::string_view body, HeaderFields headers = {});

// NOT_FOUND for a request whose route the caller does not know: for
// `model`, OpenAI's 404 model_not_found, listing what is served.
//   "model: unknown model \"gpt-5\" (served: arbiter/auto, fast, rag)"
[[nodiscard]] absl::Status UnknownModel(const ChatCompletion& chat,
                                        absl::Span<const std::string> routes);

}  // namespace arbiter::openai
