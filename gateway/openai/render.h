#pragma once

// Writing answers (private to gateway/openai): objects keep the order their
// fields were set in, as OpenAI's answers read ("id" first), and any bytes
// that are not UTF-8 become U+FFFD instead of throwing.

#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace arbiter::openai {

using Out = nlohmann::ordered_json;

[[nodiscard]] inline std::string Dump(const Out& value) {
  return value.dump(-1, ' ', /*ensure_ascii=*/false,
                    Out::error_handler_t::replace);
}

// One SSE event. Compact JSON escapes newlines, so the data is one line.
[[nodiscard]] inline std::string SseEvent(const Out& value) {
  return absl::StrCat("data: ", Dump(value), "\n\n");
}

}  // namespace arbiter::openai
