#include "gateway/gateway.h"

#include <cstdlib>
#include <exception>
#include <iostream>

#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/quote.h"
#include "common/utf8.h"
#include "gateway/backends/openai_backend.h"
#include "gateway/backends/sim_backend.h"
#include "gateway/request_id_keys.h"
#include "gateway/sim/simulator.h"
#include "policy/economics.h"
#include "retrieval/tokenizer.h"

namespace arbiter {
namespace {

// Typical question length, for a route's prior cost before any traffic.
constexpr int64_t kTypicalQuestionTokens = 24;
constexpr absl::Duration kPublishInterval = absl::Milliseconds(10);
// Hosting and training accrue by time: the metrics follow every second.
constexpr absl::Duration kEconomicsInterval = absl::Seconds(1);
// Sim backends have no timeout of their own; the caller's deadline rules.
constexpr absl::Duration kDefaultBackendTimeout = absl::Seconds(30);

double UniformDraw() {
  thread_local absl::BitGen gen;
  return absl::Uniform<double>(gen, 0.0, 1.0);
}

uint64_t RandomNonce() {
  thread_local absl::BitGen gen;
  return absl::Uniform<uint64_t>(gen);
}

std::string KnownNames(
    const google::protobuf::RepeatedPtrField<v1::Route>& routes) {
  std::vector<std::string> names;
  for (const v1::Route& route : routes) names.push_back(route.name());
  return absl::StrJoin(names, ", ");
}

policy::StatsOptions StatsOptionsFrom(const v1::Config& config) {
  policy::StatsOptions options;
  options.publish_interval = kPublishInterval;
  double half_life = config.statistics().half_life_seconds();
  options.half_life =
      half_life > 0 ? absl::Seconds(half_life) : absl::InfiniteDuration();
  return options;
}

// Unset means hybrid.
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

Outcome OutcomeOf(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
      return Outcome::kUnavailable;
    case absl::StatusCode::kDeadlineExceeded:
      return Outcome::kTimeout;
    default:
      return Outcome::kError;
  }
}

}  // namespace

absl::StatusOr<std::shared_ptr<const sim::Simulator>> MakeSimulator(
    const v1::SimBackend& config, const FileSource& files) {
  auto text = files.Read(config.dataset());
  if (!text.ok()) return text.status();
  auto questions = sim::ParseQuestionSet(*text);
  if (!questions.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("question set \"", config.dataset(),
                     "\": ", questions.status().message()));
  }
  auto simulator = sim::Simulator::Create(config, *std::move(questions));
  if (!simulator.ok()) return simulator.status();
  return std::shared_ptr<const sim::Simulator>(*std::move(simulator));
}

Gateway::Gateway(LoadedConfig config, prometheus::Registry& registry)
    : loaded_(std::move(config)),
      stats_(loaded_.config.routes_size(), loaded_.config.tasks_size(),
             StatsOptionsFrom(loaded_.config)),
      decisions_(
          {static_cast<size_t>(loaded_.config.server().decision_log_max_mb())
               << 20,
           loaded_.config.retrieval().embedding_dim()}),
      metrics_(registry, loaded_.config) {}

Gateway::~Gateway() {
  // The last batch is written while everything it reads is still here.
  if (state_store_ != nullptr) {
    if (absl::Status closed = state_store_->Close(); !closed.ok()) {
      std::cerr << "state: the last changes were not written: " << closed
                << std::endl;
    }
  }
  stopping_ = true;
  ticker_.reset();
  // Pools stop before the backends their rag tasks call, failing what
  // still waits.
  retrieval_pool_.reset();
  ingest_pool_.reset();
  // Backends stop before the rest, failing what they still hold.
  backends_.clear();
}

absl::StatusOr<std::unique_ptr<Gateway>> Gateway::Create(
    LoadedConfig config, prometheus::Registry& registry) {
  auto gateway =
      std::unique_ptr<Gateway>(new Gateway(std::move(config), registry));
  absl::Status status = gateway->Init();
  if (!status.ok()) return status;
  return gateway;
}

