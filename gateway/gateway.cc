#include "gateway/gateway.h"

#include <cstdlib>
#include <exception>
#include <iostream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
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

Gateway::Gateway(LoadedConfig config, GatewayFoundation& foundation,
                 prometheus::Registry& registry, std::shared_mutex& handover)
    : loaded_(std::move(config)),
      foundation_(foundation),
      handover_(handover),
      stats_(loaded_.config.routes_size(), loaded_.config.tasks_size(),
             StatsOptionsFrom(loaded_.config)),
      metrics_(registry, loaded_.config),
      authenticator_(loaded_.config, &metrics_) {}

Gateway::~Gateway() {
  stopping_ = true;
  ticker_.reset();
}

absl::StatusOr<std::unique_ptr<Gateway>> Gateway::Create(
    LoadedConfig config, GatewayFoundation& foundation,
    prometheus::Registry& registry, std::shared_mutex& handover) {
  auto gateway = std::unique_ptr<Gateway>(
      new Gateway(std::move(config), foundation, registry, handover));
  absl::Status status = gateway->Init();
  if (!status.ok()) return status;
  return gateway;
}

absl::Status Gateway::Init() {
  const v1::Config& config = loaded_.config;
  for (int i = 0; i < config.tasks_size(); ++i) {
    parts_.task_index[config.tasks(i)] = i;
  }
  auto backends = foundation_.BackendsFor(config, *loaded_.files);
  if (!backends.ok()) return backends.status();
  backends_ = *std::move(backends);
  std::vector<double> prior_costs;
  for (int i = 0; i < config.routes_size(); ++i) {
    const v1::Route& route = config.routes(i);
    const BackendEntry& backend = *backends_.at(route.backend());
    parts_.route_index[route.name()] = i;
    parts_.route_backend.push_back(backend.backend.get());
    parts_.route_health.push_back(backend.health.get());
    parts_.route_retry.push_back(&backend.spec.retry());
    parts_.route_timeout.push_back(
        backend.spec.has_openai()
            ? absl::Seconds(backend.spec.openai().timeout_seconds())
            : kDefaultBackendTimeout);
    int64_t overhead = retrieval::CountTokens(route.system_prompt());
    for (const v1::Example& example : route.examples()) {
      overhead += retrieval::CountTokens(example.user()) +
                  retrieval::CountTokens(example.assistant()) + 8;
    }
    bool rag = route.kind() == v1::ROUTE_KIND_RAG;
    if (rag) {
      overhead += route.rag().max_context_tokens();
    }
    prior_costs.push_back(
        policy::PriceRequest(route.pricing(), overhead + kTypicalQuestionTokens,
                             route.max_output_tokens(), rag)
            .total_usd());
  }
  economics_ = std::make_unique<policy::EconomicsLedger>(config, absl::Now(),
                                                         prior_costs);
  auto engine = policy::Engine::Create(config, prior_costs);
  if (!engine.ok()) return engine.status();
  engine_ = *std::move(engine);
  absl::Status experiments = InitExperiments(prior_costs);
  if (!experiments.ok()) return experiments;
  StateSync::Parts sync;
  sync.config = &config;
  sync.stats = &stats_;
  sync.engine = engine_.get();
  for (const ExperimentArms& runtime : experiments_) {
    std::vector<policy::Engine*> arms;
    for (const auto& arm : runtime.arm_engine) arms.push_back(arm.get());
    sync.arm_engines.push_back(std::move(arms));
  }
  sync.experiment_stats = experiment_stats_.get();
  sync.economics_mu = &economics_mu_;
  sync.economics = economics_.get();
  sync.judged = &foundation_.judged();
  state_sync_ = std::make_unique<StateSync>(std::move(sync));
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

std::vector<std::string> Gateway::RestoreStored() {
  if (!foundation_.durable()) return {};
  return state_sync_->Restore(foundation_.stored_state(), absl::Now());
}

std::vector<std::string> Gateway::TakeOver(Gateway& predecessor) {
  std::vector<std::string> log =
      state_sync_->Restore(predecessor.state_sync_->Snapshot(), absl::Now());
  state_sync_->AdoptNotes(*predecessor.state_sync_);
  return log;
}

void Gateway::Retire(std::shared_ptr<Gateway> successor) {
  stopping_ = true;
  successor_ = std::move(successor);
}

LiveParts Gateway::Live() const {
  std::shared_lock hold(handover_);
  const Gateway* live = this;
  while (live->successor_ != nullptr) live = live->successor_.get();
  return {&live->parts_, std::move(hold)};
}

void Gateway::ScheduleForgetJudged() {
  if (stopping_) return;
  ticker_->RunAfter(absl::Minutes(1), [this] {
    foundation_.judged().ForgetIssuedBefore(
        absl::Now() -
        absl::Hours(loaded_.config.server().feedback_window_hours()));
    ScheduleForgetJudged();
  });
}

void Gateway::WireParts() {
  parts_.config = &loaded_.config;
  parts_.retry_budget = &foundation_.retry_budget();
  parts_.retry_timer = &foundation_.retry_timer();
  parts_.corpus = foundation_.corpus();
  parts_.search_mode = foundation_.search_mode();
  parts_.prompt_embedder = foundation_.prompt_embedder();
  parts_.retrieval_pool = &foundation_.retrieval_pool();
  parts_.engine = engine_.get();
  parts_.experiments = &experiments_;
  parts_.experiment_stats = experiment_stats_.get();
  parts_.stats = &stats_;
  parts_.economics_mu = &economics_mu_;
  parts_.economics = economics_.get();
  parts_.decisions = &foundation_.decisions();
  parts_.judged = &foundation_.judged();
  parts_.state_sync = state_sync_.get();
  parts_.durable = foundation_.durable();
  parts_.signer = &foundation_.signer();
  parts_.metrics = &metrics_;
  parts_.live = [this] { return Live(); };
  pipeline_ = std::make_unique<RequestPipeline>(parts_);
  feedback_ = std::make_unique<FeedbackRecorder>(parts_);
  admin_ = std::make_unique<AdminService>(parts_);
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
    if (stopping_) return;  // Its successor's figures are the live ones.
    metrics_.UpdateEconomics(EconomicsNow());
    if (const state::StateStore* store = foundation_.state_store();
        store != nullptr) {
      const state::WriterStats writes = store->writer_stats();
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

std::string Gateway::Describe() const {
  return absl::StrCat(DescribeConfig(loaded_), foundation_.Describe());
}

}  // namespace arbiter
