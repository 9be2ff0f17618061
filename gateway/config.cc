#include "gateway/config.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gateway/backends/openai_backend.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "retrieval/vector_index.h"
#include "yaml-cpp/yaml.h"

namespace arbiter {
namespace {

using nlohmann::json;

constexpr char kEmbeddedConfigPath[] = "arbiter.yaml";
// backends[].openai.max_response_bytes: one answer held in memory at most.
constexpr int64_t kMaxResponseBytesLimit = int64_t{1} << 30;

// Plain YAML scalars become JSON numbers, booleans or null when they look
// like one; quoted scalars stay strings.
json ScalarToJson(const YAML::Node& node) {
  const std::string& text = node.Scalar();
  if (node.Tag() == "!") return text;
  if (text == "true" || text == "True") return true;
  if (text == "false" || text == "False") return false;
  if (text == "null" || text == "~") return nullptr;
  int64_t integer;
  if (absl::SimpleAtoi(text, &integer)) return integer;
  double number;
  if (!text.empty() &&
      (absl::ascii_isdigit(text[0]) || text[0] == '-' || text[0] == '.') &&
      absl::SimpleAtod(text, &number)) {
    return number;
  }
  return text;
}

absl::StatusOr<json> YamlToJson(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return json(nullptr);
    case YAML::NodeType::Scalar:
      return ScalarToJson(node);
    case YAML::NodeType::Sequence: {
      json array = json::array();
      for (const YAML::Node& item : node) {
        auto value = YamlToJson(item);
        if (!value.ok()) return value.status();
        array.push_back(*std::move(value));
      }
      return array;
    }
    case YAML::NodeType::Map: {
      json object = json::object();
      for (const auto& entry : node) {
        if (!entry.first.IsScalar()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "line ", entry.first.Mark().line + 1, ": keys must be scalars"));
        }
        auto value = YamlToJson(entry.second);
        if (!value.ok()) return value.status();
        object[entry.first.Scalar()] = *std::move(value);
      }
      return object;
    }
  }
  return json(nullptr);
}

bool IsLabelSafe(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '_' && c != '-' && c != '.') {
      return false;
    }
  }
  return true;
}

bool IsHostPort(absl::string_view address) {
  size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) return false;
  int port;
  return absl::SimpleAtoi(address.substr(colon + 1), &port) && port >= 0 &&
         port <= 65535;
}

class Validator {
 public:
  explicit Validator(const v1::Config& config) : config_(config) {}

  std::vector<std::string> Run() {
    CheckServer();
    CheckBackends();
    CheckTasks();
    CheckRoutes();
    CheckTraining();
    CheckPolicy(config_.policy(), "policy");
    for (const auto& [task, policy] : config_.task_policies()) {
      std::string path = absl::StrCat("task_policies.", task);
      if (!tasks_.contains(task)) Error(path, "unknown task \"", task, "\"");
      CheckPolicy(policy, path);
    }
    CheckRetrieval();
    CheckExperiments();
    if (config_.economics().window_minutes() < 0 ||
        config_.economics().window_minutes() > 7 * 24 * 60) {
      Error("economics.window_minutes", "must be in [1, 10080]");
    }
    NonNegative(config_.economics().budget_usd_per_day(),
                "economics.budget_usd_per_day");
    NonNegative(config_.statistics().half_life_seconds(),
                "statistics.half_life_seconds");
    if (config_.statistics().has_prior_strength()) {
      NonNegative(config_.statistics().prior_strength(),
                  "statistics.prior_strength");
    }
    return std::move(errors_);
  }

 private:
  template <typename... Args>
  void Error(absl::string_view path, const Args&... reason) {
    errors_.push_back(absl::StrCat(path, ": ", reason...));
  }

  void NonNegative(double value, absl::string_view path) {
    if (!(value >= 0)) Error(path, "must be >= 0");
  }

  void Probability(double value, absl::string_view path) {
    if (!(value >= 0 && value <= 1)) Error(path, "must be in [0, 1]");
  }

