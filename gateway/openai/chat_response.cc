#include "gateway/openai/chat_response.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/json_writer.h"
#include "common/utf8.h"
#include "gateway/openai/render.h"
#include "gateway/openai/request_body.h"

namespace arbiter::openai {
namespace {

// What the backend passed back, split by where OpenAI puts it.
// Each is null (as empty as an empty object, without allocating one) until
// a field is passed back.
struct PassedBack {
  Out message;   // Members of the message or the delta.
  Out logprobs;  // null unless passed back.
  Out top;       // system_fingerprint, service_tier.
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

// A value passed back, as its dump: these are rare and already parsed.
void WriteOut(const Out& value, json::Writer& w) { w.Raw(Dump(value)); }

void StringOrNull(const std::string& text, json::Writer& w) {
  if (text.empty()) {
    w.Null();
  } else {
    w.String(text);
  }
}

void WriteCitations(const v1::InferResponse& response, json::Writer& w) {
  w.Key("citations").BeginArray();
  for (const v1::Citation& citation : response.citations()) {
    w.BeginObject();
    w.Key("doc_id").String(citation.doc_id());
    w.Key("chunk_id").Int(citation.chunk_id());
    w.Key("score").Double(citation.score());
    w.Key("marker").String(citation.marker());
    w.EndObject();
  }
  w.EndArray();
}

void WriteAttempts(const v1::InferResponse& response, json::Writer& w) {
  w.Key("attempts").BeginArray();
  for (const v1::Attempt& attempt : response.attempts()) {
    w.BeginObject();
    w.Key("route").String(attempt.route());
    w.Key("backend").String(attempt.backend());
    w.Key("status").String(attempt.status());
    StringOrNull(attempt.error(), w.Key("error"));
    StringOrNull(attempt.failure(), w.Key("failure"));
    w.Key("latency_seconds").Double(attempt.latency_seconds());
    w.EndObject();
  }
  w.EndArray();
}

void WriteDecision(const v1::Decision& decision, json::Writer& w) {
  w.Key("decision").BeginObject();
  w.Key("policy").String(decision.policy());
  w.Key("reason").String(decision.reason());
  w.Key("propensity").Double(decision.propensity());
  StringOrNull(decision.experiment(), w.Key("experiment"));
  StringOrNull(decision.arm(), w.Key("arm"));
  w.EndObject();
}

// Where the request went: what a stream's start knows.
void WriteRouting(const v1::InferResponse& response, json::Writer& w) {
  w.Key("request_id").String(response.request_id());
  w.Key("route").String(response.route());
  w.Key("kind").String(response.route_kind());
  w.Key("backend").String(response.backend());
  w.Key("model").String(response.model());
  w.Key("task").String(response.task());
}

// What it cost: what a stream's end knows.
void WriteAccounting(const v1::InferResponse& response, json::Writer& w) {
  w.Key("cost_usd").Double(response.cost_usd());
  w.Key("latency_seconds").Double(response.latency_seconds());
  w.Key("usage_estimated").Bool(response.usage().estimated());
}

void WriteUsage(const v1::InferResponse& response, json::Writer& w) {
  const int64_t prompt = response.usage().input_tokens();
  const int64_t completion = response.usage().output_tokens();
  w.Key("usage").BeginObject();
  w.Key("prompt_tokens").Int(prompt);
  w.Key("completion_tokens").Int(completion);
  w.Key("total_tokens").Int(prompt + completion);
  w.EndObject();
}

absl::string_view FinishReason(const std::string& reason) {
  return reason.empty() ? absl::string_view("stop") : reason;
}

// Opens the object: id, object, created, model (and what the backend said
// of itself).
void OpenEnvelope(const CompletionHeader& header, absl::string_view object,
                  const Out& top, json::Writer& w) {
  w.BeginObject();
  w.Key("id").String(header.id);
  w.Key("object").String(object);
  w.Key("created").Int(header.created);
  w.Key("model").String(header.model);
  for (const auto& [name, value] : top.items()) WriteOut(value, w.Key(name));
}

// The members of a message or delta passed back, but `refusal`, which
// has its own place.
void WritePassedMembers(const Out& members, json::Writer& w) {
  for (const auto& [name, value] : members.items()) {
    if (name != "refusal") WriteOut(value, w.Key(name));
  }
}

// Opens a chunk of one choice: choices[0] {index, delta, logprobs,
// finish_reason}, then usage null when the stream will send it. The delta
// is written by `delta`.
template <typename Delta>
void OpenChunk(const CompletionHeader& header, const PassedBack& passed,
               absl::string_view finish_reason, json::Writer& w, Delta delta) {
  OpenEnvelope(header, "chat.completion.chunk", passed.top, w);
  w.Key("choices").BeginArray().BeginObject();
  w.Key("index").Int(0);
  w.Key("delta").BeginObject();
  delta();
  w.EndObject();
  WriteOut(passed.logprobs, w.Key("logprobs"));
  if (finish_reason.empty()) {
    w.Key("finish_reason").Null();
  } else {
    w.Key("finish_reason").String(finish_reason);
  }
  w.EndObject().EndArray();
  if (header.include_usage) w.Key("usage").Null();
}

// Room for an answer's fixed fields, so that it is written in one block;
// with a short text it stays under 1 KiB, which glibc serves from its
// thread cache (a larger block first consolidates its free lists).
constexpr size_t kAnswerBytes = 960;

void BeginEvent(std::string* out) { out->append("data: "); }
// Compact JSON escapes newlines, so an event's data is one line.
void EndEvent(std::string* out) { out->append("\n\n"); }

void AppendFinalChunk(const v1::InferResponse& end,
                      const CompletionHeader& header, const PassedBack& passed,
                      std::string* out) {
  BeginEvent(out);
  json::Writer w(out);
  // The message fields went out as deltas; only the top level is new.
  PassedBack top_only;
  top_only.top = passed.top;
  OpenChunk(header, top_only, FinishReason(end.finish_reason()), w, [] {});
  w.Key("arbiter").BeginObject();
  w.Key("request_id").String(end.request_id());
  WriteAccounting(end, w);
  WriteCitations(end, w);
  WriteAttempts(end, w);
  w.EndObject();
  w.EndObject();
  EndEvent(out);
}

void AppendUsageChunk(const v1::InferResponse& end,
                      const CompletionHeader& header, const PassedBack& passed,
                      std::string* out) {
  BeginEvent(out);
  json::Writer w(out);
  OpenEnvelope(header, "chat.completion.chunk", passed.top, w);
  w.Key("choices").BeginArray().EndArray();
  WriteUsage(end, w);
  w.EndObject();
  EndEvent(out);
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
  const PassedBack passed = Split(response.passthrough_json());
  std::string out;
  out.reserve(kAnswerBytes + response.text().size() +
              response.passthrough_json().size());
  json::Writer w(&out);
  OpenEnvelope(header, "chat.completion", passed.top, w);
  w.Key("choices").BeginArray().BeginObject();
  w.Key("index").Int(0);
  w.Key("message").BeginObject();
  w.Key("role").String("assistant");
  const bool calls = passed.message.contains("tool_calls") ||
                     passed.message.contains("function_call");
  if (response.text().empty() && calls) {
    w.Key("content").Null();
  } else {
    w.Key("content").String(response.text());
  }
  // A passed-back refusal takes the place of arbiter's null.
  if (auto refusal = passed.message.find("refusal");
      refusal != passed.message.end()) {
    WriteOut(*refusal, w.Key("refusal"));
  } else {
    w.Key("refusal").Null();
  }
  WritePassedMembers(passed.message, w);
  w.EndObject();
  WriteOut(passed.logprobs, w.Key("logprobs"));
  w.Key("finish_reason").String(FinishReason(response.finish_reason()));
  w.EndObject().EndArray();
  WriteUsage(response, w);
  w.Key("arbiter").BeginObject();
  WriteRouting(response, w);
  WriteAccounting(response, w);
  WriteDecision(response.decision(), w);
  WriteCitations(response, w);
  WriteAttempts(response, w);
  w.EndObject();
  w.EndObject();
  return out;
}

std::string RenderFirstChunk(const v1::InferResponse& start,
                             const CompletionHeader& header) {
  const PassedBack passed = Split(start.passthrough_json());
  std::string out;
  out.reserve(kAnswerBytes + start.passthrough_json().size());
  BeginEvent(&out);
  json::Writer w(&out);
  OpenChunk(header, passed, "", w, [&] {
    w.Key("role").String("assistant");
    w.Key("content").String("");
    w.Key("refusal").Null();
  });
  w.Key("arbiter").BeginObject();
  WriteRouting(start, w);
  WriteDecision(start.decision(), w);
  WriteCitations(start, w);
  w.EndObject();
  w.EndObject();
  EndEvent(&out);
  return out;
}

std::string RenderDeltaChunk(const v1::TextDelta& delta,
                             const CompletionHeader& header) {
  const PassedBack passed = Split(delta.passthrough_json());
  std::string out;
  out.reserve(kAnswerBytes / 2 + delta.text().size() +
              delta.passthrough_json().size());
  BeginEvent(&out);
  json::Writer w(&out);
  OpenChunk(header, passed, "", w, [&] {
    // A tool call's delta has no text, and says none.
    if (!delta.text().empty() || passed.message.empty()) {
      w.Key("content").String(delta.text());
    }
    for (const auto& [name, value] : passed.message.items()) {
      WriteOut(value, w.Key(name));
    }
  });
  w.EndObject();
  EndEvent(&out);
  return out;
}

std::string RenderFinalChunk(const v1::InferResponse& end,
                             const CompletionHeader& header) {
  std::string out;
  AppendFinalChunk(end, header, Split(end.passthrough_json()), &out);
  return out;
}

std::string RenderUsageChunk(const v1::InferResponse& end,
                             const CompletionHeader& header) {
  std::string out;
  AppendUsageChunk(end, header, Split(end.passthrough_json()), &out);
  return out;
}

std::string RenderStreamEnd(const v1::InferResponse& end,
                            const CompletionHeader& header) {
  const PassedBack passed = Split(end.passthrough_json());
  std::string out;
  out.reserve(2 * kAnswerBytes);
  AppendFinalChunk(end, header, passed, &out);
  if (header.include_usage) AppendUsageChunk(end, header, passed, &out);
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
