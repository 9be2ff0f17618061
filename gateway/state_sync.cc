#include "gateway/state_sync.h"

#include <algorithm>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace arbiter {
namespace {

v1::LatencySketchState SketchState(const policy::LatencySketch& sketch) {
  policy::LatencySketch::Parts parts = sketch.parts();
  v1::LatencySketchState state;
  state.set_relative_accuracy(parts.relative_accuracy);
  state.set_count(parts.count);
  state.set_zero_count(parts.zero_count);
  for (const auto& [index, n] : parts.buckets) {
    (*state.mutable_buckets())[index] = n;
  }
  return state;
}

// An empty sketch when the stored one does not add up.
policy::LatencySketch SketchFrom(const v1::LatencySketchState& state,
                                 std::vector<std::string>& log,
                                 absl::string_view what) {
  if (state.count() == 0) return policy::LatencySketch();
  policy::LatencySketch::Parts parts;
  parts.relative_accuracy = state.relative_accuracy();
  parts.count = state.count();
  parts.zero_count = state.zero_count();
  parts.buckets.insert(state.buckets().begin(), state.buckets().end());
  auto sketch = policy::LatencySketch::FromParts(std::move(parts));
  if (!sketch.ok()) {
    log.push_back(absl::StrCat(
        what, ": stored latencies dropped: ", sketch.status().message()));
    return policy::LatencySketch();
  }
  return *std::move(sketch);
}

v1::RouteTaskState CellState(const policy::RouteTaskCounters& c) {
  v1::RouteTaskState state;
  state.set_requests(c.requests);
  state.set_errors(c.errors);
  state.set_input_tokens(c.input_tokens);
  state.set_output_tokens(c.output_tokens);
  state.set_cost_usd(c.cost_usd);
  state.set_latency_seconds_sum(c.latency_seconds_sum);
  state.set_feedback_count(c.feedback_count);
  state.set_feedback_score_sum(c.feedback_score_sum);
  v1::EvidenceState& recent = *state.mutable_recent();
  recent.set_completions(c.recent.completions);
  recent.set_errors(c.recent.errors);
  recent.set_cost_usd(c.recent.cost_usd);
  recent.set_latency_seconds(c.recent.latency_seconds);
  recent.set_feedback(c.recent.feedback);
  recent.set_score(c.recent.score);
  if (c.recent.as_of != absl::InfinitePast()) {
    recent.set_as_of_unix_micros(absl::ToUnixMicros(c.recent.as_of));
  }
  *state.mutable_latency() = SketchState(c.latency);
  return state;
}

policy::RouteTaskCounters CountersFrom(const v1::RouteTaskState& state,
                                       std::vector<std::string>& log) {
  policy::RouteTaskCounters c;
  c.requests = state.requests();
  c.errors = state.errors();
  c.input_tokens = state.input_tokens();
  c.output_tokens = state.output_tokens();
  c.cost_usd = state.cost_usd();
  c.latency_seconds_sum = state.latency_seconds_sum();
  c.feedback_count = state.feedback_count();
  c.feedback_score_sum = state.feedback_score_sum();
  const v1::EvidenceState& recent = state.recent();
  c.recent.completions = recent.completions();
  c.recent.errors = recent.errors();
  c.recent.cost_usd = recent.cost_usd();
  c.recent.latency_seconds = recent.latency_seconds();
  c.recent.feedback = recent.feedback();
  c.recent.score = recent.score();
  c.recent.as_of = recent.as_of_unix_micros() != 0
                       ? absl::FromUnixMicros(recent.as_of_unix_micros())
                       : absl::InfinitePast();
  c.latency =
      SketchFrom(state.latency(), log,
                 absl::StrCat("route ", state.route(), " task ", state.task()));
  return c;
}

v1::ExperimentArmState ArmState(const policy::ArmTally& tally) {
  v1::ExperimentArmState state;
  state.set_requests(tally.requests);
  state.set_errors(tally.errors);
  state.set_cost_usd(tally.cost_usd);
  state.set_feedback(tally.feedback);
  state.set_score(tally.score);
  *state.mutable_latency() = SketchState(tally.latency);
  return state;
}

template <typename Names>
absl::flat_hash_map<std::string, int> IndexOf(const Names& names) {
  absl::flat_hash_map<std::string, int> index;
  int i = 0;
  for (const auto& name : names) index.emplace(name, i++);
  return index;
}

std::string Listed(const std::set<std::string>& names) {
  return absl::StrJoin(names, ", ");
}

}  // namespace