absl::Status Gateway::Init() {
  const v1::Config& config = loaded_.config;
  const v1::Server& server = config.server();
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
  for (int i = 0; i < config.tasks_size(); ++i) {
    task_index_[config.tasks(i)] = i;
  }
  for (const v1::Backend& backend : config.backends()) {
    std::unique_ptr<Backend> made;
    if (backend.has_sim()) {
      auto simulator = MakeSimulator(backend.sim(), *loaded_.files);
      if (!simulator.ok()) {
        return absl::Status(simulator.status().code(),
                            absl::StrCat("backend \"", backend.name(),
                                         "\": ", simulator.status().message()));
      }
      made =
          std::make_unique<SimBackend>(backend.name(), *std::move(simulator));
    } else {
      std::string key;
      if (!backend.openai().api_key_env().empty()) {
        const char* value = std::getenv(backend.openai().api_key_env().c_str());
        if (value != nullptr) key = value;
      }
      made = std::make_unique<OpenAIBackend>(
          backend.name(), backend.openai(), std::move(key),
          [this, name = backend.name()](BackendError reason) {
            metrics_.RecordBackendError(name, reason);
          });
    }
    backends_[backend.name()] = std::move(made);
  }
  bool needs_retrieval = false;
  std::vector<double> prior_costs;
  for (int i = 0; i < config.routes_size(); ++i) {
    const v1::Route& route = config.routes(i);
    route_index_[route.name()] = i;
    route_backend_.push_back(backends_.at(route.backend()).get());
    absl::Duration timeout = kDefaultBackendTimeout;
    for (const v1::Backend& backend : config.backends()) {
      if (backend.name() == route.backend() && backend.has_openai()) {
        timeout = absl::Seconds(backend.openai().timeout_seconds());
      }
    }
    route_timeout_.push_back(timeout);
    int64_t overhead = retrieval::CountTokens(route.system_prompt());
    for (const v1::Example& example : route.examples()) {
      overhead += retrieval::CountTokens(example.user()) +
                  retrieval::CountTokens(example.assistant()) + 8;
    }
    bool rag = route.kind() == v1::ROUTE_KIND_RAG;
    if (rag) {
      needs_retrieval = true;
      overhead += route.rag().max_context_tokens();
    }
    prior_costs.push_back(
        policy::PriceRequest(route.pricing(), overhead + kTypicalQuestionTokens,
                             route.max_output_tokens(), rag)
            .total_usd());
  }
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
  if (needs_retrieval || !config.retrieval().corpus_dir().empty()) {
    auto files = loaded_.files->ReadFolder(config.retrieval().corpus_dir());
    if (!files.ok()) {
      return absl::Status(
          files.status().code(),
          absl::StrCat("retrieval.corpus_dir: ", files.status().message()));
    }
    std::vector<retrieval::Document> documents;
    for (const auto& [name, content] : *files) {
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
    auto corpus = FindCollection("corpus", true);
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
  economics_ = std::make_unique<policy::EconomicsLedger>(config, absl::Now(),
                                                         prior_costs);
  auto engine = policy::Engine::Create(config, prior_costs);
  if (!engine.ok()) return engine.status();
  engine_ = *std::move(engine);
  absl::Status experiments = InitExperiments(prior_costs);
  if (!experiments.ok()) return experiments;
  absl::Status state = InitState();
  if (!state.ok()) return state;
  absl::Status ids = InitRequestIds();
  if (!ids.ok()) return ids;
  ticker_ = std::make_unique<TimerQueue>();
  SchedulePublish();
  ScheduleForgetJudged();
  metrics_.UpdateEconomics(EconomicsNow());
  ScheduleEconomics();
  return absl::OkStatus();
}

absl::Status Gateway::InitExperiments(const std::vector<double>& prior_costs) {
  const v1::Config& config = loaded_.config;
  experiment_stats_ = std::make_unique<policy::ExperimentStats>(config);
  for (const v1::Experiment& experiment : config.experiments()) {
    ExperimentRuntime runtime;
    runtime.tasks.assign(config.tasks_size(), experiment.tasks().empty());
    for (const std::string& task : experiment.tasks()) {
      runtime.tasks[task_index_.at(task)] = true;
    }
    double total = 0;
    for (const auto& arm : experiment.arms()) total += arm.weight();
    for (const v1::ExperimentArm& arm : experiment.arms()) {
      runtime.arm_share.push_back(arm.weight() / total);
      if (arm.has_route()) {
        runtime.arm_route.push_back(route_index_.at(arm.route()));
        runtime.arm_engine.push_back(nullptr);
        continue;
      }
      // A policy arm decides with its own strategy over the shared stats.
      v1::Config arm_config = config;
      *arm_config.mutable_policy() = arm.policy();
      arm_config.clear_task_policies();
      auto engine = policy::Engine::Create(arm_config, prior_costs);
      if (!engine.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("experiment \"", experiment.name(), "\" arm \"",
                         arm.name(), "\": ", engine.status().message()));
      }
      runtime.arm_route.push_back(-1);
      runtime.arm_engine.push_back(*std::move(engine));
    }
    experiments_.push_back(std::move(runtime));
  }
  return absl::OkStatus();
}

absl::StatusOr<retrieval::Collection*> Gateway::FindCollection(
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
  auto names = store_->Collections();
  if (!names.ok()) return names.status();
  const bool stored =
      std::find(names->begin(), names->end(), name) != names->end();
  if (!stored && !create) {
    return absl::NotFoundError(
        absl::StrCat("collection: unknown collection ", QuoteInput(name)));
  }
  const int max_collections = loaded_.config.retrieval().max_collections();
  if (!stored && static_cast<int64_t>(names->size()) >= max_collections) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "collection: cannot create ", QuoteInput(name), ": the store holds ",
        names->size(), " collections, the limit (retrieval.max_collections)"));
  }
  auto collection =
      retrieval::Collection::Open(*store_, name, CollectionOptionsFor(name));
  if (!collection.ok()) return collection.status();
  retrieval::Collection* opened = collection->get();
  std::lock_guard lock(collections_mu_);
  collections_[name] = *std::move(collection);
  return opened;
}

retrieval::CollectionOptions Gateway::CollectionOptionsFor(
    const std::string& name) const {
  const v1::RetrievalSettings& settings = loaded_.config.retrieval();
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
    const retrieval::EmbeddingClient* client = embedding_client_.get();
    options.remote_embedder = [client](absl::Span<const std::string> texts)
        -> absl::StatusOr<std::vector<std::vector<float>>> {
      auto embeddings = client->Embed(texts);
      if (!embeddings.ok()) return PublicEmbeddingError(embeddings.status());
      return std::move(embeddings->vectors);
    };
  }
  return options;
}

absl::Status Gateway::InitState() {
  const v1::Config& config = loaded_.config;
  StateSync::Parts parts;
  parts.config = &config;
  parts.stats = &stats_;
  parts.engine = engine_.get();
  for (const ExperimentRuntime& runtime : experiments_) {
    std::vector<policy::Engine*> arms;
    for (const auto& engine : runtime.arm_engine) arms.push_back(engine.get());
    parts.arm_engines.push_back(std::move(arms));
  }
  parts.experiment_stats = experiment_stats_.get();
  parts.economics_mu = &economics_mu_;
  parts.economics = economics_.get();
  parts.judged = &judged_;
  state_sync_ = std::make_unique<StateSync>(std::move(parts));
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
  const absl::Time now = absl::Now();
  auto stored = (*store)->Load(now - window);
  if (!stored.ok()) {
    return absl::Status(
        stored.status().code(),
        absl::StrCat("state.path: ", stored.status().message()));
  }
  for (const std::string& line : state_sync_->Restore(*stored, now)) {
    std::cerr << "state: " << line << std::endl;
  }
  state_store_ = *std::move(store);
  state_store_->StartWriter([this] { return state_sync_->Collect(); });
  return absl::OkStatus();
}

