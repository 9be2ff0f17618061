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
#include "gateway/pipeline/retrieval_service.h"
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

policy::StatsOptions StatsOptionsFrom(const v1::Config& config) {
  policy::StatsOptions options;
  options.publish_interval = kPublishInterval;
  double half_life = config.statistics().half_life_seconds();
  options.half_life =
      half_life > 0 ? absl::Seconds(half_life) : absl::InfiniteDuration();
  return options;
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
  // Retries still waiting go now, to backends that are still here (and
  // that fail them as they stop).
  retry_timer_.reset();
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
    parts_.task_index[config.tasks(i)] = i;
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
      made =
          MakeOpenAIBackend(backend.name(), backend.openai(), key,
                            [this, name = backend.name()](BackendError reason) {
                              metrics_.RecordBackendError(name, reason);
                            });
    }
    backends_[backend.name()] = std::move(made);
    BackendHealth::Listener listener;
    listener.ejected = [this, name = backend.name()](Ejection reason,
                                                     absl::Duration length) {
      metrics_.SetBackendUp(name, false);
      metrics_.RecordEjection(name, reason);
      // One write per line: other threads log too.
      std::cerr << absl::StrCat("backend \"", name, "\" ejected for ",
                                absl::FormatDuration(length), " (",
                                EjectionName(reason), ")\n");
    };
    listener.restored = [this, name = backend.name()] {
      metrics_.SetBackendUp(name, true);
      std::cerr << absl::StrCat("backend \"", name, "\" back in service\n");
    };
    health_[backend.name()] = std::make_unique<BackendHealth>(
        backend.outlier_detection(), std::move(listener));
  }
  retry_budget_ = std::make_unique<RetryBudget>(config.server().retry_budget());
  retry_timer_ = std::make_unique<TimerQueue>();
  bool needs_retrieval = false;
  std::vector<double> prior_costs;
  for (int i = 0; i < config.routes_size(); ++i) {
    const v1::Route& route = config.routes(i);
    parts_.route_index[route.name()] = i;
    parts_.route_backend.push_back(backends_.at(route.backend()).get());
    parts_.route_health.push_back(health_.at(route.backend()).get());
    absl::Duration timeout = kDefaultBackendTimeout;
    for (const v1::Backend& backend : config.backends()) {
      if (backend.name() != route.backend()) continue;
      parts_.route_retry.push_back(&backend.retry());
      if (backend.has_openai()) {
        timeout = absl::Seconds(backend.openai().timeout_seconds());
      }
    }
    parts_.route_timeout.push_back(timeout);
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
  collections_ =
      std::make_unique<Collections>(config, *store_, embedding_client_.get());
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
    auto corpus = collections_->Find("corpus", true);
    if (!corpus.ok()) return corpus.status();
    parts_.corpus = *corpus;
    parts_.search_mode = SearchModeOf(settings.search());
    metrics_.SetCorpus(*store_->DocumentCount("corpus"),
                       *store_->ChunkCount("corpus"));
  }
  if (parts_.corpus == nullptr || embedding_client_ != nullptr) {
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
  WireParts();
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
    ExperimentArms runtime;
    runtime.tasks.assign(config.tasks_size(), experiment.tasks().empty());
    for (const std::string& task : experiment.tasks()) {
      runtime.tasks[parts_.task_index.at(task)] = true;
    }
    double total = 0;
    for (const auto& arm : experiment.arms()) total += arm.weight();
    for (const v1::ExperimentArm& arm : experiment.arms()) {
      runtime.arm_share.push_back(arm.weight() / total);
      if (arm.has_route()) {
        runtime.arm_route.push_back(parts_.route_index.at(arm.route()));
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

absl::Status Gateway::InitState() {
  const v1::Config& config = loaded_.config;
  StateSync::Parts parts;
  parts.config = &config;
  parts.stats = &stats_;
  parts.engine = engine_.get();
  for (const ExperimentArms& runtime : experiments_) {
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

void Gateway::WireParts() {
  parts_.config = &loaded_.config;
  parts_.prompt_embedder = prompt_embedder_.get();
  parts_.retrieval_pool = retrieval_pool_.get();
  parts_.engine = engine_.get();
  parts_.experiments = &experiments_;
  parts_.experiment_stats = experiment_stats_.get();
  parts_.stats = &stats_;
  parts_.economics_mu = &economics_mu_;
  parts_.economics = economics_.get();
  parts_.decisions = &decisions_;
  parts_.judged = &judged_;
  parts_.state_sync = state_sync_.get();
  parts_.durable = state_store_ != nullptr;
  parts_.signer = signer_.get();
  parts_.metrics = &metrics_;
  parts_.retry_budget = retry_budget_.get();
  parts_.retry_timer = retry_timer_.get();
  pipeline_ = std::make_unique<RequestPipeline>(parts_);
  feedback_ = std::make_unique<FeedbackRecorder>(parts_);
  admin_ = std::make_unique<AdminService>(parts_);
  retrieval_ = std::make_unique<RetrievalService>(
      *collections_, *retrieval_pool_, *ingest_pool_);
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

std::vector<LoopGuest*> Gateway::BackendLoops() const {
  std::vector<LoopGuest*> loops;
  for (const auto& [name, backend] : backends_) {
    for (LoopGuest* loop : backend->loop_guests()) loops.push_back(loop);
  }
  return loops;
}

std::string Gateway::Describe() const {
  const v1::Config& config = loaded_.config;
  std::string text = DescribeConfig(loaded_);
  if (parts_.corpus != nullptr) {
    absl::StrAppend(&text, "corpus: ", *store_->DocumentCount("corpus"),
                    " documents, ", *store_->ChunkCount("corpus"), " chunks (",
                    EnumName(config.retrieval().search()), " search)\n");
  }
  absl::StrAppend(&text, "request ids: HMAC-SHA-256 with ", signer_source_,
                  "; feedback accepted for ",
                  config.server().feedback_window_hours(), " hours\n");

  return text;
}

}  // namespace arbiter
