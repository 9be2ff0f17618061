#include "gateway/pipeline/retrieval_service.h"

#include <algorithm>
#include <exception>
#include <iostream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/quote.h"
#include "common/utf8.h"
#include "gateway/config.h"
#include "retrieval/tokenizer.h"

namespace arbiter {
namespace {

// Unset means auto.
retrieval::IndexKind IndexKindOf(v1::IndexKind kind) {
  switch (kind) {
    case v1::INDEX_KIND_FLAT:
      return retrieval::IndexKind::kFlat;
    case v1::INDEX_KIND_HNSW:
      return retrieval::IndexKind::kHnsw;
    case v1::INDEX_KIND_IVF_FLAT:
      return retrieval::IndexKind::kIvfFlat;
    case v1::INDEX_KIND_IVF_PQ:
      return retrieval::IndexKind::kIvfPq;
    default:
      return retrieval::IndexKind::kAuto;
  }
}

// The embedding client's message names the server's URL and quotes its
// answer: for the log. Callers get the code and a pointer to the log.
absl::Status PublicEmbeddingError(const absl::Status& status) {
  std::cerr << "retrieval: " << status << std::endl;
  absl::string_view what;
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
      what = "is unreachable or failing";
      break;
    case absl::StatusCode::kDeadlineExceeded:
      what = "did not answer in time";
      break;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      what = "refused the gateway's credentials";
      break;
    case absl::StatusCode::kFailedPrecondition:
      what = "answered vectors of another dimension or an unexpected status";
      break;
    case absl::StatusCode::kInvalidArgument:
      what = "refused the text";
      break;
    default:
      what = "answered something the gateway cannot read";
      break;
  }
  return absl::Status(
      status.code(),
      absl::StrCat("the embedding server ", what,
                   " (retrieval.embedding_server; the gateway's log has the "
                   "details)"));
}

}  // namespace

retrieval::SearchMode SearchModeOf(v1::SearchMode mode) {
  switch (mode) {
    case v1::SEARCH_MODE_KEYWORD:
      return retrieval::SearchMode::kKeyword;
    case v1::SEARCH_MODE_VECTOR:
      return retrieval::SearchMode::kVector;
    default:
      return retrieval::SearchMode::kHybrid;
  }
}

Collections::Collections(const v1::Config& config,
                         retrieval::DocumentStore& store,
                         const retrieval::EmbeddingClient* embedding_client)
    : config_(config), store_(store), embedding_client_(embedding_client) {}

absl::StatusOr<retrieval::Collection*> Collections::Find(
    const std::string& name, bool create) {
  auto open_one = [&]() -> retrieval::Collection* {
    std::lock_guard lock(collections_mu_);
    auto it = collections_.find(name);
    return it != collections_.end() ? it->second.get() : nullptr;
  };
  if (retrieval::Collection* open = open_one()) return open;
  // Opening may load or rebuild an index: only other opens wait for it.
  std::lock_guard open_lock(open_mu_);
  if (retrieval::Collection* open = open_one()) return open;
  auto names = store_.Collections();
  if (!names.ok()) return names.status();
  const bool stored =
      std::find(names->begin(), names->end(), name) != names->end();
  if (!stored && !create) {
    return absl::NotFoundError(
        absl::StrCat("collection: unknown collection ", QuoteInput(name)));
  }
  const int max_collections = config_.retrieval().max_collections();
  if (!stored && static_cast<int64_t>(names->size()) >= max_collections) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "collection: cannot create ", QuoteInput(name), ": the store holds ",
        names->size(), " collections, the limit (retrieval.max_collections)"));
  }
  auto collection = retrieval::Collection::Open(store_, name, OptionsFor(name));
  if (!collection.ok()) return collection.status();
  retrieval::Collection* opened = collection->get();
  std::lock_guard lock(collections_mu_);
  collections_[name] = *std::move(collection);
  return opened;
}

