#include "retrieval/chunker.h"

#include <deque>

#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "retrieval/tokenizer.h"

namespace arbiter::retrieval {
namespace {

struct Sentence {
  std::string text;
  int64_t tokens = 0;
  bool starts_paragraph = false;
};

// Splits a paragraph after ".", "!" or "?" followed by whitespace, and at
// line breaks (headings and list items stand alone).
std::vector<std::string> SplitSentences(absl::string_view paragraph) {
  std::vector<std::string> sentences;
  for (absl::string_view line : absl::StrSplit(paragraph, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    size_t start = 0;
    for (size_t i = 0; i < line.size(); ++i) {
      bool end = (line[i] == '.' || line[i] == '!' || line[i] == '?') &&
                 (i + 1 == line.size() || absl::ascii_isspace(line[i + 1]));
      if (!end) continue;
      absl::string_view sentence =
          absl::StripAsciiWhitespace(line.substr(start, i + 1 - start));
      if (!sentence.empty()) sentences.emplace_back(sentence);
      start = i + 1;
    }
    absl::string_view rest = absl::StripAsciiWhitespace(line.substr(start));
    if (!rest.empty()) sentences.emplace_back(rest);
  }
  return sentences;
}

// Cuts one overlong sentence into word runs of at most max_tokens.
std::vector<std::string> SplitLongSentence(const std::string& sentence,
                                           int max_tokens) {
  std::vector<std::string> pieces;
  std::string piece;
  int64_t tokens = 0;
  for (absl::string_view word :
       absl::StrSplit(sentence, ' ', absl::SkipEmpty())) {
    int64_t cost = CountTokens(word);
    if (!piece.empty() && tokens + cost > max_tokens) {
      pieces.push_back(std::move(piece));
      piece.clear();
      tokens = 0;
    }
    if (!piece.empty()) piece += ' ';
    piece.append(word.data(), word.size());
    tokens += cost;
  }
  if (!piece.empty()) pieces.push_back(std::move(piece));
  return pieces;
}

std::string Join(const std::deque<Sentence>& sentences) {
  std::string text;
  for (const Sentence& sentence : sentences) {
    if (!text.empty()) text += sentence.starts_paragraph ? "\n\n" : " ";
    text += sentence.text;
  }
  return text;
}

}  // namespace

std::vector<std::string> ChunkText(absl::string_view text,
                                   const ChunkOptions& options) {
  const int max_tokens = std::max(1, options.chunk_tokens);
  const int overlap = std::clamp(options.overlap_tokens, 0, max_tokens - 1);
  std::vector<Sentence> sentences;
  for (absl::string_view paragraph :
       absl::StrSplit(text, absl::ByString("\n\n"), absl::SkipWhitespace())) {
    bool first = true;
    for (std::string& sentence : SplitSentences(paragraph)) {
      for (std::string& piece : CountTokens(sentence) > max_tokens
                                    ? SplitLongSentence(sentence, max_tokens)
                                    : std::vector<std::string>{sentence}) {
        int64_t tokens = CountTokens(piece);
        sentences.push_back({std::move(piece), tokens, first});
        first = false;
      }
    }
  }
  std::vector<std::string> chunks;
  std::deque<Sentence> current;
  int64_t current_tokens = 0;
  bool has_new = false;  // Whether `current` holds more than the overlap.
  for (Sentence& sentence : sentences) {
    if (!current.empty() && current_tokens + sentence.tokens > max_tokens) {
      chunks.push_back(Join(current));
      // Carry whole trailing sentences, up to the overlap, into the next.
      int64_t kept = 0;
      size_t keep = 0;
      for (auto it = current.rbegin(); it != current.rend(); ++it) {
        if (kept + it->tokens > overlap ||
            kept + it->tokens + sentence.tokens > max_tokens) {
          break;
        }
        kept += it->tokens;
        ++keep;
      }
      current.erase(current.begin(), current.end() - keep);
      current_tokens = kept;
      has_new = false;
    }
    current_tokens += sentence.tokens;
    current.push_back(std::move(sentence));
    has_new = true;
  }
  if (has_new) chunks.push_back(Join(current));
  return chunks;
}

}  // namespace arbiter::retrieval
