#pragma once

#include <cstdint>
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