StateSync::StateSync(Parts parts) : parts_(std::move(parts)) {}

policy::Engine* StateSync::EngineOf(int experiment, int arm) const {
  if (experiment < 0) return parts_.engine;
  return parts_.arm_engines[experiment][arm];
}

v1::StrategyKey StateSync::KeyOf(int experiment, int arm,
                                 const std::string& strategy) const {
  v1::StrategyKey key;
  if (experiment >= 0) {
    const v1::Experiment& spec = parts_.config->experiments(experiment);
    key.set_experiment(spec.name());
    key.set_arm(spec.arms(arm).name());
  }
  key.set_strategy(strategy);
  return key;
}

std::vector<std::string> StateSync::Restore(const v1::GatewayState& state,
                                            absl::Time now) {
  const v1::Config& config = *parts_.config;
  std::vector<std::string> log;
  auto route_index = IndexOf([&] {
    std::vector<std::string> names;
    for (const v1::Route& route : config.routes())
      names.push_back(route.name());
    return names;
  }());
  auto task_index = IndexOf(config.tasks());
  std::set<std::string> unserved_routes, unserved_tasks, unserved_experiments;

  // A route whose backend or model changed keeps what it learned unless it
  // asks to start over.
  std::vector<bool> reset(config.routes_size(), false);
  for (const v1::RouteIdentity& stored : state.routes()) {
    auto it = route_index.find(stored.route());
    if (it == route_index.end()) continue;
    const v1::Route& route = config.routes(it->second);
    if (stored.backend() == route.backend() &&
        stored.model() == route.model()) {
      continue;
    }
    const std::string change =
        absl::StrCat("route ", route.name(), ": backend/model changed from ",
                     stored.backend(), "/", stored.model(), " to ",
                     route.backend(), "/", route.model());
    if (route.reset_statistics()) {
      reset[it->second] = true;
      log.push_back(absl::StrCat(change,
                                 "; its statistics start over "
                                 "(reset_statistics)"));
    } else {
      log.push_back(absl::StrCat(change,
                                 "; it keeps the statistics learned before "
                                 "(reset_statistics: true starts over)"));
    }
  }

  // What the config no longer names is kept as it was, for a later config
  // (reloaded, or after a restart) that names it again.
  unserved_.Clear();
  for (const v1::RouteIdentity& stored : state.routes()) {
    if (!route_index.contains(stored.route())) {
      *unserved_.add_routes() = stored;
    }
  }
  std::vector<policy::RouteStats::StoredCell> cells;
  int64_t restored_requests = 0;
  for (const v1::RouteTaskState& stored : state.route_tasks()) {
    auto route = route_index.find(stored.route());
    auto task = task_index.find(stored.task());
    if (route == route_index.end()) unserved_routes.insert(stored.route());
    if (task == task_index.end()) unserved_tasks.insert(stored.task());
    if (route == route_index.end() || task == task_index.end()) {
      *unserved_.add_route_tasks() = stored;
      continue;
    }
    if (reset[route->second]) continue;
    restored_requests += stored.requests();
    cells.push_back({route->second, task->second, CountersFrom(stored, log)});
  }
  const size_t restored_cells = cells.size();
  parts_.stats->Restore(std::move(cells), now);

  // Experiments and arms by name.
  absl::flat_hash_map<std::string, int> experiment_index;
  for (int e = 0; e < config.experiments_size(); ++e) {
    experiment_index.emplace(config.experiments(e).name(), e);
  }
  auto arm_of = [&](const std::string& experiment,
                    const std::string& arm) -> std::pair<int, int> {
    if (experiment.empty()) return {-1, -1};
    auto it = experiment_index.find(experiment);
    if (it == experiment_index.end()) return {-2, -2};
    const v1::Experiment& spec = config.experiments(it->second);
    for (int a = 0; a < spec.arms_size(); ++a) {
      if (spec.arms(a).name() == arm) return {it->second, a};
    }
    return {-2, -2};
  };
  for (const v1::ExperimentArmState& stored : state.experiment_arms()) {
    auto [e, a] = arm_of(stored.experiment(), stored.arm());
    if (e < 0) {
      unserved_experiments.insert(
          absl::StrCat(stored.experiment(), " arm ", stored.arm()));
      *unserved_.add_experiment_arms() = stored;
      continue;
    }
    policy::ArmTally tally;
    tally.requests = stored.requests();
    tally.errors = stored.errors();
    tally.cost_usd = stored.cost_usd();
    tally.feedback = stored.feedback();
    tally.score = stored.score();
    tally.latency =
        SketchFrom(stored.latency(), log,
                   absl::StrCat("experiment ", stored.experiment()));
    parts_.experiment_stats->Restore(e, a, std::move(tally));
  }

  for (const v1::BudgetState& stored : state.budgets()) {
    auto [e, a] = arm_of(stored.key().experiment(), stored.key().arm());
    policy::Engine* engine = e == -2 ? nullptr : EngineOf(e, a);
    if (engine == nullptr || !engine->RestoreCostWeight(stored.key().strategy(),
                                                        stored.cost_weight())) {
      *unserved_.add_budgets() = stored;
      log.push_back(absl::StrCat("budget strategy at ", stored.key().strategy(),
                                 " is no longer in the config; its cost "
                                 "weight is kept on disk, not used"));
    }
  }

  int64_t context_restored = 0;
  for (const v1::ContextEntry& stored : state.context_entries()) {
    auto [e, a] = arm_of(stored.key().experiment(), stored.key().arm());
    auto route = route_index.find(stored.route());
    policy::Engine* engine = e == -2 ? nullptr : EngineOf(e, a);
    if (route != route_index.end() && reset[route->second]) continue;
    if (engine != nullptr && route != route_index.end() &&
        engine->RestoreOutcome(stored.key().strategy(), route->second,
                               stored.embedding(), stored.score())) {
      ++context_restored;
    } else {
      *unserved_.add_context_entries() = stored;
    }
  }

  {
    std::lock_guard lock(*parts_.economics_mu);
    parts_.economics->Restore(state.economics(), now);
  }
  // What the config no longer names stays on disk as it was.
  unserved_economics_.Clear();
  for (const v1::RouteAccrualState& stored : state.economics().routes()) {
    if (!route_index.contains(stored.route())) {
      *unserved_economics_.add_routes() = stored;
    }
  }
  for (const v1::EconomicsCellState& stored : state.economics().cells()) {
    if (!route_index.contains(stored.route()) ||
        !task_index.contains(stored.task())) {
      *unserved_economics_.add_cells() = stored;
    }
  }

  for (const v1::JudgedRequest& judged : state.judged()) {
    parts_.judged->Insert(judged.mac(),
                          absl::FromUnixMicros(judged.issued_unix_micros()));
  }

  log.insert(log.begin(),
             absl::StrCat("restored ", restored_cells,
                          " route/task statistics (", restored_requests,
                          " requests), ", context_restored, " judged prompts, ",
                          state.experiment_arms_size(), " experiment arms, ",
                          state.judged_size(), " judged request ids"));
  if (!unserved_routes.empty() || !unserved_tasks.empty() ||
      !unserved_experiments.empty()) {
    std::vector<std::string> parts;
    if (!unserved_routes.empty()) {
      parts.push_back(absl::StrCat("routes ", Listed(unserved_routes)));
    }
    if (!unserved_tasks.empty()) {
      parts.push_back(absl::StrCat("tasks ", Listed(unserved_tasks)));
    }
    if (!unserved_experiments.empty()) {
      parts.push_back(
          absl::StrCat("experiments ", Listed(unserved_experiments)));
    }
    log.push_back(
        absl::StrCat("not in the config, kept on disk but not "
                     "served: ",
                     absl::StrJoin(parts, "; ")));
  }
  return log;
}