  void CheckServer() {
    const v1::Server& server = config_.server();
    if (!server.grpc_listen().empty() && !IsHostPort(server.grpc_listen())) {
      Error("server.grpc_listen", "must be host:port, got \"",
            server.grpc_listen(), "\"");
    }
    if (!server.metrics_listen().empty() &&
        !IsHostPort(server.metrics_listen())) {
      Error("server.metrics_listen", "must be host:port, got \"",
            server.metrics_listen(), "\"");
    }
    NonNegative(server.max_request_bytes(), "server.max_request_bytes");
    NonNegative(server.decision_log_capacity(), "server.decision_log_capacity");
  }

  void CheckBackends() {
    if (config_.backends().empty()) Error("backends", "at least one is needed");
    for (int i = 0; i < config_.backends_size(); ++i) {
      const v1::Backend& backend = config_.backends(i);
      std::string path = absl::StrCat("backends[", i, "]");
      if (!IsLabelSafe(backend.name())) {
        Error(path + ".name",
              "must be 1-64 characters of letters, digits, '_', '-' or '.'");
      } else if (!backends_.insert(backend.name()).second) {
        Error(path + ".name", "duplicate backend \"", backend.name(), "\"");
      }
      switch (backend.kind_case()) {
        case v1::Backend::kOpenai: {
          const v1::OpenAIBackend& openai = backend.openai();
          if (!absl::StartsWith(openai.base_url(), "http://") &&
              !absl::StartsWith(openai.base_url(), "https://")) {
            Error(path + ".openai.base_url",
                  "must start with http:// or https://, got \"",
                  openai.base_url(), "\"");
          }
          NonNegative(openai.timeout_seconds(),
                      path + ".openai.timeout_seconds");
          NonNegative(openai.max_connections(),
                      path + ".openai.max_connections");
          if (openai.has_max_response_bytes() &&
              (openai.max_response_bytes() < 1 ||
               openai.max_response_bytes() > kMaxResponseBytesLimit)) {
            Error(path + ".openai.max_response_bytes", "must be in [1, ",
                  kMaxResponseBytesLimit, "], got ",
                  openai.max_response_bytes());
          }
          NonNegative(openai.max_queued_requests(),
                      path + ".openai.max_queued_requests");
          break;
        }
        case v1::Backend::kSim: {
          const v1::SimBackend& sim = backend.sim();
          NonNegative(sim.time_to_first_token_seconds(),
                      path + ".sim.time_to_first_token_seconds");
          NonNegative(sim.seconds_per_token(), path + ".sim.seconds_per_token");
          NonNegative(sim.output_tokens(), path + ".sim.output_tokens");
          if (sim.dataset().empty()) {
            Error(path + ".sim.dataset", "must name the question set");
          }
          for (int m = 0; m < sim.models_size(); ++m) {
            std::string model_path = absl::StrCat(path, ".sim.models[", m, "]");
            if (sim.models(m).name().empty()) {
              Error(model_path + ".name", "must not be empty");
            }
            Probability(sim.models(m).accuracy(), model_path + ".accuracy");
            for (const auto& [task, accuracy] : sim.models(m).task_accuracy()) {
              Probability(accuracy,
                          absl::StrCat(model_path, ".task_accuracy.", task));
            }
          }
          break;
        }
        case v1::Backend::KIND_NOT_SET:
          Error(path, "set one of: openai, sim");
          break;
      }
    }
  }

  void CheckTasks() {
    if (config_.tasks().empty()) Error("tasks", "at least one is needed");
    for (int i = 0; i < config_.tasks_size(); ++i) {
      const std::string& task = config_.tasks(i);
      std::string path = absl::StrCat("tasks[", i, "]");
      if (!IsLabelSafe(task)) {
        Error(path,
              "must be 1-64 characters of letters, digits, '_', '-' or '.'");
      } else if (!tasks_.insert(task).second) {
        Error(path, "duplicate task \"", task, "\"");
      }
    }
    if (!config_.default_task().empty() &&
        !tasks_.contains(config_.default_task())) {
      Error("default_task", "unknown task \"", config_.default_task(), "\"");
    }
  }

