#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "retrieval/chunker.h"
#include "retrieval/embedder.h"
#include "retrieval/retriever.h"
#include "retrieval/store.h"
#include "retrieval/vector_index.h"

namespace arbiter::retrieval {

enum class SearchMode { kKeyword, kVector, kHybrid };

struct SearchHit {
  int64_t chunk_id = 0;
  std::string doc_id;
  std::string doc_title;
  std::string text;
  double score = 0;  // Mode-specific: BM25, cosine, or fused votes.
};

// Embeds texts elsewhere (an embedding server); one unit vector per text.
using RemoteEmbedder =
    std::function<absl::StatusOr<std::vector<std::vector<float>>>(
        absl::Span<const std::string> texts)>;

struct CollectionOptions {
  ChunkOptions chunking;
  int embedding_dim = 512;
  // When set, vectors come from it (of embedding_dim dimensions) instead of
  // the built-in hashed n-gram embedder.
  RemoteEmbedder remote_embedder;
  IndexOptions index;
  // Where the index snapshot lives; empty: the index is rebuilt at every
  // open and never saved.
  std::string snapshot_path;
  // A snapshot is written once this many chunks changed, or after the
  // interval when fewer did.
  int64_t snapshot_every_changes = 1000;
  absl::Duration snapshot_interval = absl::Seconds(30);
  // The index is rebuilt in the background once this share of its rows
  // are tombstones (at least 64 of them).
  double rebuild_tombstone_share = 0.2;
  // Runs the snapshot and rebuild thread; tests may drive them by hand.
  bool background_maintenance = true;
  // Receives one line per notable event (snapshot loaded, rebuilt, ...).
  std::function<void(absl::string_view)> log;
};

// What `arbiter index stats` shows about a collection's vector index.
struct IndexStats {
  IndexKind kind = IndexKind::kFlat;
  int64_t vectors = 0;
  int64_t tombstones = 0;
  int64_t memory_bytes = 0;
  StorePosition position;   // What the live index covers.
  int64_t rebuilds = 0;     // Since open, including background ones.
  std::string opened_from;  // How the index came to be at open.
  std::string snapshot_path;
  bool snapshot_saved = false;
  StorePosition snapshot_position;
  absl::Time snapshot_time = absl::InfinitePast();
  int64_t snapshot_bytes = 0;
  // How long the last snapshot's copy of the index held index updates off
  // (writers' store commits go on meanwhile).
  absl::Duration snapshot_copy = absl::ZeroDuration();
  int64_t changes_since_snapshot = 0;
  // Times the index's arrays were given more room ahead of need, and how
  // long the last one held index updates off (the copy itself does not).
  int64_t growths = 0;
  absl::Duration growth_hold = absl::ZeroDuration();
};

// One collection of the store with its derived vector index: writes go to
// SQLite first (the source of truth) and then to the index, which catches up
// with the store's numbered changes; searches are keyword (BM25), vector
// (cosine) or hybrid (reciprocal rank fusion of both). The index is loaded
// from its snapshot when one matches, rebuilt from the store otherwise, and
// rebuilt in the background when tombstones pile up or `auto` would now pick
// another kind. Thread-safe.
class Collection final {
 public:
  static absl::StatusOr<std::unique_ptr<Collection>> Open(
      DocumentStore& store, const std::string& name,
      const CollectionOptions& options);
  static absl::StatusOr<std::unique_ptr<Collection>> Open(
      DocumentStore& store, const std::string& name,
      const ChunkOptions& chunking, int embedding_dim) {
    CollectionOptions options;
    options.chunking = chunking;
    options.embedding_dim = embedding_dim;
    return Open(store, name, options);
  }
  // Stops the background thread and saves a snapshot if changes are unsaved.
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
  // filter are returned, still k of them when k exist (the index skips the
  // others inside FAISS, and scores them exactly when too few pass).
  [[nodiscard]] absl::StatusOr<std::vector<SearchHit>> Search(
      absl::string_view query, int k, SearchMode mode,
      const std::vector<MetadataFilter>& filters = {}) const;

  // The query-side embedding, e.g. for a policy that compares prompts.
  [[nodiscard]] absl::StatusOr<std::vector<float>> Embed(
      absl::string_view text) const;

  // Rebuilds the index from the store now (the background thread does this
  // by itself when it is due); writes go on meanwhile.
  absl::Status Rebuild();
  // Writes the snapshot now (no-op without a snapshot path), then prunes
  // the change log.
  absl::Status SaveSnapshot();
  // Deletes the store's change records this collection no longer needs:
  // removals before its live index, its snapshot and any rebuild in
  // progress (less the store's retained_changes). Done after each snapshot
  // and every 10 s by the background thread. A collection that is not open
  // keeps its records, so its snapshot replays at the next open; one whose
  // records were pruned past its snapshot is rebuilt from the store.
  absl::Status PruneChangeLog();
  [[nodiscard]] IndexStats Stats() const;

