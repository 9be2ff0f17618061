#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "arbiter/v1/config.pb.h"
#include "arbiter/v1/gateway.pb.h"
#include "gateway/worker_pool.h"
#include "retrieval/collection.h"
#include "retrieval/embedding_client.h"
#include "retrieval/store.h"

namespace arbiter {

// Unset means hybrid.
[[nodiscard]] retrieval::SearchMode SearchModeOf(v1::SearchMode mode);

// The document collections of the store, opened (and created) on demand.
// Opening one holds only its own lock, so lookups of open collections never
// wait for an index to load. Thread-safe.
class Collections final {
 public:
  // embedding_client may be null (the built-in embedder serves).
  Collections(const v1::Config& config, retrieval::DocumentStore& store,
              const retrieval::EmbeddingClient* embedding_client);

  Collections(const Collections&) = delete;
  Collections& operator=(const Collections&) = delete;

  // NOT_FOUND for an unknown name unless `create`; RESOURCE_EXHAUSTED past
  // retrieval.max_collections. The pointer stays valid for the registry's
  // life.
  absl::StatusOr<retrieval::Collection*> Find(const std::string& name,
                                              bool create);

  [[nodiscard]] retrieval::DocumentStore& store() { return store_; }

 private:
  retrieval::CollectionOptions OptionsFor(const std::string& name) const;

  const v1::Config& config_;
  retrieval::DocumentStore& store_;
  const retrieval::EmbeddingClient* const embedding_client_;
  std::mutex open_mu_;         // One open at a time; std:: for TSan.
  std::mutex collections_mu_;  // Held only to look up or insert.
  // Entries are never removed, so the pointers handed out stay valid.
  absl::flat_hash_map<std::string, std::unique_ptr<retrieval::Collection>>
      collections_ ABSL_GUARDED_BY(collections_mu_);
};

// The Retrieval service: ingestion and search of document collections.
// Each method runs on a worker pool (ingest for Upsert and Delete,
// retrieval for the reads), fills *response and calls done once on that
// pool's thread; a full pool calls done at once with RESOURCE_EXHAUSTED.
// `request` and `response` must live until done is called.
class RetrievalService final {
 public:
  using Done = absl::AnyInvocable<void(absl::Status) &&>;

  RetrievalService(Collections& collections, WorkerPool& retrieval_pool,
                   WorkerPool& ingest_pool)
      : collections_(collections),
        retrieval_pool_(retrieval_pool),
        ingest_pool_(ingest_pool) {}

  RetrievalService(const RetrievalService&) = delete;
  RetrievalService& operator=(const RetrievalService&) = delete;

  void Upsert(const v1::UpsertRequest& request, v1::UpsertResponse* response,
              Done done);
  void Delete(const v1::DeleteRequest& request, v1::DeleteResponse* response,
              Done done);
  void Search(const v1::SearchRequest& request, v1::SearchResponse* response,
              Done done);
  void GetCollection(const v1::GetCollectionRequest& request,
                     v1::CollectionInfo* response, Done done);

 private:
  absl::StatusOr<v1::UpsertResponse> UpsertNow(
      const v1::UpsertRequest& request);
  absl::StatusOr<v1::DeleteResponse> DeleteNow(
      const v1::DeleteRequest& request);
  absl::StatusOr<v1::SearchResponse> SearchNow(
      const v1::SearchRequest& request);
  absl::StatusOr<v1::CollectionInfo> GetCollectionNow(
      const v1::GetCollectionRequest& request);

  Collections& collections_;
  WorkerPool& retrieval_pool_;
  WorkerPool& ingest_pool_;
};

}  // namespace arbiter
