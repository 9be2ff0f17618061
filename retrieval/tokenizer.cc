#include "retrieval/tokenizer.h"

#include "absl/strings/ascii.h"

namespace arbiter::retrieval {
namespace {

// Bytes of multi-byte UTF-8 characters count as word characters.
bool IsWordByte(char c) {
  return absl::ascii_isalnum(c) || static_cast<unsigned char>(c) >= 0x80;
}

constexpr int64_t kCharsPerToken = 4;

}  // namespace

void TokenCounter::Add(absl::string_view text) {
  for (char c : text) {
    if (IsWordByte(c)) {
      ++open_word_;
      continue;
    }
    closed_ += (open_word_ + kCharsPerToken - 1) / kCharsPerToken;
    open_word_ = 0;
    if (!absl::ascii_isspace(c)) ++closed_;
  }
}

int64_t TokenCounter::count() const {
  return closed_ + (open_word_ + kCharsPerToken - 1) / kCharsPerToken;
}

int64_t CountTokens(absl::string_view text) {
  TokenCounter counter;
  counter.Add(text);
  return counter.count();
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