 private:
  Collection(DocumentStore& store, std::string name, CollectionOptions options);
  // The store's changes since a position, ready to apply to an index.
  struct Pending {
    std::vector<int64_t> removed;
    std::vector<int64_t> ids;
    std::vector<float> vectors;
    StorePosition position;  // Where the index is once they are applied.
  };
  // With `stored_vectors`, the store's embeddings are used as they are
  // (they were made by `embedder`); otherwise built-in ones are remade.
  absl::StatusOr<Pending> Gather(DocumentStore::ReadOn on, StorePosition since,
                                 const HashedNgramEmbedder* embedder,
                                 bool stored_vectors)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Brings the live index up to the store after a write.
  absl::Status CatchUpLive(bool stored_vectors)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::StatusOr<std::vector<std::vector<float>>> EmbedTexts(
      const std::vector<std::string>& texts,
      const HashedNgramEmbedder* embedder) const;
  // Loads the snapshot if it matches, else builds from the store.
  absl::Status Load();
  absl::Status WriteSnapshot();
  // The index's best k (ids and scores), filters applied.
  absl::StatusOr<std::vector<Neighbor>> VectorNeighbors(
      absl::string_view query, int k,
      const std::vector<MetadataFilter>& filters) const;
  absl::StatusOr<std::vector<SearchHit>> VectorSearch(
      absl::string_view query, int k,
      const std::vector<MetadataFilter>& filters) const;
  // Runs GrowAhead on the grower thread (unless it is already running), so
  // a long rebuild on the maintenance thread does not hold it up.
  void StartGrower();
  // Gives the index's arrays more room (VectorIndex::Growth).
  void GrowAhead();
  bool RebuildDue() const;
  bool Stopping();  // The collection is closing: background work ends.
  void MaintenanceLoop();
  void Log(absl::string_view line) const;

  DocumentStore& store_;
  const std::string name_;
  const CollectionOptions options_;
  const bool remote_;  // Vectors come from an embedding server.

  std::mutex write_mu_;           // Serializes writers: store, then index.
  mutable std::shared_mutex mu_;  // Guards the index against its readers.
  std::unique_ptr<VectorIndex> index_ ABSL_GUARDED_BY(mu_);
  // The built-in embedder the index's vectors were made with (null when
  // remote), and the chunk count its weights were fitted on.
  std::shared_ptr<const HashedNgramEmbedder> embedder_ ABSL_GUARDED_BY(mu_);
  int64_t fitted_on_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t built_size_ ABSL_GUARDED_BY(mu_) = 0;
  StorePosition position_ ABSL_GUARDED_BY(mu_);  // What the index covers.
  // Keeps the store's removals after position_ (all of them until loaded).
  DocumentStore::RemovalHold live_hold_ ABSL_GUARDED_BY(mu_);
  // Changes whenever index_ is replaced: a growth started on an index that
  // is gone is dropped.
  int64_t index_generation_ ABSL_GUARDED_BY(mu_) = 0;

  std::mutex snapshot_mu_;  // One snapshot writer at a time.
  // Keeps the removals after the snapshot on disk, once one is.
  DocumentStore::RemovalHold snapshot_hold_ ABSL_GUARDED_BY(snapshot_mu_);
  std::atomic<int64_t> changes_since_snapshot_{0};
  std::atomic<int64_t> rebuilds_{0};
  mutable std::mutex stats_mu_;
  std::string opened_from_ ABSL_GUARDED_BY(stats_mu_);
  bool snapshot_saved_ ABSL_GUARDED_BY(stats_mu_) = false;
  StorePosition snapshot_position_ ABSL_GUARDED_BY(stats_mu_);
  absl::Time snapshot_time_ ABSL_GUARDED_BY(stats_mu_) = absl::InfinitePast();
  int64_t snapshot_bytes_ ABSL_GUARDED_BY(stats_mu_) = 0;
  absl::Duration snapshot_copy_ ABSL_GUARDED_BY(stats_mu_);
  int64_t growths_ ABSL_GUARDED_BY(stats_mu_) = 0;
  absl::Duration growth_hold_ ABSL_GUARDED_BY(stats_mu_);

  std::mutex grow_mu_;
  bool growing_ ABSL_GUARDED_BY(grow_mu_) = false;
  std::thread grower_ ABSL_GUARDED_BY(grow_mu_);

  std::mutex maintenance_mu_;
  std::condition_variable maintenance_cv_;
  bool stopping_ ABSL_GUARDED_BY(maintenance_mu_) = false;
  std::thread maintenance_;
};

}  // namespace arbiter::retrieval
