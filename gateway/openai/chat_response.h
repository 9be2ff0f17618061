#pragma once

// Chat completion answers as OpenAI sends them: a `chat.completion` object,
// or a stream of `chat.completion.chunk` SSE events, each with arbiter's own
// `arbiter` object beside OpenAI's fields (the official clients keep fields
// they do not know).
//
//   CompletionHeader header = MakeCompletionHeader(chat, response, Now());
//   body = RenderChatCompletion(response, header);         // unary
//
//   // Streamed: one header for the whole stream (same id, created, model).
//   CompletionHeader header = MakeCompletionHeader(chat, start, Now());
//   Send(RenderFirstChunk(start, header));   // role, and where it went
//   Send(RenderDeltaChunk(delta, header));   // for each delta
//   Send(RenderStreamEnd(end, header));      // finish, usage?, [DONE]
//
// What the backend passed back for the request's pass-through fields
// (InferResponse.passthrough_json, TextDelta.passthrough_json: JSON objects)
// is placed where OpenAI puts it:
//   "logprobs"                           -> choices[0].logprobs
//   "system_fingerprint", "service_tier" -> the top level
//   "message" / "delta" (an object)      -> its members into the message
//                                           (unary) or the delta (stream)
//   any other member (tool_calls, function_call, refusal, annotations,
//   audio...)                            -> the message or the delta
// never replacing role, content or arbiter's fields. A message with
// tool_calls and no text has content null, as OpenAI's has.
//
// The `model` field is the model that answered (InferResponse.model, e.g.
// "llama-3.1-8b"), as OpenAI names the snapshot that served an alias; the
// route is in the `arbiter` object and the x-arbiter-route header.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "arbiter/v1/gateway.pb.h"
#include "gateway/openai/chat_request.h"

namespace arbiter::openai {

// Ends every stream, as OpenAI's do.
inline constexpr absl::string_view kSseDone = "data: [DONE]\n\n";

// What every object of one answer repeats.
struct CompletionHeader {
  std::string id;       // "chatcmpl-..."
  int64_t created = 0;  // Unix seconds.
  std::string model;
  // Streams: every chunk says "usage": null until the usage chunk.
  bool include_usage = false;
};

// id "chatcmpl-" + the request id, created `now`, model the one that
// answered (`first` is the unary response or the stream's start), or the
// requested one when the pipeline names none.
[[nodiscard]] CompletionHeader MakeCompletionHeader(
    const ChatCompletion& chat, const v1::InferResponse& first, absl::Time now);

// A `chat.completion` (JSON, UTF-8): choices[0] {index, message {role
// "assistant", content, refusal, passed-back fields}, logprobs,
// finish_reason ("stop" when the backend said none)}, usage {prompt_tokens,
// completion_tokens, total_tokens}, and `arbiter` {request_id, route, kind,
// backend, model, task, cost_usd, latency_seconds, decision {policy,
// reason, propensity, experiment, arm}, citations [{doc_id, chunk_id,
// score, marker}], usage_estimated}.
[[nodiscard]] std::string RenderChatCompletion(
    const v1::InferResponse& response, const CompletionHeader& header);

// SSE events `data: {...}\n\n` of `chat.completion.chunk` objects.
// The first: delta {role "assistant", content "", refusal null} and
// `arbiter` {request_id, route, kind, backend, model, task, decision,
// citations}.
[[nodiscard]] std::string RenderFirstChunk(const v1::InferResponse& start,
                                           const CompletionHeader& header);
// delta {content, passed-back delta fields (tool_calls...)}.
[[nodiscard]] std::string RenderDeltaChunk(const v1::TextDelta& delta,
                                           const CompletionHeader& header);
// delta {}, finish_reason, and `arbiter` {request_id, cost_usd,
// latency_seconds, usage_estimated, citations}.
[[nodiscard]] std::string RenderFinalChunk(const v1::InferResponse& end,
                                           const CompletionHeader& header);
// choices [] and usage: sent after the final chunk when include_usage.
[[nodiscard]] std::string RenderUsageChunk(const v1::InferResponse& end,
                                           const CompletionHeader& header);
// The final chunk, the usage chunk when header.include_usage, and kSseDone.
[[nodiscard]] std::string RenderStreamEnd(const v1::InferResponse& end,
                                          const CompletionHeader& header);

// Response headers naming where a request went: x-arbiter-request-id,
// x-arbiter-route and, with_cost (a unary answer: a stream's cost is known
// only at its end), x-arbiter-cost-usd.
[[nodiscard]] std::vector<std::pair<std::string, std::string>> ArbiterHeaders(
    const v1::InferResponse& response, bool with_cost);

}  // namespace arbiter::openai
