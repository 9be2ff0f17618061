#include "gateway/gateway_foundation.h"

#include <cstdlib>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/quote.h"
#include "common/utf8.h"
#include "gateway/backends/openai_backend.h"
#include "gateway/backends/sim_backend.h"
#include "gateway/gateway.h"
#include "gateway/request_id_keys.h"
#include "google/protobuf/util/message_differencer.h"

namespace arbiter {

GatewayFoundation::GatewayFoundation(const LoadedConfig& loaded,
                                     prometheus::Registry& registry)
    : config_(loaded.config),
      metrics_(registry, config_),
      backend_metrics_(registry),
      decisions_(
          {static_cast<size_t>(config_.server().decision_log_max_mb()) << 20,
           config_.retrieval().embedding_dim()}) {}

GatewayFoundation::~GatewayFoundation() {
  CloseState();
  // Retries still waiting go now, to backends that are still here (and
  // that fail them as they stop).
  retry_timer_.reset();
  // Pools stop before the backends their rag tasks call, failing what
  // still waits.
  retrieval_pool_.reset();
  ingest_pool_.reset();
  // Backends stop before the rest, failing what they still hold.
  std::lock_guard lock(backends_mu_);
  backends_.clear();
}

absl::StatusOr<std::unique_ptr<GatewayFoundation>> GatewayFoundation::Create(
    const LoadedConfig& loaded, prometheus::Registry& registry) {
  auto foundation = std::unique_ptr<GatewayFoundation>(
      new GatewayFoundation(loaded, registry));
  absl::Status status = foundation->Init(*loaded.files);
  if (!status.ok()) return status;
  return foundation;
}

absl::Status GatewayFoundation::Init(const FileSource& files) {
  const v1::Server& server = config_.server();
  auto pool_options = [this](Pool pool, const char* name, int threads,
                             int queue) {
    WorkerPool::Options options;
    options.name = name;
    options.threads = threads;
    options.queue_capacity = queue;
    options.on_load = [this, pool](size_t queued, size_t busy) {
      metrics_.SetPoolLoad(pool, queued, busy);
    };
    options.on_rejected = [this, pool] { metrics_.RecordPoolRejected(pool); };
    return options;
  };
  retrieval_pool_ = std::make_unique<WorkerPool>(
      pool_options(Pool::kRetrieval, "retrieval", server.retrieval_threads(),
                   server.retrieval_queue()));
  ingest_pool_ = std::make_unique<WorkerPool>(pool_options(
      Pool::kIngest, "ingest", server.ingest_threads(), server.ingest_queue()));
  retry_budget_ = std::make_unique<RetryBudget>(server.retry_budget());
  retry_timer_ = std::make_unique<TimerQueue>();
  if (absl::Status corpus = InitCorpus(files); !corpus.ok()) return corpus;
  if (absl::Status state = InitState(); !state.ok()) return state;
  if (absl::Status ids = InitRequestIds(); !ids.ok()) return ids;
  retrieval_ = std::make_unique<RetrievalService>(
      *collections_, *retrieval_pool_, *ingest_pool_);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Backend>> GatewayFoundation::MakeBackend(
    const v1::Backend& spec, const FileSource& files,
    const BackendMetrics::Series& series) {
  if (spec.has_sim()) {
    auto simulator = MakeSimulator(spec.sim(), files);
    if (!simulator.ok()) {
      return absl::Status(simulator.status().code(),
                          absl::StrCat("backend \"", spec.name(),
                                       "\": ", simulator.status().message()));
    }
    return std::make_unique<SimBackend>(spec.name(), *std::move(simulator));
  }
  std::string key;
  if (!spec.openai().api_key_env().empty()) {
    const char* value = std::getenv(spec.openai().api_key_env().c_str());
    if (value != nullptr) key = value;
  }
  return MakeOpenAIBackend(spec.name(), spec.openai(), key,
                           [errors = series.errors](BackendError reason) {
                             prometheus::Counter* counter =
                                 errors[static_cast<int>(reason)];
                             if (counter != nullptr) counter->Increment();
                           });
}

absl::StatusOr<BackendTable> GatewayFoundation::BackendsFor(
    const v1::Config& config, const FileSource& files) {
  BackendTable table;
  std::lock_guard lock(backends_mu_);
  for (const v1::Backend& spec : config.backends()) {
    BackendEntry* same = nullptr;
    // The latest of that setting: an older one may be on its way out.
    for (auto it = backends_.rbegin(); it != backends_.rend(); ++it) {
      if (google::protobuf::util::MessageDifferencer::Equals((*it)->spec,
                                                             spec)) {
        same = it->get();
        break;
      }
    }
    if (same == nullptr) {
      const BackendMetrics::Series series = backend_metrics_.Declare(spec);
      auto backend = MakeBackend(spec, files, series);
      if (!backend.ok()) return backend.status();
      auto entry = std::make_unique<BackendEntry>();
      entry->spec = spec;
      entry->backend = *std::move(backend);
      BackendHealth::Listener listener;
      listener.ejected = [series, name = spec.name()](Ejection reason,
                                                      absl::Duration length) {
        series.up->Set(0);
        series.ejections[static_cast<int>(reason)]->Increment();
        // One write per line: other threads log too.
        std::cerr << absl::StrCat("backend \"", name, "\" ejected for ",
                                  absl::FormatDuration(length), " (",
                                  EjectionName(reason), ")\n");
      };
      listener.restored = [series, name = spec.name()] {
        series.up->Set(1);
        std::cerr << absl::StrCat("backend \"", name, "\" back in service\n");
      };
      entry->health = std::make_unique<BackendHealth>(spec.outlier_detection(),
                                                      std::move(listener));
      same = entry.get();
      backends_.push_back(std::move(entry));
    }
    table[spec.name()] = same;
  }
  return table;
}

absl::Status GatewayFoundation::InitCorpus(const FileSource& files) {
  const v1::Config& config = config_;
  // Collections live in the store even without a corpus: the Retrieval
  // service can fill them.
  retrieval::DocumentStore::Options store_options;
  store_options.keyword_match_budget =
      config.retrieval().keyword_match_budget();
  auto store = retrieval::DocumentStore::Open(
      config.retrieval().store_path().empty() ? ":memory:"
                                              : config.retrieval().store_path(),
      store_options);
  if (!store.ok()) return store.status();
  store_ = *std::move(store);
  if (const v1::EmbeddingServer& server = config.retrieval().embedding_server();
      !server.url().empty()) {
    retrieval::EmbeddingServerOptions options;
    options.url = server.url();
    options.model = server.model();
    if (!server.api_key_env().empty()) {
      const char* key = std::getenv(server.api_key_env().c_str());
      if (key == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("retrieval.embedding_server.api_key_env: $",
                         server.api_key_env(), " is not set"));
      }
      options.api_key = key;
    }
    options.dim = config.retrieval().embedding_dim();
    options.max_batch = server.batch_size();
    options.timeout = absl::Milliseconds(server.timeout_ms());
    options.max_retries = server.max_retries();
    auto client = retrieval::EmbeddingClient::Create(options);
    if (!client.ok()) return client.status();
    embedding_client_ = *std::move(client);
  }
  collections_ =
      std::make_unique<Collections>(config, *store_, embedding_client_.get());
  bool needs_retrieval = false;
  for (const v1::Route& route : config.routes()) {
    needs_retrieval = needs_retrieval || route.kind() == v1::ROUTE_KIND_RAG;
  }
  if (needs_retrieval || !config.retrieval().corpus_dir().empty()) {
    auto folder = files.ReadFolder(config.retrieval().corpus_dir());
    if (!folder.ok()) {
      return absl::Status(
          folder.status().code(),
          absl::StrCat("retrieval.corpus_dir: ", folder.status().message()));
    }
    std::vector<retrieval::Document> documents;
    for (const auto& [name, content] : *folder) {
      if (!name.ends_with(".md") && !name.ends_with(".txt")) continue;
      // Text must be UTF-8 everywhere after this (prompts, JSON, protobuf):
      // a stray byte is replaced here, once, and said so.
      size_t replaced = 0;
      const std::string clean_name = RepairUtf8(name);
      std::string clean = RepairUtf8(content, &replaced);
      documents.push_back(retrieval::ParseDocument(clean_name, clean));
      if (replaced > 0 || clean_name != name) {
        std::cerr << "retrieval.corpus_dir: " << QuoteInput(clean_name)
                  << " (document " << QuoteInput(documents.back().id)
                  << "): invalid UTF-8 at byte "
                  << FirstInvalidUtf8(content).value_or(0) << "; " << replaced
                  << " sequence(s) replaced with U+FFFD"
                  << (clean_name != name ? " (and in the file name)" : "")
                  << std::endl;
      }
    }
    if (documents.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("retrieval.corpus_dir: no .md or .txt files in \"",
                       config.retrieval().corpus_dir(), "\""));
    }
    const v1::RetrievalSettings& settings = config.retrieval();
    retrieval::ChunkOptions chunking{settings.chunk_tokens(),
                                     settings.chunk_overlap_tokens()};
    // The corpus folder is loaded into the store, then the index is derived.
    absl::Status created = store_->CreateCollection("corpus");
    if (!created.ok()) return created;
    for (const retrieval::Document& document : documents) {
      retrieval::StoredDocument stored;
      stored.id = document.id;
      stored.title = document.title;
      stored.source = settings.corpus_dir();
      stored.chunks = retrieval::ChunkText(document.text, chunking);
      // A persistent store keeps what an earlier start loaded: rewriting an
      // unchanged document would only make the index replay it.
      if (auto existing = store_->Chunks("corpus", document.id);
          existing.ok() && existing->size() == stored.chunks.size() &&
          std::equal(
              existing->begin(), existing->end(), stored.chunks.begin(),
              [&](const retrieval::StoredChunk& old, const std::string& text) {
                return old.text == text && old.doc_title == stored.title;
              })) {
        continue;
      }
      auto version = store_->Upsert("corpus", stored);
      if (!version.ok()) {
        return absl::Status(
            version.status().code(),
            absl::StrCat("retrieval.corpus_dir: ", version.status().message()));
      }
    }
    auto corpus = collections_->Find("corpus", true);
    if (!corpus.ok()) return corpus.status();
    corpus_ = *corpus;
    search_mode_ = SearchModeOf(settings.search());
    metrics_.SetCorpus(*store_->DocumentCount("corpus"),
                       *store_->ChunkCount("corpus"));
  }
  if (corpus_ == nullptr || embedding_client_ != nullptr) {
    prompt_embedder_ = std::make_unique<retrieval::HashedNgramEmbedder>(
        config.retrieval().embedding_dim());
  }
  return absl::OkStatus();
}