absl::Status Gateway::InitRequestIds() {
  const v1::Server& server = loaded_.config.server();
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

void Gateway::ScheduleForgetJudged() {
  if (stopping_) return;
  ticker_->RunAfter(absl::Minutes(1), [this] {
    judged_.ForgetIssuedBefore(
        absl::Now() -
        absl::Hours(loaded_.config.server().feedback_window_hours()));
    ScheduleForgetJudged();
  });
}

std::vector<float> Gateway::EmbedPrompt(absl::string_view text) const {
  // Prompts stay on the local embedder when vectors come from a server:
  // a routing decision should not wait on the network.
  if (prompt_embedder_ == nullptr) {
    if (auto vector = corpus_->Embed(text); vector.ok()) return *vector;
  }
  return prompt_embedder_ != nullptr
             ? prompt_embedder_->Embed(text)
             : std::vector<float>(loaded_.config.retrieval().embedding_dim());
}

int Gateway::ExperimentFor(int task) const {
  for (size_t e = 0; e < experiments_.size(); ++e) {
    if (experiments_[e].tasks[task]) return static_cast<int>(e);
  }
  return -1;
}

void Gateway::SchedulePublish() {
  if (stopping_) return;
  ticker_->RunAfter(kPublishInterval, [this] {
    stats_.PublishIfChanged();
    SchedulePublish();
  });
}

void Gateway::ScheduleEconomics() {
  if (stopping_) return;
  ticker_->RunAfter(kEconomicsInterval, [this] {
    metrics_.UpdateEconomics(EconomicsNow());
    if (state_store_ != nullptr) {
      const state::WriterStats writes = state_store_->writer_stats();
      metrics_.SetStateWrites(writes.batches, writes.failures,
                              absl::ToDoubleSeconds(writes.last_commit));
    }
    ScheduleEconomics();
  });
}

policy::EconomicsSnapshot Gateway::EconomicsNow() const {
  std::lock_guard lock(economics_mu_);
  return economics_->Snapshot(absl::Now());
}

void Gateway::CancelInFlight() {
  const absl::Status why =
      absl::UnavailableError("the gateway is shutting down");
  for (auto& [name, backend] : backends_) backend->CancelAll(why);
}

std::string Gateway::Describe() const {
  const v1::Config& config = loaded_.config;
  std::string text = DescribeConfig(loaded_);
  if (corpus_ != nullptr) {
    absl::StrAppend(&text, "corpus: ", *store_->DocumentCount("corpus"),
                    " documents, ", *store_->ChunkCount("corpus"), " chunks (",
                    EnumName(config.retrieval().search()), " search)\n");
  }
  absl::StrAppend(&text, "request ids: HMAC-SHA-256 with ", signer_source_,
                  "; feedback accepted for ",
                  config.server().feedback_window_hours(), " hours\n");

  return text;
}

absl::Status Gateway::Validate(const v1::InferRequest& request, int* task,
                               int* pinned_route) const {
  const v1::Config& config = loaded_.config;
  size_t size = request.ByteSizeLong();
  if (size > static_cast<size_t>(config.server().max_request_bytes())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "request: %d bytes exceeds the limit of %d (server.max_request_bytes)",
        size, config.server().max_request_bytes()));
  }
  if (request.messages().empty()) {
    return absl::InvalidArgumentError("messages: must not be empty");
  }
  for (int i = 0; i < request.messages_size(); ++i) {
    const v1::Role role = request.messages(i).role();
    if (role == v1::ROLE_UNSPECIFIED || !v1::Role_IsValid(role)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "messages[", i, "].role: must be ", EnumNames(*v1::Role_descriptor()),
          ", got ",
          role == v1::ROLE_UNSPECIFIED ? "none" : std::to_string(role)));
    }
  }
  const v1::ChatMessage& last = *request.messages().rbegin();
  if (last.role() != v1::ROLE_USER) {
    return absl::InvalidArgumentError(
        absl::StrCat("messages[", request.messages_size() - 1,
                     "].role: the last message must be the user's"));
  }
  if (last.content().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("messages[", request.messages_size() - 1,
                     "].content: must not be empty"));
  }
  const std::string& task_name =
      request.task().empty() ? config.default_task() : request.task();
  auto task_it = task_index_.find(task_name);
  if (task_it == task_index_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("task: unknown task ", QuoteInput(task_name),
                     " (known: ", absl::StrJoin(config.tasks(), ", "), ")"));
  }
  *task = task_it->second;
  *pinned_route = -1;
  if (!request.route().empty()) {
    auto route_it = route_index_.find(request.route());
    if (route_it == route_index_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("route: unknown route ", QuoteInput(request.route()),
                       " (known: ", KnownNames(config.routes()), ")"));
    }
    *pinned_route = route_it->second;
  }
  if (request.limits().max_output_tokens() < 0) {
    return absl::InvalidArgumentError("limits.max_output_tokens: must be >= 0");
  }
  if (request.limits().has_temperature() &&
      !(request.limits().temperature() >= 0 &&
        request.limits().temperature() <= 2)) {
    return absl::InvalidArgumentError("limits.temperature: must be in [0, 2]");
  }
  if (!(request.constraints().max_cost_usd() >= 0)) {
    return absl::InvalidArgumentError("constraints.max_cost_usd: must be >= 0");
  }
  if (!(request.constraints().min_accuracy() >= 0 &&
        request.constraints().min_accuracy() <= 1)) {
    return absl::InvalidArgumentError(
        "constraints.min_accuracy: must be in [0, 1]");
  }
  return absl::OkStatus();
}