retrieval::CollectionOptions Collections::OptionsFor(
    const std::string& name) const {
  const v1::RetrievalSettings& settings = config_.retrieval();
  retrieval::CollectionOptions options;
  options.chunking = {settings.chunk_tokens(), settings.chunk_overlap_tokens()};
  options.embedding_dim = settings.embedding_dim();
  auto custom = settings.collection_index().find(name);
  const v1::IndexSettings& index = custom != settings.collection_index().end()
                                       ? custom->second
                                       : settings.index();
  // Defaults were applied with the config: every value is read as it is.
  options.index.kind = IndexKindOf(index.kind());
  options.index.hnsw_m = index.hnsw_m();
  options.index.hnsw_ef_construction = index.hnsw_ef_construction();
  options.index.hnsw_ef_search = index.hnsw_ef_search();
  // Unset (0) means chosen from the vectors when the index is built.
  options.index.ivf_nlist = index.ivf_nlist();
  options.index.ivf_nprobe = index.ivf_nprobe();
  options.index.pq_m = index.pq_m();
  options.index.pq_refine_factor = index.pq_refine_factor();
  options.index.auto_exact_below = index.auto_exact_below();
  options.index.auto_memory_budget_bytes = index.auto_memory_budget_mb() << 20;
  options.rebuild_tombstone_share = index.rebuild_tombstone_share();
  options.snapshot_every_changes = index.snapshot_every_changes();
  if (!settings.snapshot_dir().empty()) {
    options.snapshot_path =
        absl::StrCat(settings.snapshot_dir(), "/", name, ".index");
  }
  if (embedding_client_ != nullptr) {
    const retrieval::EmbeddingClient* client = embedding_client_;
    options.remote_embedder = [client](absl::Span<const std::string> texts)
        -> absl::StatusOr<std::vector<std::vector<float>>> {
      auto embeddings = client->Embed(texts);
      if (!embeddings.ok()) return PublicEmbeddingError(embeddings.status());
      return std::move(embeddings->vectors);
    };
  }
  return options;
}

namespace {

// Search inputs larger than this are refused rather than scanned.
constexpr size_t kMaxQueryBytes = 4096;

// Runs `work` (returning StatusOr<Response>) on `pool`: fills *response and
// calls done with the outcome; a full pool's refusal goes to done at once.
template <typename Response, typename Work>
void RunOnPool(WorkerPool& pool, Response* response,
               RetrievalService::Done done, Work work) {
  pool.Submit([response, done = std::move(done),
               work = std::move(work)](absl::Status admitted) mutable {
    if (!admitted.ok()) {
      std::move(done)(admitted);
      return;
    }
    absl::StatusOr<Response> result =
        absl::InternalError("the request failed unexpectedly");
    try {
      result = work();
    } catch (const std::exception& e) {
      std::cerr << "retrieval: unexpected exception: " << e.what() << std::endl;
    }
    if (result.ok()) *response = *std::move(result);
    std::move(done)(result.status());
  });
}

// Protobuf strings are UTF-8 on the wire, but the pipeline may be fed by
// other fronts: text enters the store only valid.
absl::Status CheckUtf8(const v1::RetrievalDocument& document, int i) {
  for (const auto& [field, text] :
       {std::pair{"id", &document.id()}, std::pair{"title", &document.title()},
        std::pair{"text", &document.text()},
        std::pair{"metadata_json", &document.metadata_json()}}) {
    if (auto bad = FirstInvalidUtf8(*text)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "documents[", i, "].", field, " (id ", QuoteInput(document.id()),
          "): invalid UTF-8 at byte ", *bad));
    }
  }
  return absl::OkStatus();
}

}  // namespace

void RetrievalService::Upsert(const v1::UpsertRequest& request,
                              v1::UpsertResponse* response, Done done) {
  RunOnPool(ingest_pool_, response, std::move(done),
            [this, &request] { return UpsertNow(request); });
}

void RetrievalService::Delete(const v1::DeleteRequest& request,
                              v1::DeleteResponse* response, Done done) {
  RunOnPool(ingest_pool_, response, std::move(done),
            [this, &request] { return DeleteNow(request); });
}

void RetrievalService::Search(const v1::SearchRequest& request,
                              v1::SearchResponse* response, Done done) {
  RunOnPool(retrieval_pool_, response, std::move(done),
            [this, &request] { return SearchNow(request); });
}

void RetrievalService::GetCollection(const v1::GetCollectionRequest& request,
                                     v1::CollectionInfo* response, Done done) {
  RunOnPool(retrieval_pool_, response, std::move(done),
            [this, &request] { return GetCollectionNow(request); });
}

absl::StatusOr<v1::UpsertResponse> RetrievalService::UpsertNow(
    const v1::UpsertRequest& request) {
  if (request.documents().empty()) {
    return absl::InvalidArgumentError("documents: must not be empty");
  }
  for (int i = 0; i < request.documents_size(); ++i) {
    const v1::RetrievalDocument& document = request.documents(i);
    if (document.id().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("documents[", i, "].id: must not be empty"));
    }
    if (absl::Status utf8 = CheckUtf8(document, i); !utf8.ok()) return utf8;
    if (retrieval::Words(document.text()).empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("documents[", i, "].text: must not be empty"));
    }
  }
  auto collection = collections_.Find(request.collection(), true);
  if (!collection.ok()) return collection.status();
  v1::UpsertResponse response;
  for (const v1::RetrievalDocument& wire : request.documents()) {
    retrieval::Document document{
        wire.id(), wire.title().empty() ? wire.id() : wire.title(),
        wire.text()};
    auto version = (*collection)
                       ->Upsert(document, wire.metadata_json().empty()
                                              ? "{}"
                                              : wire.metadata_json());
    if (!version.ok()) return version.status();
    response.add_versions(*version);
  }
  return response;
}