absl::Status GatewayFoundation::InitState() {
  const v1::Config& config = config_;
  if (config.state().path().empty()) {
    std::cerr << "state: in memory only (set state.path to keep statistics, "
                 "economics and experiments across restarts)"
              << std::endl;
    return absl::OkStatus();
  }
  const absl::Duration window =
      absl::Hours(config.server().feedback_window_hours());
  state::StateStoreOptions options;
  options.path = config.state().path();
  options.flush_interval =
      absl::Milliseconds(config.state().flush_interval_ms());
  options.judged_retention = window;
  auto store = state::StateStore::Open(std::move(options));
  if (!store.ok()) {
    return absl::Status(store.status().code(),
                        absl::StrCat("state.path: ", store.status().message()));
  }
  auto stored = (*store)->Load(absl::Now() - window);
  if (!stored.ok()) {
    return absl::Status(
        stored.status().code(),
        absl::StrCat("state.path: ", stored.status().message()));
  }
  stored_ = *std::move(stored);
  state_store_ = *std::move(store);
  return absl::OkStatus();
}

void GatewayFoundation::StartStateWriter(
    std::function<state::StateBatch()> collect) {
  if (state_store_ != nullptr) state_store_->StartWriter(std::move(collect));
}

void GatewayFoundation::CloseState() {
  if (state_store_ == nullptr) return;
  if (absl::Status closed = state_store_->Close(); !closed.ok()) {
    std::cerr << "state: the last changes were not written: " << closed
              << std::endl;
  }
}