absl::StatusOr<BackendRequest> Gateway::BuildBackendRequest(
    const v1::Route& route, const v1::InferRequest& request,
    v1::InferResponse* response) {
  BackendRequest out;
  out.model = route.model();
  out.max_output_tokens = request.limits().max_output_tokens() > 0
                              ? request.limits().max_output_tokens()
                              : route.max_output_tokens();
  if (request.limits().has_temperature()) {
    out.temperature = request.limits().temperature();
  }
  std::string system =
      route.kind() == v1::ROUTE_KIND_FINE_TUNED ? "" : route.system_prompt();
  if (route.kind() == v1::ROUTE_KIND_RAG) {
    const std::string& question = request.messages().rbegin()->content();
    absl::Time start = absl::Now();
    auto found = corpus_->Search(question, route.rag().top_k(), search_mode_);
    if (!found.ok()) {
      return absl::Status(found.status().code(),
                          absl::StrCat("retrieval for route \"", route.name(),
                                       "\": ", found.status().message()));
    }
    std::vector<retrieval::Chunk> chunks;
    for (retrieval::SearchHit& hit : *found) {
      chunks.push_back({hit.chunk_id, std::move(hit.doc_id),
                        std::move(hit.doc_title), 0, std::move(hit.text)});
    }
    std::vector<retrieval::Hit> hits;
    for (size_t i = 0; i < chunks.size(); ++i) {
      hits.push_back({&chunks[i], static_cast<float>((*found)[i].score)});
    }
    retrieval::Context context =
        retrieval::AssembleContext(hits, route.rag().max_context_tokens());
    metrics_.RecordRetrieval(absl::ToDoubleSeconds(absl::Now() - start));
    absl::StrAppend(&system, system.empty() ? "" : "\n\n",
                    "Answer from the context below and cite the sources you "
                    "use by their markers.\n\nContext:\n",
                    context.block);
    for (const auto& cited : context.citations) {
      v1::Citation* citation = response->add_citations();
      citation->set_doc_id(cited.chunk->doc_id);
      citation->set_chunk_id(cited.chunk->id);
      citation->set_score(cited.score);
      citation->set_marker(cited.marker);
    }
  }
  if (!system.empty()) {
    out.messages.push_back({EnumName(v1::ROLE_SYSTEM), std::move(system)});
  }
  if (route.kind() == v1::ROUTE_KIND_PROMPTED) {
    for (const v1::Example& example : route.examples()) {
      out.messages.push_back({EnumName(v1::ROLE_USER), example.user()});
      out.messages.push_back(
          {EnumName(v1::ROLE_ASSISTANT), example.assistant()});
    }
  }
  for (const v1::ChatMessage& message : request.messages()) {
    out.messages.push_back({EnumName(message.role()), message.content()});
  }
  return out;
}

struct Gateway::InferCall {
  const v1::InferRequest* request = nullptr;  // The caller's, until done.
  absl::Time deadline;
  v1::InferResponse* response = nullptr;
  int route_index = -1;
  int task = -1;
  absl::Time start;
  double propensity = 1;
  int experiment = -1;
  int arm = -1;
  policy::Engine* engine = nullptr;
  std::vector<float> embedding;
  std::string request_id;
  Done done;
};

