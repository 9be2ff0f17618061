#include "retrieval/retriever.h"

#include <algorithm>
#include <exception>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "retrieval/tokenizer.h"

namespace arbiter::retrieval {
Document ParseDocument(absl::string_view file_name, absl::string_view content) {
  Document document;
  absl::string_view id = file_name;
  if (size_t slash = id.find_last_of("/\\"); slash != absl::string_view::npos) {
    id.remove_prefix(slash + 1);
  }
  if (size_t dot = id.rfind('.'); dot != absl::string_view::npos && dot > 0) {
    id = id.substr(0, dot);
  }
  document.id = std::string(id);
  document.title = document.id;
  // "# " inside a fenced code block is a shell comment, not a heading.
  bool in_code = false;
  for (absl::string_view line : absl::StrSplit(content, '\n')) {
    absl::string_view stripped = absl::StripAsciiWhitespace(line);
    if (absl::StartsWith(stripped, "```") ||
        absl::StartsWith(stripped, "~~~")) {
      in_code = !in_code;
      continue;
    }
    if (!in_code && absl::ConsumePrefix(&stripped, "# ")) {
      stripped = absl::StripAsciiWhitespace(stripped);
      if (!stripped.empty()) {
        document.title = std::string(stripped);
        break;
      }
    }
  }
  document.text = std::string(content);
  return document;
}

Context AssembleContext(const std::vector<Hit>& hits, int max_tokens) {
  Context context;
  absl::flat_hash_set<const Chunk*> seen;
  int64_t used = 0;
  for (const Hit& hit : hits) {
    if (hit.chunk == nullptr || !seen.insert(hit.chunk).second) continue;
    std::string marker = absl::StrCat("[", context.citations.size() + 1, "]");
    std::string header = absl::StrCat(marker, " ", hit.chunk->doc_title, " (",
                                      hit.chunk->doc_id, ")\n");
    std::string entry = absl::StrCat(header, hit.chunk->text, "\n\n");
    int64_t tokens = CountTokens(entry);
    if (used + tokens > max_tokens) {
      if (!context.citations.empty()) break;
      // The best hit alone is too long: keep as many of its words as fit.
      const int64_t budget = max_tokens - CountTokens(header);
      std::string cut;
      int64_t cut_tokens = 0;
      for (absl::string_view word :
           absl::StrSplit(hit.chunk->text, ' ', absl::SkipEmpty())) {
        int64_t cost = CountTokens(word);
        if (cut_tokens + cost > budget) break;
        absl::StrAppend(&cut, cut.empty() ? "" : " ", word);
        cut_tokens += cost;
      }
      if (cut.empty()) break;
      entry = absl::StrCat(header, cut, "\n\n");
      tokens = CountTokens(entry);
    }
    context.block += entry;
    used += tokens;
    context.citations.push_back({hit.chunk, hit.score, std::move(marker)});
  }
  while (absl::EndsWith(context.block, "\n")) context.block.pop_back();
  return context;
}

}  // namespace arbiter::retrieval