absl::Status GatewayFoundation::InitRequestIds() {
  const v1::Server& server = config_.server();
  auto keys =
      ResolveRequestIdKeys(server, [this]() -> absl::StatusOr<std::string> {
        if (state_store_ != nullptr) {
          // Kept with the state, so ids stay valid across restarts.
          return state_store_->GetOrCreateSecret(state::kRequestIdKeySecret,
                                                 RequestIdSigner::kMinKeyBytes);
        }
        std::cerr
            << "server: no request_id_key_file or request_id_key_env: "
               "request ids are signed with a random key made at start and "
               "will not verify after a restart without state.path or a "
               "key file"
            << std::endl;
        return RandomRequestIdKey();
      });
  if (!keys.ok()) return keys.status();
  for (const std::string& warning : keys->warnings) {
    std::cerr << "warning: " << warning << std::endl;
  }
  auto signer = RequestIdSigner::Create(
      std::move(keys->keys), absl::Hours(server.feedback_window_hours()));
  if (!signer.ok()) return signer.status();
  signer_ = *std::move(signer);
  signer_source_ = std::move(keys->source);
  return absl::OkStatus();
}

void GatewayFoundation::CancelInFlight() {
  const absl::Status why =
      absl::UnavailableError("the gateway is shutting down");
  std::lock_guard lock(backends_mu_);
  for (const auto& entry : backends_) entry->backend->CancelAll(why);
}

std::vector<LoopGuest*> GatewayFoundation::BackendLoops() const {
  std::vector<LoopGuest*> loops;
  std::lock_guard lock(backends_mu_);
  for (const auto& entry : backends_) {
    for (LoopGuest* loop : entry->backend->loop_guests()) loops.push_back(loop);
  }
  return loops;
}

std::string GatewayFoundation::Describe() const {
  std::string text;
  if (corpus_ != nullptr) {
    absl::StrAppend(&text, "corpus: ", *store_->DocumentCount("corpus"),
                    " documents, ", *store_->ChunkCount("corpus"), " chunks (",
                    EnumName(config_.retrieval().search()), " search)\n");
  }
  absl::StrAppend(&text, "request ids: HMAC-SHA-256 with ", signer_source_,
                  "; feedback accepted for ",
                  config_.server().feedback_window_hours(), " hours\n");
  return text;
}

}  // namespace arbiter