  void CheckRoutes() {
    if (config_.routes().empty()) Error("routes", "at least one is needed");
    for (int i = 0; i < config_.routes_size(); ++i) {
      const v1::Route& route = config_.routes(i);
      std::string path = absl::StrCat("routes[", i, "]");
      if (!IsLabelSafe(route.name())) {
        Error(path + ".name",
              "must be 1-64 characters of letters, digits, '_', '-' or '.'");
      } else if (!routes_.insert(route.name()).second) {
        Error(path + ".name", "duplicate route \"", route.name(), "\"");
      }
      const std::string& kind = route.kind();
      if (kind != "prompted" && kind != "fine_tuned" && kind != "rag") {
        Error(path + ".kind", "must be prompted, fine_tuned or rag, got \"",
              kind, "\"");
      }
      if (!backends_.contains(route.backend())) {
        Error(path + ".backend", "unknown backend \"", route.backend(), "\"");
      }
      if (route.model().empty()) Error(path + ".model", "must not be empty");
      if (kind == "fine_tuned" && !route.examples().empty()) {
        Error(path + ".examples",
              "a fine_tuned route sends the bare request; remove the examples");
      }
      for (int e = 0; e < route.examples_size(); ++e) {
        const v1::Example& example = route.examples(e);
        if (example.user().empty() || example.assistant().empty()) {
          Error(absl::StrCat(path, ".examples[", e, "]"),
                "needs both user and assistant");
        }
      }
      if (kind == "rag") {
        if (config_.retrieval().corpus_dir().empty()) {
          Error(path + ".kind", "a rag route needs retrieval.corpus_dir");
        }
        if (route.rag().top_k() < 0 || route.rag().top_k() > 100) {
          Error(path + ".rag.top_k", "must be in [1, 100]");
        }
        NonNegative(route.rag().max_context_tokens(),
                    path + ".rag.max_context_tokens");
      } else if (route.has_rag()) {
        Error(path + ".rag", "only rag routes retrieve context");
      }
      const v1::Pricing& pricing = route.pricing();
      NonNegative(pricing.input_usd_per_mtok(),
                  path + ".pricing.input_usd_per_mtok");
      NonNegative(pricing.output_usd_per_mtok(),
                  path + ".pricing.output_usd_per_mtok");
      NonNegative(pricing.request_usd(), path + ".pricing.request_usd");
      NonNegative(pricing.retrieval_usd_per_query(),
                  path + ".pricing.retrieval_usd_per_query");
      NonNegative(pricing.embedding_usd_per_ktok(),
                  path + ".pricing.embedding_usd_per_ktok");
      NonNegative(pricing.hosting_usd_per_hour(),
                  path + ".pricing.hosting_usd_per_hour");
      if (route.max_output_tokens() < 0) {
        Error(path + ".max_output_tokens", "must be >= 0");
      }
    }
  }

  // After CheckRoutes: a baseline may be any route, listed before or after.
  void CheckTraining() {
    for (int i = 0; i < config_.routes_size(); ++i) {
      const v1::Route& route = config_.routes(i);
      if (!route.has_training()) continue;
      const v1::Training& training = route.training();
      const std::string path = absl::StrCat("routes[", i, "].training");
      if (route.kind() != "fine_tuned") {
        Error(path, "only fine_tuned routes have a training cost");
      }
      NonNegative(training.cost_usd(), path + ".cost_usd");
      if (training.baseline_route().empty()) {
        Error(path + ".baseline_route",
              "a fine-tuned route needs the route it replaces, to measure "
              "savings and break-even against");
      } else if (!routes_.contains(training.baseline_route())) {
        Error(path + ".baseline_route", "unknown route \"",
              training.baseline_route(), "\"");
      } else if (training.baseline_route() == route.name()) {
        Error(path + ".baseline_route", "a route cannot be its own baseline");
      }
      absl::Time date;
      std::string error;
      if (training.date().empty()) {
        Error(path + ".date", "required (YYYY-MM-DD)");
      } else if (!absl::ParseTime("%Y-%m-%d", training.date(), &date, &error)) {
        Error(path + ".date", "must be YYYY-MM-DD, got \"", training.date(),
              "\"");
      } else if (date > absl::Now()) {
        Error(path + ".date", training.date(), " is in the future");
      }
      if (training.amortization_days() < 0) {
        Error(path + ".amortization_days", "must be >= 1");
      }
    }
  }

