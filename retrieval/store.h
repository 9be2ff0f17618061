#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct sqlite3;

namespace arbiter::retrieval {

struct SqliteReader;  // A connection and its prepared reads (store.cc).

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

// A search takes at most this many filters, each with at most this many
// values: SQLite's expression tree (1,000 deep) and bound parameters
// (32,766) stay far away.
inline constexpr size_t kMaxMetadataFilters = 64;
inline constexpr size_t kMaxFilterValues = 256;

// INVALID_ARGUMENT naming the limit when there are too many filters or
// values; checks nothing else (KeywordSearch and ChunkIdsMatching check the
// keys and values too).
[[nodiscard]] absl::Status CheckFilterLimits(
    const std::vector<MetadataFilter>& filters);

// The durable source of truth of retrieval: collections, documents (id,
// title, source, metadata, version), chunks and their embeddings, in SQLite
// (WAL mode, synchronous commits: a write returns only once it is durable).
// Keyword search is SQLite's FTS5 with BM25 ranking. Every change is
// numbered, so a derived index can say which position it covers.
// Thread-safe: writes share one connection and run one at a time; reads of
// a file store run on a pool of read-only connections beside them (WAL lets
// each see the last commit), so searches use every core.
class DocumentStore final {
 public:
  struct Options {
    // Keyword search scores every chunk its words match (FTS5 has no early
    // cut), so a query's cost grows with its words' document frequencies.
    // Above this many matches, its commonest words (the lowest BM25 weight)
    // are left out until the rest fit. 0: always exact.
    int64_t keyword_match_budget = 20'000;
    // PruneChangeLog keeps the removal records of this many removals behind
    // the oldest position a hold needs, so a snapshot a little older than
    // the last one (a copy, a backup) still replays; and the latest this
    // many records of the `changes` table.
    int64_t retained_changes = 1000;
  };

  // Keeps the removal records of one collection after a position from
  // PruneChangeLog while it lives: a collection's live index, its snapshot
  // on disk and a rebuild in progress each hold the position they must
  // catch up from. New, it keeps them all; MoveTo(removal) lets go of those
  // up to `removal`. Movable; a default one holds nothing.
  class RemovalHold final {
   public:
    RemovalHold() = default;
    RemovalHold(RemovalHold&& other) noexcept;
    RemovalHold& operator=(RemovalHold&& other) noexcept;
    ~RemovalHold();

    void MoveTo(int64_t removal) const;

   private:
    friend class DocumentStore;
    RemovalHold(DocumentStore* store, uint64_t id) : store_(store), id_(id) {}

    DocumentStore* store_ = nullptr;
    uint64_t id_ = 0;
  };

  // Records of the change log: a collection's removals, the store's
  // changes.
  struct ChangeLogRows {
    int64_t removals = 0;
    int64_t changes = 0;
  };

  // Opens or creates the database at `path` (":memory:" for a private one).
  static absl::StatusOr<std::unique_ptr<DocumentStore>> Open(
      const std::string& path, Options options);
  static absl::StatusOr<std::unique_ptr<DocumentStore>> Open(
      const std::string& path) {
    return Open(path, Options());
  }
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

  // Where a read runs: on a pooled reader, beside writes; or on the write
  // connection, whose page cache a write has just warmed (a reader's is
  // dropped whenever another connection writes), for the writer's own
  // small catch-up after each write.
  enum class ReadOn { kReader, kWriter };

  // The current position, and what changed in a collection since one.
  // Callers that need the two consistent hold off the collection's writers.
  // OUT_OF_RANGE when removals after `since` were pruned (a position no
  // hold kept): only a rebuild from the store catches up from there.
  [[nodiscard]] absl::StatusOr<StorePosition> Position(
      ReadOn on = ReadOn::kReader);
  [[nodiscard]] absl::StatusOr<StoreChanges> ChangesSince(
      absl::string_view collection, StorePosition since,
      ReadOn on = ReadOn::kReader);

