#include "retrieval/retriever.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexIDMap.h>
#include <faiss/impl/FaissException.h>
#include <omp.h>

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
namespace {

// The text a chunk is embedded as: the title names what the chunk is about.
std::string EmbeddedText(const Chunk& chunk) {
  return absl::StrCat(chunk.doc_title, "\n", chunk.text);
}

}  // namespace

Retriever::Retriever(int dim) : embedder_(dim) {}
Retriever::~Retriever() = default;

absl::StatusOr<std::unique_ptr<Retriever>> Retriever::Build(
    std::vector<Document> documents, const RetrieverOptions& options) {
  if (options.embedding_dim < 1) {
    return absl::InvalidArgumentError("embedding_dim: must be >= 1");
  }
  absl::flat_hash_set<absl::string_view> ids;
  for (const Document& document : documents) {
    if (document.id.empty()) {
      return absl::InvalidArgumentError("document id: must not be empty");
    }
    if (!ids.insert(document.id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("document id: \"", document.id, "\" appears twice"));
    }
  }
  // Nothing below may throw past the API: FAISS reports errors as exceptions.
  try {
    auto retriever =
        std::unique_ptr<Retriever>(new Retriever(options.embedding_dim));
    for (Document& document : documents) {
      int position = 0;
      for (std::string& text : ChunkText(document.text, options.chunking)) {
        Chunk chunk;
        chunk.id = static_cast<int64_t>(retriever->chunks_.size());
        chunk.doc_id = document.id;
        chunk.doc_title = document.title;
        chunk.position = position++;
        chunk.text = std::move(text);
        retriever->chunks_.push_back(std::move(chunk));
      }
    }
    retriever->document_count_ = documents.size();

    std::vector<std::string> texts;
    texts.reserve(retriever->chunks_.size());
    for (const Chunk& chunk : retriever->chunks_) {
      texts.push_back(EmbeddedText(chunk));
    }
    std::vector<absl::string_view> views(texts.begin(), texts.end());
    retriever->embedder_.Fit(views);

    const int dim = options.embedding_dim;
    std::vector<float> matrix;
    std::vector<faiss::Index::idx_t> labels;
    matrix.reserve(texts.size() * dim);
    labels.reserve(texts.size());
    for (size_t i = 0; i < texts.size(); ++i) {
      std::vector<float> vector = retriever->embedder_.Embed(texts[i]);
      matrix.insert(matrix.end(), vector.begin(), vector.end());
      labels.push_back(retriever->chunks_[i].id);
    }
    auto index =
        std::make_unique<faiss::IndexIDMap2>(new faiss::IndexFlatIP(dim));
    index->own_fields = true;
    if (!labels.empty()) {
      index->add_with_ids(static_cast<faiss::Index::idx_t>(labels.size()),
                          matrix.data(), labels.data());
    }
    retriever->index_ = std::move(index);
    return retriever;
  } catch (const faiss::FaissException& e) {
    return absl::InternalError(
        absl::StrCat("building the index: faiss: ", e.what()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("building the index: ", e.what()));
  }
}

absl::StatusOr<std::vector<Hit>> Retriever::Search(absl::string_view query,
                                                   int k) const {
  if (k < 1) return absl::InvalidArgumentError("k: must be >= 1");
  if (Words(query).empty()) {
    return absl::InvalidArgumentError("query: has no words to search for");
  }
  std::vector<Hit> hits;
  if (chunks_.empty()) return hits;
  // One query, one thread: the thread count is per calling thread, and an
  // OpenMP team per request would cost more than it saves and compete with
  // the server's own threads.
  omp_set_num_threads(1);
  try {
    const int n = static_cast<int>(
        std::min<size_t>(static_cast<size_t>(k), chunks_.size()));
    std::vector<float> query_vector = embedder_.Embed(query);
    std::vector<float> scores(n);
    std::vector<faiss::Index::idx_t> labels(n);
    index_->search(1, query_vector.data(), n, scores.data(), labels.data());
    hits.reserve(n);
    for (int i = 0; i < n; ++i) {
      // FAISS pads missing results with -1.
      if (labels[i] < 0 ||
          labels[i] >= static_cast<faiss::Index::idx_t>(chunks_.size())) {
        continue;
      }
      hits.push_back({&chunks_[labels[i]], scores[i]});
    }
  } catch (const faiss::FaissException& e) {
    return absl::InternalError(absl::StrCat("search: faiss: ", e.what()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("search: ", e.what()));
  }
  return hits;
}

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