  void CheckPolicy(const v1::Policy& policy, const std::string& path) {
    switch (policy.strategy_case()) {
      case v1::Policy::kPinned:
        if (!routes_.contains(policy.pinned().route())) {
          Error(path + ".pinned.route", "unknown route \"",
                policy.pinned().route(), "\"");
        }
        break;
      case v1::Policy::kWeighted: {
        double total = 0;
        for (const auto& [route, weight] : policy.weighted().weights()) {
          std::string weight_path =
              absl::StrCat(path, ".weighted.weights.", route);
          if (!routes_.contains(route)) {
            Error(weight_path, "unknown route \"", route, "\"");
          }
          NonNegative(weight, weight_path);
          if (weight > 0) total += weight;
        }
        if (!(total > 0)) {
          Error(path + ".weighted.weights", "need a positive weight");
        }
        break;
      }
      case v1::Policy::kCheapestMeetingAccuracy: {
        const auto& cheapest = policy.cheapest_meeting_accuracy();
        std::string sub = path + ".cheapest_meeting_accuracy";
        Probability(cheapest.accuracy_floor(), sub + ".accuracy_floor");
        NonNegative(cheapest.min_feedback(), sub + ".min_feedback");
        if (cheapest.has_explore_share()) {
          Probability(cheapest.explore_share(), sub + ".explore_share");
        }
        if (cheapest.has_confidence()) {
          Probability(cheapest.confidence(), sub + ".confidence");
        }
        break;
      }
      case v1::Policy::kBestUtility: {
        const auto& best = policy.best_utility();
        std::string sub = path + ".best_utility";
        NonNegative(best.cost_weight(), sub + ".cost_weight");
        NonNegative(best.latency_weight(), sub + ".latency_weight");
        NonNegative(best.min_feedback(), sub + ".min_feedback");
        if (best.has_explore_share()) {
          Probability(best.explore_share(), sub + ".explore_share");
        }
        break;
      }
      case v1::Policy::kThompson:
        NonNegative(policy.thompson().cost_weight(),
                    path + ".thompson.cost_weight");
        NonNegative(policy.thompson().latency_weight(),
                    path + ".thompson.latency_weight");
        break;
      case v1::Policy::kBudget: {
        const auto& budget = policy.budget();
        std::string sub = path + ".budget";
        if (!(budget.target_cost_usd() > 0)) {
          Error(sub + ".target_cost_usd", "must be > 0");
        }
        if (budget.has_learning_rate() && !(budget.learning_rate() > 0)) {
          Error(sub + ".learning_rate", "must be > 0");
        }
        NonNegative(budget.initial_cost_weight(), sub + ".initial_cost_weight");
        NonNegative(budget.min_feedback(), sub + ".min_feedback");
        if (budget.has_explore_share()) {
          Probability(budget.explore_share(), sub + ".explore_share");
        }
        break;
      }
      case v1::Policy::kContextual: {
        const auto& contextual = policy.contextual();
        std::string sub = path + ".contextual";
        NonNegative(contextual.k(), sub + ".k");
        NonNegative(contextual.cost_weight(), sub + ".cost_weight");
        NonNegative(contextual.latency_weight(), sub + ".latency_weight");
        NonNegative(contextual.memory_size(), sub + ".memory_size");
        NonNegative(contextual.min_feedback(), sub + ".min_feedback");
        if (contextual.has_prior_weight()) {
          NonNegative(contextual.prior_weight(), sub + ".prior_weight");
        }
        if (contextual.has_explore_share()) {
          Probability(contextual.explore_share(), sub + ".explore_share");
        }
        break;
      }
      case v1::Policy::STRATEGY_NOT_SET:
        Error(path,
              "set one of: pinned, weighted, cheapest_meeting_accuracy, "
              "best_utility, thompson, budget, contextual");
        break;
    }
  }