void StateSync::NoteJudged(absl::string_view mac, absl::Time issued) {
  v1::JudgedRequest judged;
  judged.set_mac(std::string(mac));
  judged.set_issued_unix_micros(absl::ToUnixMicros(issued));
  std::lock_guard lock(mu_);
  judged_.push_back(std::move(judged));
}

void StateSync::NoteOutcome(int experiment, int arm, int task, int route,
                            absl::Span<const float> embedding, double score) {
  policy::Engine* engine = EngineOf(experiment, arm);
  const int capacity = engine->ContextCapacity(task);
  if (capacity <= 0) return;
  v1::ContextEntry entry;
  *entry.mutable_key() = KeyOf(experiment, arm, engine->StrategyOf(task));
  entry.set_route(parts_.config->routes(route).name());
  entry.set_score(score);
  entry.mutable_embedding()->Add(embedding.begin(), embedding.end());
  std::lock_guard lock(mu_);
  capacity_.emplace_back(entry.key(), capacity);
  context_.push_back(std::move(entry));
}

state::StateBatch StateSync::Collect() {
  state::StateBatch batch;
  std::unique_lock no_feedback_half_applied(feedback_mu_);
  CollectAggregates(absl::Now(), batch);
  std::lock_guard lock(mu_);
  batch.judged.swap(judged_);
  batch.context_entries.swap(context_);
  batch.context_capacity.swap(capacity_);
  return batch;
}

