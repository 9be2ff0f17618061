#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/json.h"
#include "gateway/backends/backend.h"
#include "nlohmann/json.hpp"

namespace arbiter {

// More tokens than any model's context: a count above it is a lie.
inline constexpr int64_t kMaxTokenCount = 1'000'000'000;

// Reads an OpenAI-compatible backend's unary chat completion: the text of
// choices[0].message, its finish reason, the fields passed back to the
// client (tool calls, logprobs, system_fingerprint) and the usage, counted
// locally where missing or null (`prompt_tokens` is the gateway's own count
// of the prompt). INVALID_ARGUMENT naming the field that is wrong; the
// caller says which backend. Plain answers are read in one pass without a
// DOM; any other takes ParseChatAnswerDom, and the two always agree.
[[nodiscard]] absl::StatusOr<BackendResponse> ParseChatAnswer(
    int64_t prompt_tokens, absl::string_view text);
// The same through a whole DOM.
[[nodiscard]] absl::StatusOr<BackendResponse> ParseChatAnswerDom(
    int64_t prompt_tokens, absl::string_view text);

// One event's data of an OpenAI-compatible backend's stream, read.
struct StreamEvent {
  bool done = false;  // "[DONE]": nothing after it counts.
  // An error event: the server failed mid-answer, with its HTTP-like code
  // (0 when it gave none).
  std::optional<int64_t> error_code;
  // choices[0]'s delta: text, and the fields passed back to the client
  // (tool calls, logprobs...) as a JSON object, empty when none.
  std::string text;
  std::string fields_json;
  std::string finish_reason;       // Empty when the event has none.
  std::string system_fingerprint;  // Likewise.
  // Usage, when the event reports it.
  std::optional<int64_t> input_tokens;
  std::optional<int64_t> output_tokens;
};

// Reads one event's data (not UTF-8, not JSON, a field of the wrong type:
// INVALID_ARGUMENT naming it; the caller says which backend).
[[nodiscard]] absl::StatusOr<StreamEvent> ParseStreamEvent(
    absl::string_view data);

// A usage count: an integer in [0, kMaxTokenCount], or 0 when missing or
// null (then *reported is left alone; else set).
[[nodiscard]] absl::StatusOr<int64_t> TokenCount(const json::View& field,
                                                 bool* reported);
// A string field the gateway only passes on: taken when it is a string.
[[nodiscard]] std::string StringIfAny(const json::View& field);
// `value` under `key` in *fields unless it is missing or null.
void PassBack(const json::View& value, absl::string_view key,
              nlohmann::json* fields);

}  // namespace arbiter