  void CheckExperiments() {
    std::set<std::string> names;
    for (int i = 0; i < config_.experiments_size(); ++i) {
      const v1::Experiment& experiment = config_.experiments(i);
      std::string path = absl::StrCat("experiments[", i, "]");
      if (!IsLabelSafe(experiment.name())) {
        Error(path + ".name",
              "must be 1-64 characters of letters, digits, '_', '-' or '.'");
      } else if (!names.insert(experiment.name()).second) {
        Error(path + ".name", "duplicate experiment \"", experiment.name(),
              "\"");
      }
      if (!experiment.unit().empty() && experiment.unit() != "unit" &&
          experiment.unit() != "request") {
        Error(path + ".unit", "must be unit or request, got \"",
              experiment.unit(), "\"");
      }
      if (experiment.arms_size() < 2) {
        Error(path + ".arms", "an experiment needs at least two arms");
      }
      std::set<std::string> arms;
      double total = 0;
      for (int a = 0; a < experiment.arms_size(); ++a) {
        const v1::ExperimentArm& arm = experiment.arms(a);
        std::string arm_path = absl::StrCat(path, ".arms[", a, "]");
        if (!IsLabelSafe(arm.name())) {
          Error(arm_path + ".name",
                "must be 1-64 characters of letters, digits, '_', '-' or '.'");
        } else if (!arms.insert(arm.name()).second) {
          Error(arm_path + ".name", "duplicate arm \"", arm.name(), "\"");
        }
        if (!(arm.weight() > 0)) Error(arm_path + ".weight", "must be > 0");
        total += arm.weight();
        switch (arm.target_case()) {
          case v1::ExperimentArm::kRoute:
            if (!routes_.contains(arm.route())) {
              Error(arm_path + ".route", "unknown route \"", arm.route(), "\"");
            }
            break;
          case v1::ExperimentArm::kPolicy:
            CheckPolicy(arm.policy(), arm_path + ".policy");
            break;
          case v1::ExperimentArm::TARGET_NOT_SET:
            Error(arm_path, "set one of: route, policy");
            break;
        }
      }
      if (!experiment.control().empty() &&
          !arms.contains(experiment.control())) {
        Error(path + ".control", "unknown arm \"", experiment.control(), "\"");
      }
      for (int t = 0; t < experiment.tasks_size(); ++t) {
        if (!tasks_.contains(experiment.tasks(t))) {
          Error(absl::StrCat(path, ".tasks[", t, "]"), "unknown task \"",
                experiment.tasks(t), "\"");
        }
      }
      const v1::Guardrails& guard = experiment.guardrails();
      NonNegative(guard.max_latency_p95_seconds(),
                  path + ".guardrails.max_latency_p95_seconds");
      NonNegative(guard.max_error_rate(), path + ".guardrails.max_error_rate");
      NonNegative(guard.max_cost_per_request_usd(),
                  path + ".guardrails.max_cost_per_request_usd");
      if (experiment.has_alpha() &&
          !(experiment.alpha() > 0 && experiment.alpha() < 1)) {
        Error(path + ".alpha", "must be in (0, 1)");
      }
    }
  }

  void ValidateIndex(const v1::IndexSettings& index, const std::string& path) {
    if (!index.kind().empty()) {
      if (auto kind = retrieval::ParseIndexKind(index.kind()); !kind.ok()) {
        Error(path + ".kind", kind.status().message());
      }
    }
    if (index.hnsw_m() < 0 || index.hnsw_m() == 1 || index.hnsw_m() > 256) {
      Error(path + ".hnsw_m", "must be in [2, 256]");
    }
    for (auto [value, field] :
         {std::pair{index.hnsw_ef_construction(), "hnsw_ef_construction"},
          std::pair{index.hnsw_ef_search(), "hnsw_ef_search"},
          std::pair{index.ivf_nlist(), "ivf_nlist"},
          std::pair{index.ivf_nprobe(), "ivf_nprobe"},
          std::pair{index.pq_m(), "pq_m"}}) {
      if (value < 0) Error(absl::StrCat(path, ".", field), "must be >= 0");
    }
    if (index.has_pq_refine_factor() &&
        (index.pq_refine_factor() < 0 || index.pq_refine_factor() > 100)) {
      Error(path + ".pq_refine_factor",
            "must be in [0, 100] (0 or 1: no re-ranking)");
    }
    if (index.auto_exact_below() < 0) {
      Error(path + ".auto_exact_below", "must be >= 0");
    }
    if (index.auto_memory_budget_mb() < 0) {
      Error(path + ".auto_memory_budget_mb", "must be >= 0");
    }
    if (index.rebuild_tombstone_share() < 0 ||
        index.rebuild_tombstone_share() > 1) {
      Error(path + ".rebuild_tombstone_share", "must be in [0, 1]");
    }
    if (index.snapshot_every_changes() < 0) {
      Error(path + ".snapshot_every_changes", "must be >= 0");
    }
  }

