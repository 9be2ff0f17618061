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

// CountTokens over a text that arrives in pieces (a streamed answer),
// without keeping it: the count is that of the pieces joined, so a word
// split between two pieces costs what it costs whole.
//
//   TokenCounter counter;
//   counter.Add("pass");
//   counter.Add("word?");
//   counter.count() == CountTokens("password?")  // 3
class TokenCounter final {
 public:
  void Add(absl::string_view text);
  [[nodiscard]] int64_t count() const;

 private:
  int64_t closed_ = 0;     // Tokens of what is before the open word.
  int64_t open_word_ = 0;  // Bytes of the word the text ends in, so far.
};

// Lower-cased runs of ASCII letters and digits, in order.
//
//   Words("Reset, my Password!") == {"reset", "my", "password"}
[[nodiscard]] std::vector<std::string> Words(absl::string_view text);

}  // namespace arbiter::retrieval