void Gateway::Infer(const v1::InferRequest& request, absl::Time deadline,
                    v1::InferResponse* response, Done done) {
  const absl::Time start = absl::Now();
  int task = 0;
  int pinned_route = -1;
  absl::Status valid = Validate(request, &task, &pinned_route);
  if (!valid.ok()) {
    metrics_.RecordRejected(absl::StatusCodeToString(valid.code()));
    std::move(done)(valid);
    return;
  }
  policy::RequestFeatures features;
  features.task = task;
  features.unit_id = request.unit_id();
  features.pinned_route = pinned_route;
  features.max_cost_usd = request.constraints().max_cost_usd();
  features.min_accuracy = request.constraints().min_accuracy();
  features.uniform = UniformDraw();
  features.seed = RandomNonce();
  // A pinned request stays out of experiments: the pin wins.
  const int experiment = pinned_route < 0 ? ExperimentFor(task) : -1;
  int arm = -1;
  policy::Engine* engine = engine_.get();
  if (experiment >= 0) {
    const v1::Experiment& spec = loaded_.config.experiments(experiment);
    const ExperimentRuntime& runtime = experiments_[experiment];
    bool sticky = spec.unit() != v1::EXPERIMENT_UNIT_REQUEST &&
                  !request.unit_id().empty();
    int bucket =
        sticky ? policy::ExperimentBucket(spec.salt(), request.unit_id())
               : static_cast<int>(UniformDraw() * policy::kExperimentBuckets);
    arm = policy::ArmForBucket(spec, bucket);
    if (runtime.arm_route[arm] >= 0) {
      features.pinned_route = runtime.arm_route[arm];
    } else {
      engine = runtime.arm_engine[arm].get();
    }
  }
  std::vector<float> embedding;
  if (engine->UsesContext(task)) {
    embedding = EmbedPrompt(request.messages().rbegin()->content());
    features.embedding = embedding;
  }
  auto decision = engine->Decide(features, *stats_.Snapshot());
  if (decision.ok() && experiment >= 0) {
    const v1::Experiment& spec = loaded_.config.experiments(experiment);
    const int arm_route = experiments_[experiment].arm_route[arm];
    decision->propensity *= experiments_[experiment].arm_share[arm];
    // A route arm decided by itself: the engine only saw its pin.
    decision->reason = absl::StrCat(
        "experiment ", spec.name(), " arm ", spec.arms(arm).name(), ": ",
        arm_route >= 0
            ? absl::StrCat("route ", loaded_.config.routes(arm_route).name())
            : decision->reason);
    decision->reason_class = "experiment";
  }
  if (!decision.ok()) {
    metrics_.RecordRejected(absl::StatusCodeToString(decision.status().code()));
    std::move(done)(decision.status());
    return;
  }
  const int route_index = decision->route;
  const v1::Route& route = loaded_.config.routes(route_index);
  metrics_.RecordDecision(route_index, task, decision->policy,
                          decision->reason_class);

  const std::string& task_name = loaded_.config.tasks(task);
  RequestIdParts id_parts;
  id_parts.route = route.name();
  id_parts.task = task_name;
  id_parts.unix_millis = absl::ToUnixMillis(start);
  id_parts.nonce = RandomNonce();
  if (experiment >= 0) {
    const v1::Experiment& spec = loaded_.config.experiments(experiment);
    id_parts.experiment = spec.name();
    id_parts.arm = spec.arms(arm).name();
  }
  auto issued = signer_->Issue(id_parts);
  if (!issued.ok()) {
    std::move(done)(issued.status());
    return;
  }
  std::string request_id = *std::move(issued);
  response->set_request_id(request_id);
  response->set_route(route.name());
  response->set_route_kind(EnumName(route.kind()));
  response->set_backend(route.backend());
  response->set_model(route.model());
  response->set_task(task_name);
  v1::Decision* wire_decision = response->mutable_decision();
  wire_decision->set_policy(decision->policy);
  wire_decision->set_reason(decision->reason);
  wire_decision->set_propensity(decision->propensity);
  wire_decision->set_experiment(id_parts.experiment);
  wire_decision->set_arm(id_parts.arm);

  auto call = std::make_unique<InferCall>();
  call->request = &request;
  call->deadline = deadline;
  call->response = response;
  call->route_index = route_index;
  call->task = task;
  call->start = start;
  call->propensity = decision->propensity;
  call->experiment = experiment;
  call->arm = arm;
  call->engine = engine;
  call->embedding = std::move(embedding);
  call->request_id = std::move(request_id);
  call->done = std::move(done);
  if (route.kind() != v1::ROUTE_KIND_RAG) {
    CallBackend(std::move(call));
    return;
  }
  // Retrieval may take milliseconds (or an embedding server's round trip):
  // never on a gRPC thread.
  retrieval_pool_->Submit(
      [this, call = std::move(call)](absl::Status admitted) mutable {
        if (!admitted.ok()) {
          metrics_.RecordRejected(absl::StatusCodeToString(admitted.code()));
          std::move(call->done)(admitted);
          return;
        }
        CallBackend(std::move(call));
      });
}

void Gateway::CallBackend(std::unique_ptr<InferCall> call) {
  const int route_index = call->route_index;
  const int task = call->task;
  const int experiment = call->experiment;
  const int arm = call->arm;
  const absl::Time start = call->start;
  const v1::InferRequest& request = *call->request;
  const v1::Route& route = loaded_.config.routes(route_index);
  absl::StatusOr<BackendRequest> backend_request =
      absl::InternalError("building the backend request failed");
  try {
    backend_request = BuildBackendRequest(route, request, call->response);
  } catch (const std::exception& e) {
    backend_request = absl::InternalError(
        absl::StrCat("building the backend request failed: ", e.what()));
  }
  if (!backend_request.ok()) {
    double latency = absl::ToDoubleSeconds(absl::Now() - start);
    stats_.RecordError(route_index, task, latency);
    if (experiment >= 0) {
      experiment_stats_->RecordError(experiment, arm, latency);
      metrics_.RecordExperimentRequest(experiment, arm, false);
    }
    metrics_.RecordFailure(route_index, task, Outcome::kError, latency);
    std::move(call->done)(backend_request.status());
    return;
  }
  // The caller's deadline bounds the backend call too.
  absl::Duration timeout =
      std::min(route_timeout_[route_index], call->deadline - absl::Now());
  if (timeout <= absl::ZeroDuration()) {
    std::move(call->done)(absl::DeadlineExceededError(
        "the request's deadline passed before a backend was called"));
    return;
  }
  backend_request->timeout = timeout;
  // A rag request embeds its question to search: priced per token.
  const int64_t embedding_tokens =
      route.kind() == v1::ROUTE_KIND_RAG
          ? static_cast<int64_t>(
                retrieval::Words(request.messages().rbegin()->content()).size())
          : 0;
  route_backend_[route_index]->Complete(
      *std::move(backend_request),
      [this, route_index, task, start, experiment, arm, embedding_tokens,
       call = std::move(call)](absl::StatusOr<BackendResponse> result) mutable {
        v1::InferResponse* response = call->response;
        const v1::Route& route = loaded_.config.routes(route_index);
        double latency = absl::ToDoubleSeconds(absl::Now() - start);
        if (!result.ok()) {
          stats_.RecordError(route_index, task, latency);
          if (experiment >= 0) {
            experiment_stats_->RecordError(experiment, arm, latency);
            metrics_.RecordExperimentRequest(experiment, arm, false);
          }
          metrics_.RecordFailure(route_index, task, OutcomeOf(result.status()),
                                 latency);
          std::move(call->done)(result.status());
          return;
        }
        const policy::RequestCost priced = policy::PriceRequest(
            route.pricing(), result->input_tokens, result->output_tokens,
            route.kind() == v1::ROUTE_KIND_RAG, embedding_tokens);
        const double cost = priced.total_usd();
        {
          std::lock_guard lock(economics_mu_);
          economics_->RecordRequest(route_index, task, priced, absl::Now());
        }
        response->set_text(std::move(result->text));
        v1::Usage* usage = response->mutable_usage();
        usage->set_input_tokens(result->input_tokens);
        usage->set_output_tokens(result->output_tokens);
        usage->set_estimated(!result->usage_reported);
        response->set_cost_usd(cost);
        response->set_latency_seconds(latency);
        stats_.RecordCompletion(
            route_index, task,
            {result->input_tokens, result->output_tokens, cost, latency});
        metrics_.RecordCompletion(route_index, task, result->input_tokens,
                                  result->output_tokens, priced, latency);
        call->engine->ObserveCost(task, cost);
        if (experiment >= 0) {
          experiment_stats_->RecordCompletion(experiment, arm, cost, latency);
          metrics_.RecordExperimentRequest(experiment, arm, true);
        }
        decisions_.Record(call->request_id, call->embedding);
        std::move(call->done)(absl::OkStatus());
      });
}

