#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct sqlite3;

namespace arbiter::retrieval {

// A document as stored: its chunks and their embeddings come with it, so a
// write is one transaction and never half-applied.
struct StoredDocument {
  std::string id;
  std::string title;
  std::string source;
  std::string metadata_json = "{}";  // A JSON object.
  std::vector<std::string> chunks;
  std::vector<std::vector<float>> embeddings;  // One per chunk (may be empty).
};

struct StoredChunk {
  int64_t id = 0;
  std::string doc_id;
  std::string doc_title;
  int position = 0;
  std::string text;
  std::vector<float> embedding;  // Empty if none was stored.
};

struct KeywordHit {
  int64_t chunk_id = 0;
  std::string doc_id;
  std::string doc_title;
  int position = 0;
  std::string text;
  double score = 0;  // BM25; higher is better.
};

// How far the store has gone: the last removal and the last chunk added.
// Chunk ids only grow, so a derived index at a position catches up with the
// removals after it and the chunks above it.
struct StorePosition {
  int64_t removal = 0;
  int64_t chunk = 0;
  bool operator==(const StorePosition&) const = default;
};

struct StoreChanges {
  std::vector<int64_t> removed_chunk_ids;
  std::vector<StoredChunk> added;  // In id order, with their embeddings.
};

// Keeps documents whose metadata has `key` equal to one of `values_json`
// (JSON scalars as text: "\"faq\"", "3", "true").
struct MetadataFilter {
  std::string key;
  std::vector<std::string> values_json;
};

// The durable source of truth of retrieval: collections, documents (id,
// title, source, metadata, version), chunks and their embeddings, in SQLite
// (WAL mode, synchronous commits: a write returns only once it is durable).
// Keyword search is SQLite's FTS5 with BM25 ranking. Every change is
// numbered, so a derived index can say which position it covers.
// Thread-safe: one connection; each call holds it for its whole work.
class DocumentStore final {
 public:
  // Opens or creates the database at `path` (":memory:" for a private one).
  static absl::StatusOr<std::unique_ptr<DocumentStore>> Open(
      const std::string& path);
  ~DocumentStore();

  DocumentStore(const DocumentStore&) = delete;
  DocumentStore& operator=(const DocumentStore&) = delete;

  // Idempotent. INVALID_ARGUMENT for a malformed name.
  absl::Status CreateCollection(absl::string_view name);
  [[nodiscard]] absl::StatusOr<std::vector<std::string>> Collections();

  // Inserts or replaces a document and all its chunks atomically; returns
  // its new version (1 for a new document). NOT_FOUND for an unknown
  // collection; INVALID_ARGUMENT for an empty id or text, or metadata that
  // is not a JSON object.
  absl::StatusOr<int64_t> Upsert(absl::string_view collection,
                                 const StoredDocument& document);
  // NOT_FOUND if the document does not exist.
  absl::Status Delete(absl::string_view collection, absl::string_view doc_id);
  // Deletes the documents whose metadata has `key` equal to `value` (a JSON
  // scalar as text, e.g. "\"faq\"" or "3"); returns how many.
  absl::StatusOr<int64_t> DeleteWhere(absl::string_view collection,
                                      absl::string_view key,
                                      absl::string_view value_json);

  [[nodiscard]] absl::StatusOr<int64_t> DocumentCount(
      absl::string_view collection);
  [[nodiscard]] absl::StatusOr<int64_t> ChunkCount(
      absl::string_view collection);
  // The number of the latest change (0 for an empty store).
  [[nodiscard]] absl::StatusOr<int64_t> LastChange();

  // The current position, and what changed in a collection since one.
  // Callers that need the two consistent hold off the collection's writers.
  [[nodiscard]] absl::StatusOr<StorePosition> Position();
  [[nodiscard]] absl::StatusOr<StoreChanges> ChangesSince(
      absl::string_view collection, StorePosition since);

  // Every chunk of the collection, or of one document, in id order.
  [[nodiscard]] absl::StatusOr<std::vector<StoredChunk>> Chunks(
      absl::string_view collection, absl::string_view doc_id = "");
  // The chunks with these ids (missing ids are skipped), in the given order.
  [[nodiscard]] absl::StatusOr<std::vector<StoredChunk>> ChunksById(
      const std::vector<int64_t>& ids);

  // BM25 over the collection's chunks; any query word may match. Only
  // chunks of documents passing every filter are returned. INVALID_ARGUMENT
  // names a malformed filter key or value.
  [[nodiscard]] absl::StatusOr<std::vector<KeywordHit>> KeywordSearch(
      absl::string_view collection, absl::string_view query, int k,
      const std::vector<MetadataFilter>& filters = {});
  // The ids of the chunks whose documents pass every filter.
  [[nodiscard]] absl::StatusOr<std::vector<int64_t>> ChunkIdsMatching(
      absl::string_view collection, const std::vector<MetadataFilter>& filters);

 private:
  explicit DocumentStore(sqlite3* db) : db_(db) {}
  absl::Status RequireCollection(absl::string_view collection);

  // One connection: a transaction must not take in another thread's
  // statements, and a reader must not see a write half done.
  std::mutex mu_;
  sqlite3* const db_;  // Owned.
};

// Reciprocal rank fusion: each list votes 1 / (k + rank) for its items
// (rank from 1); items are returned by total vote, best first. k = 60 is
// the usual choice.
struct FusedHit {
  int64_t id = 0;
  double score = 0;
};
[[nodiscard]] std::vector<FusedHit> ReciprocalRankFusion(
    const std::vector<std::vector<int64_t>>& ranked_lists, double k = 60);

}  // namespace arbiter::retrieval