  [[nodiscard]] RemovalHold HoldRemovals(absl::string_view collection);
  // Deletes the collection's removal records that no hold needs (all but
  // those after its oldest hold, less retained_changes) and the store's
  // `changes` records but the latest retained_changes, in transactions of
  // at most 1000 rows that let writers in between; returns how many went.
  // A collection without a hold keeps everything: a snapshot on disk may
  // need it.
  absl::StatusOr<ChangeLogRows> PruneChangeLog(absl::string_view collection);
  // How many records the change log holds.
  [[nodiscard]] absl::StatusOr<ChangeLogRows> ChangeLogSize(
      absl::string_view collection);

  // Every chunk of the collection, or of one document, in id order.
  [[nodiscard]] absl::StatusOr<std::vector<StoredChunk>> Chunks(
      absl::string_view collection, absl::string_view doc_id = "");
  // Up to `limit` of the collection's chunks with ids in (after_id,
  // up_to_id], in id order: a bulk read in short transactions.
  [[nodiscard]] absl::StatusOr<std::vector<StoredChunk>> ChunkPage(
      absl::string_view collection, int64_t after_id, int64_t up_to_id,
      int64_t limit);
  // The chunks with these ids (missing ids are skipped), in the given order,
  // without their embeddings.
  [[nodiscard]] absl::StatusOr<std::vector<StoredChunk>> ChunksById(
      const std::vector<int64_t>& ids);

  // BM25 over the collection's chunks; any query word may match. Stop words
  // are left out when other words remain, and the commonest words when the
  // rest exceed the keyword match budget. Only chunks of documents passing
  // every filter are returned. INVALID_ARGUMENT names a malformed filter key
  // or value.
  [[nodiscard]] absl::StatusOr<std::vector<KeywordHit>> KeywordSearch(
      absl::string_view collection, absl::string_view query, int k,
      const std::vector<MetadataFilter>& filters = {});
  // The ids of the chunks whose documents pass every filter.
  [[nodiscard]] absl::StatusOr<std::vector<int64_t>> ChunkIdsMatching(
      absl::string_view collection, const std::vector<MetadataFilter>& filters);

  // The words KeywordSearch looks for in `query`, rarest first.
  [[nodiscard]] std::vector<std::string> KeywordTerms(absl::string_view query);

 private:
  class ReadLease;
  struct CachedCount {
    int64_t chunks = 0;
    int64_t expires_ns = 0;
  };

  DocumentStore(sqlite3* db, std::string reader_path, Options options);
  absl::Status RequireCollection(absl::string_view collection);
  // How many chunks (of any collection) contain `term`, cached briefly;
  // for "", an upper bound on all chunks.
  int64_t ChunksContaining(SqliteReader& reader, const std::string& term);
  // Query words without stop words, most specific first, within the budget.
  std::vector<std::string> TermsWithinBudget(SqliteReader& reader,
                                             absl::string_view query);

  const Options options_;
  // One write connection: a transaction must not take in another thread's
  // statements.
  std::mutex mu_;
  sqlite3* const db_;  // Owned.
  // db_'s prepared reads, used under mu_ when there is no reader pool.
  std::unique_ptr<SqliteReader> writer_reads_;
  // Empty for a private in-memory database, which other connections cannot
  // open: its reads share db_.
  const std::string reader_path_;
  std::mutex readers_mu_;
  std::condition_variable reader_free_;
  std::vector<std::unique_ptr<SqliteReader>> idle_readers_;
  int open_readers_ = 0;
  std::mutex counts_mu_;
  absl::flat_hash_map<std::string, CachedCount> term_counts_;

  struct Hold {
    std::string collection;
    int64_t removal = 0;
  };
  // The oldest removal a hold of the collection needs kept, or -1 if none.
  int64_t OldestHeld(absl::string_view collection);
  std::mutex holds_mu_;  // Taken under mu_ by pruning, never the reverse.
  absl::flat_hash_map<uint64_t, Hold> holds_ ABSL_GUARDED_BY(holds_mu_);
  uint64_t next_hold_ ABSL_GUARDED_BY(holds_mu_) = 1;
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