absl::StatusOr<v1::FeedbackResponse> Gateway::Feedback(
    const v1::FeedbackRequest& request) {
  double score = 0;
  bool graded = false;
  switch (request.outcome_case()) {
    case v1::FeedbackRequest::kCorrect:
      score = request.correct() ? 1 : 0;
      break;
    case v1::FeedbackRequest::kScore:
      if (!(request.score() >= 0 && request.score() <= 1)) {
        return absl::InvalidArgumentError(
            absl::StrCat("score: must be in [0, 1], got ", request.score()));
      }
      score = request.score();
      graded = true;
      break;
    case v1::FeedbackRequest::OUTCOME_NOT_SET:
      return absl::InvalidArgumentError("outcome: set correct or score");
  }
  if (request.request_id().empty()) {
    return absl::InvalidArgumentError("request_id: must not be empty");
  }
  auto verified = signer_->Verify(request.request_id(), absl::Now());
  if (!verified.ok()) {
    metrics_.RecordFeedbackRejected(RejectionOf(verified.status()));
    return verified.status();
  }
  const RequestIdParts* parts = &verified->parts;
  // The id says where the request went; the decision log adds the prompt's
  // embedding. An id it no longer holds (evicted, or served by another
  // replica) is credited from the id alone; judged_ says whether it was.
  auto route_it = route_index_.find(parts->route);
  auto task_it = task_index_.find(parts->task);
  if (route_it == route_index_.end() || task_it == task_index_.end()) {
    return absl::NotFoundError(
        absl::StrCat("request_id: route ", QuoteInput(parts->route),
                     " or task ", QuoteInput(parts->task),
                     " of this request is not in the current config"));
  }
  const int route = route_it->second;
  const int task = task_it->second;
  int experiment = -1;
  int arm = -1;
  for (int e = 0; e < loaded_.config.experiments_size(); ++e) {
    const v1::Experiment& spec = loaded_.config.experiments(e);
    if (spec.name() != parts->experiment) continue;
    for (int a = 0; a < spec.arms_size(); ++a) {
      if (spec.arms(a).name() == parts->arm) {
        experiment = e;
        arm = a;
      }
    }
  }
  // Counted once, whether the first came before a restart, left the
  // decision log, or reached another replica's copy of this id: the MAC,
  // which only this deployment's key makes, names the request.
  const std::string& judged_key = verified->mac;
  const absl::Time issued = verified->issued;
  const auto applying = state_sync_->HoldForFeedback();
  if (!judged_.Insert(judged_key, issued)) {
    metrics_.RecordFeedbackDuplicate();
    return absl::AlreadyExistsError(
        "request_id: feedback for this request was already counted");
  }
  if (state_store_ != nullptr) state_sync_->NoteJudged(judged_key, issued);
  auto embedding = decisions_.TakeFeedback(request.request_id());
  if (embedding.ok() && !embedding->empty()) {
    const bool arm_engine =
        experiment >= 0 && experiments_[experiment].arm_engine[arm] != nullptr;
    policy::Engine* engine =
        arm_engine ? experiments_[experiment].arm_engine[arm].get()
                   : engine_.get();
    engine->ObserveOutcome(task, route, *embedding, score);
    if (state_store_ != nullptr) {
      state_sync_->NoteOutcome(arm_engine ? experiment : -1,
                               arm_engine ? arm : -1, task, route, *embedding,
                               score);
    }
  }
  if (experiment >= 0) {
    experiment_stats_->RecordFeedback(experiment, arm, score);
    metrics_.RecordExperimentFeedback(experiment, arm, score);
  }
  stats_.RecordFeedback(route, task, score);
  metrics_.RecordFeedback(route, task, score, graded);
  {
    std::lock_guard lock(economics_mu_);
    economics_->RecordFeedback(route, task, score, absl::Now());
  }
  v1::FeedbackResponse response;
  response.set_route(loaded_.config.routes(route).name());
  response.set_task(loaded_.config.tasks(task));
  return response;
}

namespace {

v1::CostBreakdown Breakdown(const policy::RequestCost& cost) {
  v1::CostBreakdown breakdown;
  breakdown.set_input_tokens_usd(cost.input_usd);
  breakdown.set_output_tokens_usd(cost.output_usd);
  breakdown.set_request_fee_usd(cost.request_usd);
  breakdown.set_retrieval_usd(cost.retrieval_usd);
  breakdown.set_embedding_usd(cost.embedding_usd);
  breakdown.set_total_usd(cost.total_usd());
  return breakdown;
}

}  // namespace