  void CheckRetrieval() {
    const v1::RetrievalSettings& retrieval = config_.retrieval();
    if (retrieval.keyword_match_budget() < 0) {
      Error("retrieval.keyword_match_budget", "must be >= 0 (0: no budget)");
    }
    if (retrieval.chunk_tokens() < 0) {
      Error("retrieval.chunk_tokens", "must be >= 0");
    }
    if (retrieval.chunk_overlap_tokens() < 0) {
      Error("retrieval.chunk_overlap_tokens", "must be >= 0");
    }
    if (retrieval.chunk_tokens() > 0 &&
        retrieval.chunk_overlap_tokens() >= retrieval.chunk_tokens()) {
      Error("retrieval.chunk_overlap_tokens",
            "must be smaller than chunk_tokens");
    }
    if (!retrieval.search().empty() && retrieval.search() != "hybrid" &&
        retrieval.search() != "keyword" && retrieval.search() != "vector") {
      Error("retrieval.search", "must be hybrid, keyword or vector, got \"",
            retrieval.search(), "\"");
    }
    ValidateIndex(retrieval.index(), "retrieval.index");
    for (const auto& [name, index] : retrieval.collection_index()) {
      ValidateIndex(index,
                    absl::StrCat("retrieval.collection_index[\"", name, "\"]"));
    }
    const v1::EmbeddingServer& server = retrieval.embedding_server();
    if (!server.url().empty() && !absl::StartsWith(server.url(), "http://") &&
        !absl::StartsWith(server.url(), "https://")) {
      Error("retrieval.embedding_server.url",
            "must start with http:// or https://, got \"", server.url(), "\"");
    }
    if (!server.url().empty() && server.model().empty()) {
      Error("retrieval.embedding_server.model", "is required with a url");
    }
    if (server.batch_size() < 0 || server.batch_size() > 2048) {
      Error("retrieval.embedding_server.batch_size", "must be in [1, 2048]");
    }
    if (server.timeout_ms() < 0) {
      Error("retrieval.embedding_server.timeout_ms", "must be >= 0");
    }
    if (server.max_retries() < 0 || server.max_retries() > 10) {
      Error("retrieval.embedding_server.max_retries", "must be in [0, 10]");
    }
    if (retrieval.embedding_dim() != 0 &&
        (retrieval.embedding_dim() < 16 || retrieval.embedding_dim() > 8192)) {
      Error("retrieval.embedding_dim", "must be in [16, 8192]");
    }
  }

  const v1::Config& config_;
  std::set<std::string> backends_;
  std::set<std::string> routes_;
  std::set<std::string> tasks_;
  std::vector<std::string> errors_;
};

}  // namespace

absl::StatusOr<v1::Config> ParseConfigYaml(absl::string_view yaml) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("YAML syntax error at line ", e.mark.line + 1, ", column ",
                     e.mark.column + 1, ": ", e.msg));
  }
  if (!root.IsMap()) {
    return absl::InvalidArgumentError("the config must be a YAML mapping");
  }
  auto as_json = YamlToJson(root);
  if (!as_json.ok()) return as_json.status();
  v1::Config config;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(as_json->dump(),
                                                            &config, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(std::string(status.message()));
  }
  return config;
}

