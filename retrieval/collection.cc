#include "retrieval/collection.h"

#include <faiss/IndexFlat.h>
#include <faiss/impl/IDSelector.h>
#include <omp.h>

#include <mutex>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "retrieval/tokenizer.h"

namespace arbiter::retrieval {

Collection::Collection(DocumentStore& store, std::string name,
                       ChunkOptions chunking, int dim)
    : store_(store),
      name_(std::move(name)),
      chunking_(chunking),
      dim_(dim),
      embedder_(dim) {}

Collection::~Collection() = default;

absl::StatusOr<std::unique_ptr<Collection>> Collection::Open(
    DocumentStore& store, const std::string& name, const ChunkOptions& chunking,
    int embedding_dim) {
  if (embedding_dim < 1) {
    return absl::InvalidArgumentError("embedding_dim: must be >= 1");
  }
  if (absl::Status s = store.CreateCollection(name); !s.ok()) return s;
  auto collection = std::unique_ptr<Collection>(
      new Collection(store, name, chunking, embedding_dim));
  if (absl::Status s = collection->Rebuild(); !s.ok()) return s;
  return collection;
}

// The index is derived: rebuilt from the store's chunks, re-embedding those
// stored without a vector of this dimension.
absl::Status Collection::Rebuild() {
  auto chunks = store_.Chunks(name_);
  if (!chunks.ok()) return chunks.status();
  // A chunk is embedded with its document's title: it names the subject.
  std::vector<std::string> texts;
  for (const StoredChunk& chunk : *chunks) {
    texts.push_back(absl::StrCat(chunk.doc_title, "\n", chunk.text));
  }
  embedder_.Fit(std::vector<absl::string_view>(texts.begin(), texts.end()));
  auto index =
      std::make_unique<faiss::IndexIDMap2>(new faiss::IndexFlatIP(dim_));
  index->own_fields = true;
  std::vector<float> matrix;
  std::vector<faiss::Index::idx_t> ids;
  for (size_t i = 0; i < chunks->size(); ++i) {
    const StoredChunk& chunk = (*chunks)[i];
    std::vector<float> vector = static_cast<int>(chunk.embedding.size()) == dim_
                                    ? chunk.embedding
                                    : embedder_.Embed(texts[i]);
    matrix.insert(matrix.end(), vector.begin(), vector.end());
    ids.push_back(chunk.id);
  }
  try {
    if (!ids.empty()) {
      index->add_with_ids(static_cast<faiss::Index::idx_t>(ids.size()),
                          matrix.data(), ids.data());
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("building the index: ", e.what()));
  }
  std::unique_lock lock(mu_);
  index_ = std::move(index);
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Collection::Upsert(const Document& document,
                                           const std::string& metadata_json) {
  StoredDocument stored;
  stored.id = document.id;
  stored.title = document.title;
  stored.source = document.id;
  stored.metadata_json = metadata_json;
  stored.chunks = ChunkText(document.text, chunking_);
  for (const std::string& chunk : stored.chunks) {
    stored.embeddings.push_back(
        embedder_.Embed(absl::StrCat(document.title, "\n", chunk)));
  }
  std::lock_guard write_lock(write_mu_);
  auto old_chunks = store_.Chunks(name_, document.id);
  if (!old_chunks.ok()) return old_chunks.status();
  auto version = store_.Upsert(name_, stored);
  if (!version.ok()) return version.status();
  // The store is the truth; bring the index in step with it.
  auto chunks = store_.Chunks(name_, document.id);
  if (!chunks.ok()) return chunks.status();
  std::vector<faiss::Index::idx_t> stale;
  for (const StoredChunk& chunk : *old_chunks) stale.push_back(chunk.id);
  if (absl::Status s = Reindex(stale, *chunks); !s.ok()) return s;
  return version;
}

absl::Status Collection::Reindex(const std::vector<faiss::Index::idx_t>& remove,
                                 const std::vector<StoredChunk>& add) {
  std::unique_lock lock(mu_);
  try {
    if (!remove.empty()) {
      faiss::IDSelectorBatch selector(remove.size(), remove.data());
      index_->remove_ids(selector);
    }
    for (const StoredChunk& chunk : add) {
      faiss::Index::idx_t id = chunk.id;
      index_->add_with_ids(1, chunk.embedding.data(), &id);
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("indexing: ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status Collection::Delete(const std::string& doc_id) {
  std::lock_guard write_lock(write_mu_);
  auto chunks = store_.Chunks(name_, doc_id);
  if (!chunks.ok()) return chunks.status();
  if (absl::Status s = store_.Delete(name_, doc_id); !s.ok()) return s;
  std::vector<faiss::Index::idx_t> ids;
  for (const StoredChunk& chunk : *chunks) ids.push_back(chunk.id);
  return Reindex(ids, {});
}

absl::StatusOr<int64_t> Collection::DeleteWhere(const std::string& key,
                                                const std::string& value_json) {
  std::lock_guard write_lock(write_mu_);
  auto before = store_.Chunks(name_);
  if (!before.ok()) return before.status();
  auto deleted = store_.DeleteWhere(name_, key, value_json);
  if (!deleted.ok()) return deleted.status();
  auto after = store_.Chunks(name_);
  if (!after.ok()) return after.status();
  absl::flat_hash_map<int64_t, bool> remaining;
  for (const StoredChunk& chunk : *after) remaining[chunk.id] = true;
  std::vector<faiss::Index::idx_t> gone;
  for (const StoredChunk& chunk : *before) {
    if (!remaining.contains(chunk.id)) gone.push_back(chunk.id);
  }
  if (absl::Status s = Reindex(gone, {}); !s.ok()) return s;
  return deleted;
}

absl::StatusOr<std::vector<SearchHit>> Collection::VectorSearch(
    absl::string_view query, int k,
    const std::vector<MetadataFilter>& filters) const {
  absl::flat_hash_set<int64_t> allowed;
  if (!filters.empty()) {
    auto ids = store_.ChunkIdsMatching(name_, filters);
    if (!ids.ok()) return ids.status();
    allowed.insert(ids->begin(), ids->end());
    k = std::min<int>(k, static_cast<int>(allowed.size()));
    if (k == 0) return std::vector<SearchHit>{};
  }
  std::vector<float> vector = embedder_.Embed(query);
  std::vector<faiss::Index::idx_t> ids;
  std::vector<float> scores;
  std::vector<int64_t> found;
  std::vector<float> found_scores;
  {
    std::shared_lock lock(mu_);
    omp_set_num_threads(1);  // One query: no OpenMP team per request.
    // Over-fetch when filtering, and widen until k allowed chunks are in.
    int64_t fetch = filters.empty() ? k : std::max<int64_t>(4 * k, 32);
    for (;;) {
      const int n = static_cast<int>(std::min<int64_t>(fetch, index_->ntotal));
      if (n == 0) return std::vector<SearchHit>{};
      ids.assign(n, -1);
      scores.assign(n, 0);
      try {
        index_->search(1, vector.data(), n, scores.data(), ids.data());
      } catch (const std::exception& e) {
        return absl::InternalError(absl::StrCat("search: ", e.what()));
      }
      found.clear();
      found_scores.clear();
      for (int i = 0; i < n && static_cast<int>(found.size()) < k; ++i) {
        if (ids[i] < 0) continue;
        if (!filters.empty() && !allowed.contains(ids[i])) continue;
        found.push_back(ids[i]);
        found_scores.push_back(scores[i]);
      }
      if (static_cast<int>(found.size()) >= k || n >= index_->ntotal) break;
      fetch *= 4;
    }
  }
  auto chunks = store_.ChunksById(found);
  if (!chunks.ok()) return chunks.status();
  std::vector<SearchHit> hits;
  for (const StoredChunk& chunk : *chunks) {
    size_t rank =
        std::find(found.begin(), found.end(), chunk.id) - found.begin();
    hits.push_back({chunk.id, chunk.doc_id, chunk.doc_title, chunk.text,
                    found_scores[rank]});
  }
  return hits;
}

absl::StatusOr<std::vector<SearchHit>> Collection::Search(
    absl::string_view query, int k, SearchMode mode,
    const std::vector<MetadataFilter>& filters) const {
  if (k < 1) return absl::InvalidArgumentError("k: must be >= 1");
  if (Words(query).empty()) {
    return absl::InvalidArgumentError("query: has no words to search for");
  }
  if (mode == SearchMode::kVector) return VectorSearch(query, k, filters);
  // Hybrid looks deeper into each list than it returns.
  const int depth = mode == SearchMode::kHybrid ? std::max(k * 4, 50) : k;
  auto keyword = store_.KeywordSearch(name_, query, depth, filters);
  if (!keyword.ok()) return keyword.status();
  if (mode == SearchMode::kKeyword) {
    std::vector<SearchHit> hits;
    for (KeywordHit& hit : *keyword) {
      hits.push_back({hit.chunk_id, std::move(hit.doc_id),
                      std::move(hit.doc_title), std::move(hit.text),
                      hit.score});
    }
    return hits;
  }
  auto vector = VectorSearch(query, depth, filters);
  if (!vector.ok()) return vector.status();
  std::vector<int64_t> keyword_ids, vector_ids;
  absl::flat_hash_map<int64_t, SearchHit> by_id;
  for (const KeywordHit& hit : *keyword) {
    keyword_ids.push_back(hit.chunk_id);
    by_id[hit.chunk_id] = {hit.chunk_id, hit.doc_id, hit.doc_title, hit.text,
                           0};
  }
  for (const SearchHit& hit : *vector) {
    vector_ids.push_back(hit.chunk_id);
    by_id.try_emplace(hit.chunk_id, hit);
  }
  std::vector<SearchHit> hits;
  for (const FusedHit& fused :
       ReciprocalRankFusion({keyword_ids, vector_ids})) {
    if (static_cast<int>(hits.size()) == k) break;
    SearchHit hit = by_id.at(fused.id);
    hit.score = fused.score;
    hits.push_back(std::move(hit));
  }
  return hits;
}

}  // namespace arbiter::retrieval
