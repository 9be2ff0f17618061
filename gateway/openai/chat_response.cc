#include "gateway/openai/chat_response.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/utf8.h"
#include "gateway/openai/render.h"
#include "gateway/openai/request_body.h"

namespace arbiter::openai {
namespace {

// What the backend passed back, split by where OpenAI puts it.
struct PassedBack {
  Out message = Out::object();  // Members of the message or the delta.
  Out logprobs;                 // null unless passed back.
  Out top = Out::object();      // system_fingerprint, service_tier.
};

PassedBack Split(absl::string_view passthrough_json) {
  PassedBack out;
  if (passthrough_json.empty()) return out;
  // Our own backends wrote it; a broken one must cost its fields only.
  if (NestedDeeperThan(passthrough_json, kMaxJsonDepth)) return out;
  Out fields = IsValidUtf8(passthrough_json)
                   ? Out::parse(passthrough_json, nullptr, false)
                   : Out::parse(RepairUtf8(passthrough_json), nullptr, false);
  if (!fields.is_object()) return out;
  auto add_member = [&](const std::string& name, Out value) {
    if (name == "role" || name == "content") return;
    out.message[name] = std::move(value);
  };
  for (auto& [name, value] : fields.items()) {
    if (name == "logprobs") {
      out.logprobs = std::move(value);
    } else if (name == "system_fingerprint" || name == "service_tier") {
      out.top[name] = std::move(value);
    } else if ((name == "message" || name == "delta") && value.is_object()) {
      for (auto& [inner, inner_value] : value.items()) {
        add_member(inner, std::move(inner_value));
      }
    } else {
      add_member(name, std::move(value));
    }
  }
  return out;
}

Out NullIfEmpty(const std::string& text) {
  return text.empty() ? Out(nullptr) : Out(text);
}

Out Citations(const v1::InferResponse& response) {
  Out citations = Out::array();
  for (const v1::Citation& citation : response.citations()) {
    citations.push_back(Out{{"doc_id", citation.doc_id()},
                            {"chunk_id", citation.chunk_id()},
                            {"score", citation.score()},
                            {"marker", citation.marker()}});
  }
  return citations;
}

Out Attempts(const v1::InferResponse& response) {
  Out attempts = Out::array();
  for (const v1::Attempt& attempt : response.attempts()) {
    attempts.push_back(Out{{"route", attempt.route()},
                           {"backend", attempt.backend()},
                           {"status", attempt.status()},
                           {"error", NullIfEmpty(attempt.error())},
                           {"failure", NullIfEmpty(attempt.failure())},
                           {"latency_seconds", attempt.latency_seconds()}});
  }
  return attempts;
}

Out Decision(const v1::Decision& decision) {
  return Out{{"policy", decision.policy()},
             {"reason", decision.reason()},
             {"propensity", decision.propensity()},
             {"experiment", NullIfEmpty(decision.experiment())},
             {"arm", NullIfEmpty(decision.arm())}};
}

// Where the request went: what a stream's start knows.
void AddRouting(const v1::InferResponse& response, Out* arbiter) {
  (*arbiter)["request_id"] = response.request_id();
  (*arbiter)["route"] = response.route();
  (*arbiter)["kind"] = response.route_kind();
  (*arbiter)["backend"] = response.backend();
  (*arbiter)["model"] = response.model();
  (*arbiter)["task"] = response.task();
}

// What it cost: what a stream's end knows.
void AddAccounting(const v1::InferResponse& response, Out* arbiter) {
  (*arbiter)["cost_usd"] = response.cost_usd();
  (*arbiter)["latency_seconds"] = response.latency_seconds();
  (*arbiter)["usage_estimated"] = response.usage().estimated();
}

Out Usage(const v1::InferResponse& response) {
  const int64_t prompt = response.usage().input_tokens();
  const int64_t completion = response.usage().output_tokens();
  return Out{{"prompt_tokens", prompt},
             {"completion_tokens", completion},
             {"total_tokens", prompt + completion}};
}

std::string FinishReason(const std::string& reason) {
  return reason.empty() ? std::string("stop") : reason;
}

// id, object, created, model (and what the backend said of itself).
Out Envelope(const CompletionHeader& header, absl::string_view object,
             const Out& top) {
  Out out = Out::object();
  out["id"] = header.id;
  out["object"] = object;
  out["created"] = header.created;
  out["model"] = header.model;
  for (const auto& [name, value] : top.items()) out[name] = value;
  return out;
}

// A chunk of one choice: choices[0] {index, delta, logprobs, finish_reason}.
Out Chunk(const CompletionHeader& header, Out delta, Out logprobs,
          Out finish_reason, const Out& top) {
  Out chunk = Envelope(header, "chat.completion.chunk", top);
  Out choice = Out::object();
  choice["index"] = 0;
  choice["delta"] = std::move(delta);
  choice["logprobs"] = std::move(logprobs);
  choice["finish_reason"] = std::move(finish_reason);
  chunk["choices"] = Out::array({std::move(choice)});
  if (header.include_usage) chunk["usage"] = nullptr;
  return chunk;
}

}  // namespace

CompletionHeader MakeCompletionHeader(const ChatCompletion& chat,
                                      const v1::InferResponse& first,
                                      absl::Time now) {
  CompletionHeader header;
  if (!first.request_id().empty()) {
    header.id = absl::StrCat("chatcmpl-", first.request_id());
  } else {
    // Only a pipeline bug leaves the id empty; still, ids must differ.
    static std::atomic<uint64_t> counter{0};
    header.id = absl::StrFormat("chatcmpl-%d-%d", absl::ToUnixNanos(now),
                                counter.fetch_add(1));
  }
  header.created = absl::ToUnixSeconds(now);
  header.model = first.model().empty() ? chat.model : first.model();
  header.include_usage = chat.stream && chat.include_usage;
  return header;
}

std::string RenderChatCompletion(const v1::InferResponse& response,
                                 const CompletionHeader& header) {
  PassedBack passed = Split(response.passthrough_json());
  Out message = Out::object();
  message["role"] = "assistant";
  const bool calls = passed.message.contains("tool_calls") ||
                     passed.message.contains("function_call");
  message["content"] =
      response.text().empty() && calls ? Out(nullptr) : Out(response.text());
  message["refusal"] = nullptr;
  for (auto& [name, value] : passed.message.items()) message[name] = value;

  Out choice = Out::object();
  choice["index"] = 0;
  choice["message"] = std::move(message);
  choice["logprobs"] = std::move(passed.logprobs);
  choice["finish_reason"] = FinishReason(response.finish_reason());

  Out completion = Envelope(header, "chat.completion", passed.top);
  completion["choices"] = Out::array({std::move(choice)});
  completion["usage"] = Usage(response);
  Out arbiter = Out::object();
  AddRouting(response, &arbiter);
  AddAccounting(response, &arbiter);
  arbiter["decision"] = Decision(response.decision());
  arbiter["citations"] = Citations(response);
  arbiter["attempts"] = Attempts(response);
  completion["arbiter"] = std::move(arbiter);
  return Dump(completion);
}

std::string RenderFirstChunk(const v1::InferResponse& start,
                             const CompletionHeader& header) {
  PassedBack passed = Split(start.passthrough_json());
  Out delta = Out::object();
  delta["role"] = "assistant";
  delta["content"] = "";
  delta["refusal"] = nullptr;
  Out chunk = Chunk(header, std::move(delta), std::move(passed.logprobs),
                    nullptr, passed.top);
  Out arbiter = Out::object();
  AddRouting(start, &arbiter);
  arbiter["decision"] = Decision(start.decision());
  arbiter["citations"] = Citations(start);
  chunk["arbiter"] = std::move(arbiter);
  return SseEvent(chunk);
}

std::string RenderDeltaChunk(const v1::TextDelta& delta,
                             const CompletionHeader& header) {
  PassedBack passed = Split(delta.passthrough_json());
  Out out = Out::object();
  // A tool call's delta has no text, and says none.
  if (!delta.text().empty() || passed.message.empty()) {
    out["content"] = delta.text();
  }
  for (auto& [name, value] : passed.message.items()) out[name] = value;
  return SseEvent(Chunk(header, std::move(out), std::move(passed.logprobs),
                        nullptr, passed.top));
}

std::string RenderFinalChunk(const v1::InferResponse& end,
                             const CompletionHeader& header) {
  // The message fields went out as deltas; only the top level is new.
  PassedBack passed = Split(end.passthrough_json());
  Out chunk = Chunk(header, Out::object(), nullptr,
                    FinishReason(end.finish_reason()), passed.top);
  Out arbiter = Out::object();
  arbiter["request_id"] = end.request_id();
  AddAccounting(end, &arbiter);
  arbiter["citations"] = Citations(end);
  arbiter["attempts"] = Attempts(end);
  chunk["arbiter"] = std::move(arbiter);
  return SseEvent(chunk);
}

std::string RenderUsageChunk(const v1::InferResponse& end,
                             const CompletionHeader& header) {
  PassedBack passed = Split(end.passthrough_json());
  Out chunk = Envelope(header, "chat.completion.chunk", passed.top);
  chunk["choices"] = Out::array();
  chunk["usage"] = Usage(end);
  return SseEvent(chunk);
}

std::string RenderStreamEnd(const v1::InferResponse& end,
                            const CompletionHeader& header) {
  std::string out = RenderFinalChunk(end, header);
  if (header.include_usage)
    absl::StrAppend(&out, RenderUsageChunk(end, header));
  absl::StrAppend(&out, kSseDone);
  return out;
}

std::vector<std::pair<std::string, std::string>> ArbiterHeaders(
    const v1::InferResponse& response, bool with_cost) {
  std::vector<std::pair<std::string, std::string>> headers;
  headers.emplace_back("x-arbiter-request-id", response.request_id());
  headers.emplace_back("x-arbiter-route", response.route());
  if (with_cost) {
    headers.emplace_back("x-arbiter-cost-usd",
                         absl::StrFormat("%.9g", response.cost_usd()));
  }
  return headers;
}

}  // namespace arbiter::openai