v1::GatewayState StateSync::Snapshot() {
  state::StateBatch batch;
  std::unique_lock no_feedback_half_applied(feedback_mu_);
  CollectAggregates(absl::Now(), batch);
  v1::GatewayState state = unserved_;
  for (auto& cell : batch.route_tasks) {
    *state.add_route_tasks() = std::move(cell);
  }
  for (auto& route : batch.routes) *state.add_routes() = std::move(route);
  for (auto& budget : batch.budgets) *state.add_budgets() = std::move(budget);
  for (auto& arm : batch.experiment_arms) {
    *state.add_experiment_arms() = std::move(arm);
  }
  // The economics carries what is unserved already.
  *state.mutable_economics() = std::move(*batch.economics);
  auto remembered = [&](int experiment, int arm) {
    policy::Engine* engine = EngineOf(experiment, arm);
    if (engine == nullptr) return;
    for (auto& outcome : engine->RememberedOutcomes()) {
      v1::ContextEntry& entry = *state.add_context_entries();
      *entry.mutable_key() = KeyOf(experiment, arm, outcome.strategy);
      entry.set_route(outcome.route);
      entry.set_score(outcome.score);
      entry.mutable_embedding()->Add(outcome.embedding.begin(),
                                     outcome.embedding.end());
    }
  };
  remembered(-1, -1);
  for (int e = 0; e < parts_.config->experiments_size(); ++e) {
    for (int a = 0; a < parts_.config->experiments(e).arms_size(); ++a) {
      remembered(e, a);
    }
  }
  return state;
}

void StateSync::AdoptNotes(StateSync& from) {
  std::scoped_lock lock(mu_, from.mu_);
  for (auto& judged : from.judged_) judged_.push_back(std::move(judged));
  for (auto& entry : from.context_) context_.push_back(std::move(entry));
  for (auto& capacity : from.capacity_)
    capacity_.push_back(std::move(capacity));
  from.judged_.clear();
  from.context_.clear();
  from.capacity_.clear();
}

void StateSync::CollectAggregates(absl::Time now, state::StateBatch& batch) {
  const v1::Config& config = *parts_.config;
  parts_.stats->Publish(now);
  std::shared_ptr<const policy::StatsSnapshot> snapshot =
      parts_.stats->Snapshot();
  for (int r = 0; r < config.routes_size(); ++r) {
    const v1::Route& route = config.routes(r);
    for (int t = 0; t < config.tasks_size(); ++t) {
      v1::RouteTaskState cell = CellState(snapshot->Cell(r, t));
      cell.set_route(route.name());
      cell.set_task(config.tasks(t));
      batch.route_tasks.push_back(std::move(cell));
    }
    v1::RouteIdentity identity;
    identity.set_route(route.name());
    identity.set_backend(route.backend());
    identity.set_model(route.model());
    batch.routes.push_back(std::move(identity));
  }
  auto budgets = [&](int experiment, int arm) {
    policy::Engine* engine = EngineOf(experiment, arm);
    if (engine == nullptr) return;
    for (const auto& [strategy, weight] : engine->CostWeights()) {
      v1::BudgetState budget;
      *budget.mutable_key() = KeyOf(experiment, arm, strategy);
      budget.set_cost_weight(weight);
      batch.budgets.push_back(std::move(budget));
    }
  };
  budgets(-1, -1);
  for (int e = 0; e < config.experiments_size(); ++e) {
    const v1::Experiment& spec = config.experiments(e);
    std::vector<policy::ArmTally> tallies = parts_.experiment_stats->Tallies(e);
    for (int a = 0; a < spec.arms_size(); ++a) {
      budgets(e, a);
      v1::ExperimentArmState arm = ArmState(tallies[a]);
      arm.set_experiment(spec.name());
      arm.set_arm(spec.arms(a).name());
      batch.experiment_arms.push_back(std::move(arm));
    }
  }
  {
    std::lock_guard lock(*parts_.economics_mu);
    batch.economics = parts_.economics->ToState(now);
  }
  for (const v1::RouteAccrualState& route : unserved_economics_.routes()) {
    *batch.economics->add_routes() = route;
  }
  for (const v1::EconomicsCellState& cell : unserved_economics_.cells()) {
    *batch.economics->add_cells() = cell;
  }
}

}  // namespace arbiter
