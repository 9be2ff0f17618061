#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace arbiter::retrieval {

// Counts tokens the way BPE tokenizers of English roughly do, without a
// vocabulary: a run of letters or digits costs one token per 4 characters
// (rounded up), every other visible character costs one, whitespace is free.
//
//   CountTokens("How do I reset my password?") == 9
[[nodiscard]] int64_t CountTokens(absl::string_view text);

// Lower-cased runs of ASCII letters and digits, in order.
//
//   Words("Reset, my Password!") == {"reset", "my", "password"}
[[nodiscard]] std::vector<std::string> Words(absl::string_view text);

}  // namespace arbiter::retrieval
