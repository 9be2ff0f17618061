#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace arbiter::retrieval {

struct ChunkOptions {
  int chunk_tokens = 200;
  int overlap_tokens = 40;
};

// Splits text into chunks of at most options.chunk_tokens tokens (as counted
// by CountTokens), breaking at paragraph and sentence boundaries where it can
// and only inside a sentence when one sentence alone is too long. Consecutive
// chunks share up to options.overlap_tokens tokens of whole sentences so a
// fact on a boundary is whole in at least one chunk. Empty text gives no
// chunks.
[[nodiscard]] std::vector<std::string> ChunkText(absl::string_view text,
                                                 const ChunkOptions& options);

}  // namespace arbiter::retrieval
