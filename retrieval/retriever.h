#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace arbiter::retrieval {

struct Document {
  std::string id;     // e.g. the file name without extension.
  std::string title;  // The first "# " heading, or the id.
  std::string text;
};

struct Chunk {
  int64_t id = 0;  // The store's chunk id.
  std::string doc_id;
  std::string doc_title;
  int position = 0;  // Index of the chunk within its document.
  std::string text;
};

struct Hit {
  const Chunk* chunk = nullptr;  // Owned by the caller.
  float score = 0;               // The search's score; higher is better.
};

// Parses a Markdown or text file into a Document: the id is the file name
// without its extension, the title the first "# " heading.
[[nodiscard]] Document ParseDocument(absl::string_view file_name,
                                     absl::string_view content);

struct Context {
  std::string block;  // The text placed in the prompt.
  struct Cited {
    const Chunk* chunk;
    float score;
    std::string marker;  // "[1]", "[2]", ...
  };
  std::vector<Cited> citations;
};

// Assembles hits (best first) into a context block with citation markers,
// skipping duplicate chunks and stopping before max_tokens would be exceeded
// (the first hit is cut to fit if it alone is too long):
//
//   [1] Reset your password (reset-your-password)
//   To reset your password, open ...
//
//   [2] ...
[[nodiscard]] Context AssembleContext(const std::vector<Hit>& hits,
                                      int max_tokens);

}  // namespace arbiter::retrieval
