#include "retrieval/tokenizer.h"

#include "absl/strings/ascii.h"

namespace arbiter::retrieval {
namespace {

// Bytes of multi-byte UTF-8 characters count as word characters.
bool IsWordByte(char c) {
  return absl::ascii_isalnum(c) || static_cast<unsigned char>(c) >= 0x80;
}

}  // namespace

int64_t CountTokens(absl::string_view text) {
  constexpr int64_t kCharsPerToken = 4;
  int64_t tokens = 0;
  size_t i = 0;
  while (i < text.size()) {
    if (IsWordByte(text[i])) {
      size_t start = i;
      while (i < text.size() && IsWordByte(text[i])) ++i;
      tokens += (static_cast<int64_t>(i - start) + kCharsPerToken - 1) /
                kCharsPerToken;
    } else {
      if (!absl::ascii_isspace(text[i])) ++tokens;
      ++i;
    }
  }
  return tokens;
}

std::vector<std::string> Words(absl::string_view text) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < text.size()) {
    if (!absl::ascii_isalnum(text[i])) {
      ++i;
      continue;
    }
    size_t start = i;
    while (i < text.size() && absl::ascii_isalnum(text[i])) ++i;
    words.push_back(absl::AsciiStrToLower(text.substr(start, i - start)));
  }
  return words;
}

}  // namespace arbiter::retrieval