std::vector<std::string> ValidateConfig(const v1::Config& config) {
  return Validator(config).Run();
}

void ApplyConfigDefaults(v1::Config& config) {
  v1::Server& server = *config.mutable_server();
  if (server.grpc_listen().empty()) server.set_grpc_listen("127.0.0.1:50051");
  if (server.metrics_listen().empty()) {
    server.set_metrics_listen("127.0.0.1:9464");
  }
  if (server.max_request_bytes() == 0) server.set_max_request_bytes(1 << 20);
  if (server.decision_log_capacity() == 0) {
    server.set_decision_log_capacity(1'000'000);
  }
  if (config.default_task().empty() && !config.tasks().empty()) {
    config.set_default_task(config.tasks(0));
  }
  for (v1::Backend& backend : *config.mutable_backends()) {
    if (backend.has_openai()) {
      v1::OpenAIBackend& openai = *backend.mutable_openai();
      if (openai.timeout_seconds() == 0) openai.set_timeout_seconds(30);
      if (openai.max_connections() == 0) openai.set_max_connections(64);
      if (!openai.has_max_response_bytes()) {
        openai.set_max_response_bytes(OpenAIBackend::kDefaultMaxResponseBytes);
      }
      if (!openai.has_max_queued_requests()) {
        openai.set_max_queued_requests(
            OpenAIBackend::kDefaultMaxQueuedRequests);
      }
    }
  }
  for (v1::Route& route : *config.mutable_routes()) {
    if (route.max_output_tokens() == 0) route.set_max_output_tokens(256);
    if (route.kind() == "rag") {
      v1::RagSettings& rag = *route.mutable_rag();
      if (rag.top_k() == 0) rag.set_top_k(4);
      if (rag.max_context_tokens() == 0) rag.set_max_context_tokens(1024);
    }
  }
  v1::RetrievalSettings& retrieval = *config.mutable_retrieval();
  if (retrieval.chunk_tokens() == 0) retrieval.set_chunk_tokens(200);
  if (retrieval.chunk_overlap_tokens() == 0) {
    retrieval.set_chunk_overlap_tokens(
        std::min(40, retrieval.chunk_tokens() / 4));
  }
  if (retrieval.embedding_dim() == 0) retrieval.set_embedding_dim(512);
  if (retrieval.search().empty()) retrieval.set_search("hybrid");
  for (v1::Route& route : *config.mutable_routes()) {
    if (route.has_training() && route.training().amortization_days() == 0) {
      route.mutable_training()->set_amortization_days(365);
    }
  }
  if (config.economics().window_minutes() == 0) {
    config.mutable_economics()->set_window_minutes(60);
  }
  if (retrieval.snapshot_dir().empty() && !retrieval.store_path().empty()) {
    retrieval.set_snapshot_dir(retrieval.store_path() + ".index");
  }
}

absl::StatusOr<LoadedConfig> LoadConfigText(
    absl::string_view yaml, std::string origin,
    std::shared_ptr<const FileSource> files) {
  auto config = ParseConfigYaml(yaml);
  if (!config.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": ", config.status().message()));
  }
  std::vector<std::string> errors = ValidateConfig(*config);
  if (!errors.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, " is invalid (", errors.size(),
                     errors.size() == 1 ? " error" : " errors", "):\n  ",
                     absl::StrJoin(errors, "\n  ")));
  }
  ApplyConfigDefaults(*config);
  return LoadedConfig{*std::move(config), std::move(origin), std::move(files)};
}

absl::StatusOr<LoadedConfig> LoadConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read config \"", path, "\""));
  }
  std::ostringstream text;
  text << in.rdbuf();
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  return LoadConfigText(text.str(), path,
                        MakeDiskFileSource(dir.empty() ? "." : dir.string()));
}

absl::StatusOr<LoadedConfig> LoadEmbeddedConfig() {
  std::shared_ptr<const FileSource> files = MakeEmbeddedFileSource();
  auto text = files->Read(kEmbeddedConfigPath);
  if (!text.ok()) return text.status();
  return LoadConfigText(*text, "embedded quickstart config", std::move(files));
}

}  // namespace arbiter
