#pragma once

#include <faiss/IndexIDMap.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "retrieval/chunker.h"
#include "retrieval/embedder.h"
#include "retrieval/retriever.h"
#include "retrieval/store.h"

namespace arbiter::retrieval {

enum class SearchMode { kKeyword, kVector, kHybrid };

struct SearchHit {
  int64_t chunk_id = 0;
  std::string doc_id;
  std::string doc_title;
  std::string text;
  double score = 0;  // Mode-specific: BM25, cosine, or fused votes.
};

// One collection of the store with its derived vector index: writes go to
// SQLite first (the source of truth) and then to the FAISS index; searches
// are keyword (BM25), vector (cosine) or hybrid (reciprocal rank fusion of
// both). Thread-safe.
class Collection final {
 public:
  // Creates the collection if needed and builds the vector index from what
  // the store holds.
  static absl::StatusOr<std::unique_ptr<Collection>> Open(
      DocumentStore& store, const std::string& name,
      const ChunkOptions& chunking, int embedding_dim);
  ~Collection();

  // Chunks, embeds and stores the document, replacing any older version.
  absl::StatusOr<int64_t> Upsert(const Document& document,
                                 const std::string& metadata_json = "{}");
  absl::Status Delete(const std::string& doc_id);
  // Deletes the documents whose metadata has `key` equal to the JSON scalar
  // `value_json`; returns how many.
  absl::StatusOr<int64_t> DeleteWhere(const std::string& key,
                                      const std::string& value_json);

  // With filters, only chunks of documents whose metadata passes every
  // filter are returned, still k of them when k exist (the vector search
  // over-fetches and retries until it has them).
  [[nodiscard]] absl::StatusOr<std::vector<SearchHit>> Search(
      absl::string_view query, int k, SearchMode mode,
      const std::vector<MetadataFilter>& filters = {}) const;

  // The query-side embedding, e.g. for a policy that compares prompts.
  [[nodiscard]] std::vector<float> Embed(absl::string_view text) const {
    return embedder_.Embed(text);
  }

 private:
  Collection(DocumentStore& store, std::string name, ChunkOptions chunking,
             int dim);
  absl::Status Rebuild();
  // Removes chunk ids from the index and adds chunks (with embeddings).
  absl::Status Reindex(const std::vector<faiss::Index::idx_t>& remove,
                       const std::vector<StoredChunk>& add);
  absl::StatusOr<std::vector<SearchHit>> VectorSearch(
      absl::string_view query, int k,
      const std::vector<MetadataFilter>& filters) const;

  DocumentStore& store_;
  const std::string name_;
  const ChunkOptions chunking_;
  const int dim_;
  HashedNgramEmbedder embedder_;  // Fitted once at Open.
  std::mutex write_mu_;           // Serializes writers: store, then index.
  mutable std::shared_mutex mu_;  // Guards the index against its readers.
  std::unique_ptr<faiss::IndexIDMap2> index_ ABSL_GUARDED_BY(mu_);
};

}  // namespace arbiter::retrieval