absl::StatusOr<v1::GetEconomicsResponse> Gateway::GetEconomics(
    const v1::GetEconomicsRequest& request) {
  int only = -1;
  if (!request.route().empty()) {
    auto it = route_index_.find(request.route());
    if (it == route_index_.end()) {
      return absl::NotFoundError(
          absl::StrCat("route: unknown route ", QuoteInput(request.route())));
    }
    only = it->second;
  }
  const policy::EconomicsSnapshot snapshot = EconomicsNow();
  const v1::Config& config = loaded_.config;
  v1::GetEconomicsResponse response;
  response.set_as_of(
      absl::FormatTime(absl::RFC3339_sec, snapshot.as_of, absl::UTCTimeZone()));
  response.set_uptime_seconds(absl::ToDoubleSeconds(snapshot.uptime));
  response.set_window_seconds(absl::ToDoubleSeconds(snapshot.window));
  auto set = [](const std::optional<double>& value, auto setter) {
    if (value.has_value()) setter(*value);
  };
  for (const policy::RouteEconomics& economics : snapshot.routes) {
    if (only >= 0 && economics.route != only) continue;
    const v1::Route& route = config.routes(economics.route);
    v1::RouteEconomics& out = *response.add_routes();
    out.set_route(route.name());
    out.set_kind(EnumName(route.kind()));
    out.set_requests(economics.requests);
    *out.mutable_request_cost() = Breakdown(economics.request_cost);
    out.set_hosting_usd(economics.hosting_usd);
    out.set_training_amortized_usd(economics.training_amortized_usd);
    out.set_total_usd(economics.total_usd());
    out.set_judged(economics.judged);
    out.set_correct(economics.correct);
    set(economics.accuracy, [&](double v) { out.set_accuracy(v); });
    set(economics.cost_per_request_usd,
        [&](double v) { out.set_cost_per_request_usd(v); });
    set(economics.cost_per_correct_usd,
        [&](double v) { out.set_cost_per_correct_usd(v); });
    set(economics.window_cost_per_correct_usd,
        [&](double v) { out.set_window_cost_per_correct_usd(v); });
    out.set_requests_per_day(economics.requests_per_day);
    if (!economics.breakeven.has_value()) continue;
    const policy::BreakEven& be = *economics.breakeven;
    v1::BreakEven& wire = *out.mutable_breakeven();
    wire.set_baseline_route(config.routes(be.baseline).name());
    wire.set_training_cost_usd(be.training_cost_usd);
    wire.set_training_date(route.training().date());
    set(be.baseline_cost_per_request_usd,
        [&](double v) { wire.set_baseline_cost_per_request_usd(v); });
    set(be.savings_per_request_usd,
        [&](double v) { wire.set_savings_per_request_usd(v); });
    wire.set_savings_usd(be.savings_usd);
    wire.set_remaining_usd(be.remaining_usd);
    wire.set_recovered_share(be.recovered_share);
    wire.set_recovered(be.recovered);
    wire.set_never(be.never);
    wire.set_never_reason(be.never_reason);
    set(be.requests_remaining,
        [&](double v) { wire.set_requests_remaining(v); });
    if (be.days_remaining.has_value()) {
      wire.set_days_remaining(*be.days_remaining);
      // Far futures are capped: absl::Time saturates, a date does not.
      const double days = std::min(*be.days_remaining, 365.0 * 1000);
      wire.set_break_even_date(
          absl::FormatTime("%Y-%m-%d", snapshot.as_of + absl::Hours(24 * days),
                           absl::UTCTimeZone()));
    }
    set(be.cost_per_correct_usd,
        [&](double v) { wire.set_cost_per_correct_usd(v); });
    set(be.baseline_cost_per_correct_usd,
        [&](double v) { wire.set_baseline_cost_per_correct_usd(v); });
    wire.set_verdict(be.verdict);
  }
  for (const policy::TaskEconomics& economics : snapshot.tasks) {
    if (only >= 0 && economics.route != only) continue;
    v1::TaskEconomics& out = *response.add_tasks();
    out.set_route(config.routes(economics.route).name());
    out.set_task(config.tasks(economics.task));
    out.set_requests(economics.requests);
    *out.mutable_request_cost() = Breakdown(economics.request_cost);
    out.set_fixed_usd(economics.fixed_usd);
    out.set_judged(economics.judged);
    out.set_correct(economics.correct);
    set(economics.accuracy, [&](double v) { out.set_accuracy(v); });
    set(economics.cost_per_request_usd,
        [&](double v) { out.set_cost_per_request_usd(v); });
    set(economics.cost_per_correct_usd,
        [&](double v) { out.set_cost_per_correct_usd(v); });
    out.set_window_requests(economics.window_requests);
    set(economics.window_cost_per_correct_usd,
        [&](double v) { out.set_window_cost_per_correct_usd(v); });
  }
  return response;
}

absl::StatusOr<v1::GetRouteStatsResponse> Gateway::GetRouteStats(
    const v1::GetRouteStatsRequest& request) {
  int only = -1;
  if (!request.route().empty()) {
    auto it = route_index_.find(request.route());
    if (it == route_index_.end()) {
      return absl::NotFoundError(
          absl::StrCat("route: unknown route ", QuoteInput(request.route())));
    }
    only = it->second;
  }
  stats_.Publish();
  std::shared_ptr<const policy::StatsSnapshot> snapshot = stats_.Snapshot();
  v1::GetRouteStatsResponse response;
  const v1::Config& config = loaded_.config;
  for (int r = 0; r < config.routes_size(); ++r) {
    if (only >= 0 && r != only) continue;
    for (int t = 0; t < config.tasks_size(); ++t) {
      const policy::RouteTaskCounters& cell = snapshot->Cell(r, t);
      v1::RouteTaskStats* out = response.add_stats();
      out->set_route(config.routes(r).name());
      out->set_task(config.tasks(t));
      out->set_requests(cell.requests);
      out->set_errors(cell.errors);
      out->set_input_tokens(cell.input_tokens);
      out->set_output_tokens(cell.output_tokens);
      out->set_cost_usd(cell.cost_usd);
      out->set_latency_seconds_sum(cell.latency_seconds_sum);
      out->set_feedback_count(cell.feedback_count);
      out->set_feedback_score_sum(cell.feedback_score_sum);
      out->set_accuracy(cell.accuracy());
      out->set_cost_per_request_usd(cell.cost_per_request_usd());
      out->set_cost_per_correct_usd(cell.cost_per_correct_usd());
      out->set_latency_p50_seconds(cell.latency.Quantile(0.5));
      out->set_latency_p95_seconds(cell.latency.Quantile(0.95));
      out->set_latency_p99_seconds(cell.latency.Quantile(0.99));
      out->set_error_rate(cell.requests > 0
                              ? static_cast<double>(cell.errors) / cell.requests
                              : 0);
      out->set_recent_feedback(cell.recent.feedback);
      out->set_estimated_accuracy(engine_->Posterior(r, t, *snapshot).mean());
    }
  }
  return response;
}

}  // namespace arbiter