absl::StatusOr<v1::DeleteResponse> RetrievalService::DeleteNow(
    const v1::DeleteRequest& request) {
  auto collection = collections_.Find(request.collection(), false);
  if (!collection.ok()) return collection.status();
  v1::DeleteResponse response;
  if (!request.id().empty()) {
    absl::Status deleted = (*collection)->Delete(request.id());
    if (!deleted.ok()) return deleted;
    response.set_deleted(1);
    return response;
  }
  if (request.metadata_key().empty()) {
    return absl::InvalidArgumentError(
        "set id, or metadata_key and metadata_value_json");
  }
  auto deleted =
      (*collection)
          ->DeleteWhere(request.metadata_key(), request.metadata_value_json());
  if (!deleted.ok()) return deleted.status();
  response.set_deleted(*deleted);
  return response;
}

absl::StatusOr<v1::SearchResponse> RetrievalService::SearchNow(
    const v1::SearchRequest& request) {
  if (request.query().size() > kMaxQueryBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("query: ", request.query().size(),
                     " bytes exceeds the limit of ", kMaxQueryBytes));
  }
  int k = request.k() == 0 ? 5 : request.k();
  if (k < 1 || k > 100) {
    return absl::InvalidArgumentError("k: must be in [1, 100]");
  }
  if (!v1::SearchMode_IsValid(request.mode())) {
    return absl::InvalidArgumentError(
        absl::StrCat("mode: must be ", EnumNames(*v1::SearchMode_descriptor()),
                     ", got ", static_cast<int>(request.mode())));
  }
  const retrieval::SearchMode mode = SearchModeOf(request.mode());
  std::vector<retrieval::MetadataFilter> filters;
  for (const v1::MetadataFilter& filter : request.filters()) {
    filters.push_back(
        {filter.key(),
         {filter.values_json().begin(), filter.values_json().end()}});
  }
  // Before any SQL: too many filters would only fail inside SQLite.
  if (absl::Status limits = retrieval::CheckFilterLimits(filters);
      !limits.ok()) {
    return limits;
  }
  auto collection = collections_.Find(request.collection(), false);
  if (!collection.ok()) return collection.status();
  auto hits = (*collection)->Search(request.query(), k, mode, filters);
  if (!hits.ok()) return hits.status();
  v1::SearchResponse response;
  for (const retrieval::SearchHit& hit : *hits) {
    v1::SearchResult* result = response.add_results();
    result->set_doc_id(hit.doc_id);
    result->set_chunk_id(hit.chunk_id);
    result->set_title(hit.doc_title);
    result->set_text(hit.text);
    result->set_score(hit.score);
  }
  return response;
}

absl::StatusOr<v1::CollectionInfo> RetrievalService::GetCollectionNow(
    const v1::GetCollectionRequest& request) {
  auto collection = collections_.Find(request.name(), false);
  if (!collection.ok()) return collection.status();
  v1::CollectionInfo info;
  info.set_name(request.name());
  auto documents = collections_.store().DocumentCount(request.name());
  auto chunks = collections_.store().ChunkCount(request.name());
  auto last = collections_.store().LastChange();
  if (!documents.ok()) return documents.status();
  if (!chunks.ok()) return chunks.status();
  if (!last.ok()) return last.status();
  info.set_documents(*documents);
  info.set_chunks(*chunks);
  info.set_last_change(*last);
  const retrieval::IndexStats stats = (*collection)->Stats();
  info.set_index_kind(std::string(retrieval::IndexKindName(stats.kind)));
  info.set_index_vectors(stats.vectors);
  info.set_index_tombstones(stats.tombstones);
  info.set_index_memory_bytes(stats.memory_bytes);
  info.set_index_rebuilds(stats.rebuilds);
  info.set_index_opened_from(stats.opened_from);
  info.set_index_growths(stats.growths);
  info.set_index_growth_hold_ms(absl::ToDoubleMilliseconds(stats.growth_hold));
  v1::IndexSnapshotInfo& snapshot = *info.mutable_snapshot();
  snapshot.set_path(stats.snapshot_path);
  snapshot.set_saved(stats.snapshot_saved);
  snapshot.set_position_removal(stats.snapshot_position.removal);
  snapshot.set_position_chunk(stats.snapshot_position.chunk);
  if (stats.snapshot_saved) {
    snapshot.set_written_at(absl::FormatTime(
        absl::RFC3339_sec, stats.snapshot_time, absl::UTCTimeZone()));
  }
  snapshot.set_bytes(stats.snapshot_bytes);
  snapshot.set_copy_ms(absl::ToDoubleMilliseconds(stats.snapshot_copy));
  snapshot.set_changes_since(stats.changes_since_snapshot);
  return info;
}

}  // namespace arbiter