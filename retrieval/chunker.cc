#include "retrieval/chunker.h"

#include <algorithm>
#include <cstdint>
#include <deque>

#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "retrieval/tokenizer.h"

namespace arbiter::retrieval {
namespace {

// What joins a sentence to the one before it inside a chunk.
enum class Break { kSpace, kLine, kParagraph };

struct Sentence {
  std::string text;
  int64_t tokens = 0;
  Break before = Break::kSpace;
};

// Splits a paragraph after ".", "!" or "?" followed by whitespace, and at
// line breaks (headings and list items stand alone).
std::vector<std::pair<std::string, Break>> SplitSentences(
    absl::string_view paragraph) {
  std::vector<std::pair<std::string, Break>> sentences;
  Break next = Break::kParagraph;
  for (absl::string_view line : absl::StrSplit(paragraph, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    size_t start = 0;
    for (size_t i = 0; i <= line.size(); ++i) {
      bool end = i == line.size() ||
                 ((line[i] == '.' || line[i] == '!' || line[i] == '?') &&
                  (i + 1 == line.size() || absl::ascii_isspace(line[i + 1])));
      if (!end) continue;
      size_t stop = std::min(i + 1, line.size());
      absl::string_view sentence =
          absl::StripAsciiWhitespace(line.substr(start, stop - start));
      if (!sentence.empty()) {
        sentences.emplace_back(std::string(sentence), next);
        next = Break::kSpace;
      }
      start = stop;
    }
    if (next == Break::kSpace) next = Break::kLine;
  }
  return sentences;
}

bool IsWordByte(char c) {
  return absl::ascii_isalnum(c) || static_cast<unsigned char>(c) >= 0x80;
}

// Token cost of appending one character to text whose trailing word run has
// run_length bytes; mirrors CountTokens so a word can be cut incrementally.
int64_t CharacterCost(absl::string_view character, int64_t run_length) {
  if (!IsWordByte(character[0])) {
    return absl::ascii_isspace(character[0]) ? 0 : 1;
  }
  constexpr int64_t kCharsPerToken = 4;
  auto tokens = [](int64_t bytes) {
    return (bytes + kCharsPerToken - 1) / kCharsPerToken;
  };
  return tokens(run_length + static_cast<int64_t>(character.size())) -
         tokens(run_length);
}

// Cuts text into pieces of at most max_tokens, at spaces where possible and
// inside a word (never inside a UTF-8 character) when a word alone is too
// long.
std::vector<std::string> SplitLongSentence(absl::string_view sentence,
                                           int max_tokens) {
  std::vector<std::string> pieces;
  std::string piece;
  int64_t tokens = 0;
  auto flush = [&] {
    absl::string_view text = absl::StripAsciiWhitespace(piece);
    if (!text.empty()) pieces.emplace_back(text);
    piece.clear();
    tokens = 0;
  };
  for (absl::string_view word :
       absl::StrSplit(sentence, ' ', absl::SkipEmpty())) {
    int64_t cost = CountTokens(word);
    if (tokens + cost > max_tokens) flush();
    if (cost <= max_tokens) {
      if (!piece.empty()) piece += ' ';
      piece.append(word.data(), word.size());
      tokens += cost;
      continue;
    }
    // One word longer than a chunk: cut it between UTF-8 characters.
    int64_t run = 0;
    size_t i = 0;
    while (i < word.size()) {
      size_t end = i + 1;
      while (end < word.size() &&
             (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80) {
        ++end;
      }
      absl::string_view character = word.substr(i, end - i);
      if (tokens + CharacterCost(character, run) > max_tokens) {
        flush();
        run = 0;
      }
      tokens += CharacterCost(character, run);
      run = IsWordByte(character[0]) ? run + character.size() : 0;
      piece.append(character.data(), character.size());
      i = end;
    }
  }
  flush();
  return pieces;
}

std::string Join(const std::deque<Sentence>& sentences) {
  std::string text;
  for (const Sentence& sentence : sentences) {
    if (!text.empty()) {
      switch (sentence.before) {
        case Break::kSpace:
          text += ' ';
          break;
        case Break::kLine:
          text += '\n';
          break;
        case Break::kParagraph:
          text += "\n\n";
          break;
      }
    }
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
    for (auto& [sentence, before] : SplitSentences(paragraph)) {
      int64_t tokens = CountTokens(sentence);
      if (tokens <= max_tokens) {
        sentences.push_back({std::move(sentence), tokens, before});
        continue;
      }
      for (std::string& piece : SplitLongSentence(sentence, max_tokens)) {
        tokens = CountTokens(piece);
        sentences.push_back({std::move(piece), tokens, before});
        before = Break::kSpace;
      }
    }
  }
  std::vector<std::string> chunks;
  std::deque<Sentence> current;
  int64_t current_tokens = 0;
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
    }
    current_tokens += sentence.tokens;
    current.push_back(std::move(sentence));
  }
  if (!current.empty()) chunks.push_back(Join(current));
  return chunks;
}

}  // namespace arbiter::retrieval