namespace arbiter {

absl::StatusOr<v1::ExperimentAnalysis> Gateway::GetExperiment(
    const v1::GetExperimentRequest& request) {
  const v1::Config& config = loaded_.config;
  for (int e = 0; e < config.experiments_size(); ++e) {
    const v1::Experiment& spec = config.experiments(e);
    if (spec.name() != request.name()) continue;
    policy::ExperimentAnalysis analysis =
        policy::AnalyzeExperiment(spec, experiment_stats_->Tallies(e));
    v1::ExperimentAnalysis out;
    out.set_name(analysis.name);
    out.set_control(analysis.control);
    out.set_srm_p_value(analysis.srm_p_value);
    out.set_srm_detected(analysis.srm_detected);
    out.set_verdict(analysis.verdict);
    for (const policy::ArmAnalysis& arm : analysis.arms) {
      v1::ArmAnalysis* wire = out.add_arms();
      wire->set_name(arm.name);
      wire->set_weight_share(arm.weight_share);
      wire->set_requests(arm.tally.requests);
      wire->set_errors(arm.tally.errors);
      wire->set_feedback(arm.tally.feedback);
      wire->set_accuracy(arm.accuracy);
      wire->set_accuracy_low(arm.accuracy_interval.low);
      wire->set_accuracy_high(arm.accuracy_interval.high);
      wire->set_cost_per_request_usd(arm.cost_per_request_usd);
      wire->set_cost_per_correct_usd(arm.cost_per_correct_usd);
      wire->set_latency_p50_seconds(arm.latency_p50_seconds);
      wire->set_latency_p95_seconds(arm.latency_p95_seconds);
      wire->set_error_rate(arm.error_rate);
      if (arm.versus_control.has_value()) {
        wire->set_compared(true);
        wire->set_difference(arm.versus_control->difference);
        wire->set_difference_low(arm.versus_control->confidence.low);
        wire->set_difference_high(arm.versus_control->confidence.high);
        wire->set_p_value(arm.versus_control->p_value);
        wire->set_significant(arm.versus_control->significant);
        wire->set_cost_difference_usd(arm.cost_difference_usd);
      }
      for (const std::string& breach : arm.guardrail_breaches) {
        wire->add_guardrail_breaches(breach);
      }
    }
    return out;
  }
  return absl::NotFoundError(
      absl::StrCat("name: no experiment ", QuoteInput(request.name())));
}

}  // namespace arbiter

namespace arbiter {
namespace {

// Search inputs larger than this are refused rather than scanned.
constexpr size_t kMaxQueryBytes = 4096;

// Runs `work` (returning StatusOr<Response>) on `pool`: fills *response and
// calls done with the outcome; a full pool's refusal goes to done at once.
template <typename Response, typename Work>
void RunOnPool(WorkerPool& pool, Response* response, Gateway::Done done,
               Work work) {
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

void Gateway::Upsert(const v1::UpsertRequest& request,
                     v1::UpsertResponse* response, Done done) {
  RunOnPool(*ingest_pool_, response, std::move(done),
            [this, &request] { return UpsertNow(request); });
}

void Gateway::Delete(const v1::DeleteRequest& request,
                     v1::DeleteResponse* response, Done done) {
  RunOnPool(*ingest_pool_, response, std::move(done),
            [this, &request] { return DeleteNow(request); });
}

void Gateway::Search(const v1::SearchRequest& request,
                     v1::SearchResponse* response, Done done) {
  RunOnPool(*retrieval_pool_, response, std::move(done),
            [this, &request] { return SearchNow(request); });
}

void Gateway::GetCollection(const v1::GetCollectionRequest& request,
                            v1::CollectionInfo* response, Done done) {
  RunOnPool(*retrieval_pool_, response, std::move(done),
            [this, &request] { return GetCollectionNow(request); });
}

absl::StatusOr<v1::UpsertResponse> Gateway::UpsertNow(
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
  auto collection = FindCollection(request.collection(), true);
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

absl::StatusOr<v1::DeleteResponse> Gateway::DeleteNow(
    const v1::DeleteRequest& request) {
  auto collection = FindCollection(request.collection(), false);
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

absl::StatusOr<v1::SearchResponse> Gateway::SearchNow(
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
  auto collection = FindCollection(request.collection(), false);
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

absl::StatusOr<v1::CollectionInfo> Gateway::GetCollectionNow(
    const v1::GetCollectionRequest& request) {
  auto collection = FindCollection(request.name(), false);
  if (!collection.ok()) return collection.status();
  v1::CollectionInfo info;
  info.set_name(request.name());
  auto documents = store_->DocumentCount(request.name());
  auto chunks = store_->ChunkCount(request.name());
  auto last = store_->LastChange();
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
