#include "gateway/config.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbiter {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr char kValid[] = R"yaml(
tasks: [faq, billing]
backends:
  - name: sim
    sim: {dataset: q.jsonl, output_tokens: 10}
  - name: vllm
    openai: {base_url: "http://127.0.0.1:8000/v1"}
routes:
  - name: prompted
    kind: prompted
    backend: sim
    model: big
    examples: [{user: "q?", assistant: "a."}]
    pricing: {input_usd_per_mtok: 3, output_usd_per_mtok: 15}
  - name: tuned
    kind: fine_tuned
    backend: vllm
    model: small
  - name: rag
    kind: rag
    backend: sim
    model: big
    rag: {top_k: 3}
policy:
  cheapest_meeting_accuracy: {accuracy_floor: 0.8}
retrieval:
  corpus_dir: corpus
)yaml";

std::vector<std::string> ErrorsOf(const std::string& yaml) {
  auto config = ParseConfigYaml(yaml);
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok()) return {};
  return ValidateConfig(*config);
}

// Replaces the first occurrence of `from` in the valid config.
std::string ValidWith(const std::string& from, const std::string& to) {
  std::string yaml = kValid;
  size_t at = yaml.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return yaml.replace(at, from.size(), to);
}

TEST(ConfigTest, ValidConfigHasNoErrors) {
  EXPECT_THAT(ErrorsOf(kValid), IsEmpty());
}

TEST(ConfigTest, ParsesYamlIntoTheProto) {
  auto config = ParseConfigYaml(kValid);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->routes_size(), 3);
  EXPECT_EQ(config->routes(0).pricing().output_usd_per_mtok(), 15);
  EXPECT_EQ(config->routes(0).examples(0).assistant(), "a.");
  EXPECT_EQ(config->backends(1).openai().base_url(),
            "http://127.0.0.1:8000/v1");
  EXPECT_DOUBLE_EQ(
      config->policy().cheapest_meeting_accuracy().accuracy_floor(), 0.8);
}

TEST(ConfigTest, DefaultsFillUnsetFields) {
  auto config = ParseConfigYaml(kValid);
  ASSERT_TRUE(config.ok());
  ApplyConfigDefaults(*config);
  EXPECT_EQ(config->server().grpc_listen(), "127.0.0.1:50051");
  EXPECT_EQ(config->server().metrics_listen(), "127.0.0.1:9464");
  EXPECT_EQ(config->default_task(), "faq");
  EXPECT_EQ(config->routes(1).max_output_tokens(), 256);
  EXPECT_EQ(config->routes(2).rag().top_k(), 3);
  EXPECT_EQ(config->routes(2).rag().max_context_tokens(), 1024);
  EXPECT_EQ(config->backends(1).openai().timeout_seconds(), 30);
  EXPECT_EQ(config->retrieval().chunk_tokens(), 200);
}

TEST(ConfigTest, UnknownBackendIsNamedWithItsPath) {
  EXPECT_THAT(ErrorsOf(ValidWith("backend: vllm", "backend: vlm")),
              Contains("routes[1].backend: unknown backend \"vlm\""));
}

TEST(ConfigTest, NegativePriceIsRejected) {
  EXPECT_THAT(
      ErrorsOf(ValidWith("input_usd_per_mtok: 3", "input_usd_per_mtok: -1")),
      Contains("routes[0].pricing.input_usd_per_mtok: must be >= 0"));
}

TEST(ConfigTest, BadKindIsRejected) {
  EXPECT_THAT(ErrorsOf(ValidWith("kind: fine_tuned", "kind: finetuned")),
              Contains("routes[1].kind: must be prompted, fine_tuned or rag, "
                       "got \"finetuned\""));
}

TEST(ConfigTest, DuplicateRouteIsRejected) {
  EXPECT_THAT(ErrorsOf(ValidWith("name: tuned", "name: prompted")),
              Contains("routes[1].name: duplicate route \"prompted\""));
}

TEST(ConfigTest, FineTunedRouteWithExamplesIsRejected) {
  EXPECT_THAT(
      ErrorsOf(
          ValidWith("model: small",
                    "model: small\n    examples: [{user: a, assistant: b}]")),
      Contains("routes[1].examples: a fine_tuned route sends the bare request; "
               "remove the examples"));
}

TEST(ConfigTest, RagRouteNeedsACorpus) {
  EXPECT_THAT(
      ErrorsOf(ValidWith("corpus_dir: corpus", "chunk_tokens: 100")),
      Contains("routes[2].kind: a rag route needs retrieval.corpus_dir"));
}

TEST(ConfigTest, PolicyMustNameKnownRoutes) {
  EXPECT_THAT(
      ErrorsOf(ValidWith("cheapest_meeting_accuracy: {accuracy_floor: 0.8}",
                         "pinned: {route: nope}")),
      Contains("policy.pinned.route: unknown route \"nope\""));
  EXPECT_THAT(
      ErrorsOf(ValidWith("cheapest_meeting_accuracy: {accuracy_floor: 0.8}",
                         "weighted: {weights: {rag: 0}}")),
      Contains("policy.weighted.weights: need a positive weight"));
}

TEST(ConfigTest, AccuracyFloorMustBeAProbability) {
  EXPECT_THAT(ErrorsOf(ValidWith("accuracy_floor: 0.8", "accuracy_floor: 1.5")),
              Contains("policy.cheapest_meeting_accuracy.accuracy_floor: must "
                       "be in [0, 1]"));
}

TEST(ConfigTest, NewStrategiesAreValidated) {
  auto with_policy = [](const std::string& policy) {
    return ValidWith("cheapest_meeting_accuracy: {accuracy_floor: 0.8}",
                     policy);
  };
  EXPECT_THAT(ErrorsOf(with_policy("budget: {target_cost_usd: 0}")),
              Contains("policy.budget.target_cost_usd: must be > 0"));
  EXPECT_THAT(ErrorsOf(with_policy("best_utility: {cost_weight: -1}")),
              Contains("policy.best_utility.cost_weight: must be >= 0"));
  EXPECT_THAT(ErrorsOf(with_policy("thompson: {latency_weight: -2}")),
              Contains("policy.thompson.latency_weight: must be >= 0"));
  EXPECT_THAT(
      ErrorsOf(with_policy("cheapest_meeting_accuracy: {confidence: 1.2}")),
      Contains(
          "policy.cheapest_meeting_accuracy.confidence: must be in [0, 1]"));
  EXPECT_THAT(ErrorsOf(with_policy("thompson: {cost_weight: 100}")), IsEmpty());
  EXPECT_THAT(
      ErrorsOf(std::string(kValid) + "statistics: {half_life_seconds: -5}\n"),
      Contains("statistics.half_life_seconds: must be >= 0"));
}

TEST(ConfigTest, ExperimentsAreValidated) {
  std::string yaml = std::string(kValid) + R"yaml(
experiments:
  - name: ab
    unit: user
    control: C
    tasks: [faq, nope]
    arms:
      - {name: A, weight: 1, route: prompted}
      - {name: A, weight: 0, route: ghost}
      - {name: B, weight: 1, policy: {budget: {target_cost_usd: 0}}}
      - {name: D, weight: 1}
)yaml";
  auto errors = ErrorsOf(yaml);
  EXPECT_THAT(
      errors,
      Contains("experiments[0].unit: must be unit or request, got \"user\""));
  EXPECT_THAT(errors,
              Contains("experiments[0].arms[1].name: duplicate arm \"A\""));
  EXPECT_THAT(errors, Contains("experiments[0].arms[1].weight: must be > 0"));
  EXPECT_THAT(
      errors,
      Contains("experiments[0].arms[1].route: unknown route \"ghost\""));
  EXPECT_THAT(
      errors,
      Contains(
          "experiments[0].arms[2].policy.budget.target_cost_usd: must be > 0"));
  EXPECT_THAT(errors,
              Contains("experiments[0].arms[3]: set one of: route, policy"));
  EXPECT_THAT(errors, Contains("experiments[0].control: unknown arm \"C\""));
  EXPECT_THAT(errors,
              Contains("experiments[0].tasks[1]: unknown task \"nope\""));
}

TEST(ConfigTest, MissingPolicyIsRejected) {
  EXPECT_THAT(
      ErrorsOf(ValidWith(
          "policy:\n  cheapest_meeting_accuracy: {accuracy_floor: 0.8}", "")),
      Contains(
          "policy: set one of: pinned, weighted, cheapest_meeting_accuracy, "
          "best_utility, thompson, budget, contextual"));
}

TEST(ConfigTest, UnknownDefaultTaskAndTaskPolicyAreRejected) {
  std::string yaml = std::string(kValid) +
                     "default_task: refunds\ntask_policies: {refunds: {pinned: "
                     "{route: rag}}}\n";
  auto errors = ErrorsOf(yaml);
  EXPECT_THAT(errors, Contains("default_task: unknown task \"refunds\""));
  EXPECT_THAT(errors,
              Contains("task_policies.refunds: unknown task \"refunds\""));
}

TEST(ConfigTest, BadBaseUrlAndListenAddressAreRejected) {
  std::string yaml = ValidWith("http://127.0.0.1:8000/v1", "127.0.0.1:8000") +
                     "server: {grpc_listen: localhost}\n";
  auto errors = ErrorsOf(yaml);
  EXPECT_THAT(errors, Contains("backends[1].openai.base_url: must start with "
                               "http:// or https://, got \"127.0.0.1:8000\""));
  EXPECT_THAT(
      errors,
      Contains("server.grpc_listen: must be host:port, got \"localhost\""));
}

TEST(ConfigTest, IndexSettingsAndEmbeddingServerAreValidated) {
  auto errors = ErrorsOf(ValidWith(
      "corpus_dir: corpus",
      "corpus_dir: corpus\n"
      "  index: {kind: annoy, hnsw_m: 1, rebuild_tombstone_share: 2,\n"
      "          pq_refine_factor: 101}\n"
      "  collection_index: {tenant-a: {kind: hnsw, ivf_nprobe: -1},\n"
      "                     tenant-b: {kind: ivf_pq, pq_refine_factor: -1},\n"
      "                     tenant-c: {kind: ivf_pq, pq_refine_factor: 0}}\n"
      "  embedding_server: {url: \"localhost:8080\", max_retries: 11}\n"
      "  keyword_match_budget: -5"));
  EXPECT_THAT(errors, Contains("retrieval.keyword_match_budget: must be >= 0 "
                               "(0: no budget)"));
  EXPECT_THAT(errors,
              Contains(HasSubstr(
                  "retrieval.index.kind: unknown index kind \"annoy\"")));
  EXPECT_THAT(errors, Contains("retrieval.index.hnsw_m: must be in [2, 256]"));
  EXPECT_THAT(errors, Contains("retrieval.index.rebuild_tombstone_share: must "
                               "be in [0, 1]"));
  EXPECT_THAT(errors, Contains("retrieval.collection_index[\"tenant-a\"]."
                               "ivf_nprobe: must be >= 0"));
  EXPECT_THAT(errors, Contains("retrieval.index.pq_refine_factor: must be in "
                               "[0, 100] (0 or 1: no re-ranking)"));
  EXPECT_THAT(errors, Contains("retrieval.collection_index[\"tenant-b\"]."
                               "pq_refine_factor: must be in [0, 100] (0 or "
                               "1: no re-ranking)"));
  // 0 turns re-ranking off: valid.
  EXPECT_THAT(errors, Not(Contains(HasSubstr("tenant-c"))));
  EXPECT_THAT(errors, Contains("retrieval.embedding_server.url: must start "
                               "with http:// or https://, got "
                               "\"localhost:8080\""));
  EXPECT_THAT(errors,
              Contains("retrieval.embedding_server.model: is required with a "
                       "url"));
  EXPECT_THAT(errors, Contains("retrieval.embedding_server.max_retries: must "
                               "be in [0, 10]"));
}

TEST(ConfigTest, SnapshotsLiveBesideAPersistentStore) {
  auto config =
      ParseConfigYaml(ValidWith("corpus_dir: corpus",
                                "corpus_dir: corpus\n"
                                "  store_path: /var/lib/arbiter/kb.db"));
  ASSERT_TRUE(config.ok());
  ApplyConfigDefaults(*config);
  EXPECT_EQ(config->retrieval().snapshot_dir(), "/var/lib/arbiter/kb.db.index");
  auto memory = ParseConfigYaml(kValid);
  ASSERT_TRUE(memory.ok());
  ApplyConfigDefaults(*memory);
  EXPECT_EQ(memory->retrieval().snapshot_dir(), "");
}

TEST(ConfigTest, TrainingNeedsABaselineRouteAndAPastDate) {
  auto errors = ErrorsOf(ValidWith(
      "    model: small\n",
      "    model: small\n"
      "    pricing: {hosting_usd_per_hour: -2, embedding_usd_per_ktok: -1}\n"
      "    training: {cost_usd: -5, date: \"2999-01-01\"}\n"));
  EXPECT_THAT(errors, Contains("routes[1].pricing.hosting_usd_per_hour: must "
                               "be >= 0"));
  EXPECT_THAT(errors, Contains("routes[1].pricing.embedding_usd_per_ktok: "
                               "must be >= 0"));
  EXPECT_THAT(errors, Contains("routes[1].training.cost_usd: must be >= 0"));
  EXPECT_THAT(errors, Contains(HasSubstr("routes[1].training.baseline_route: "
                                         "a fine-tuned route needs the route "
                                         "it replaces")));
  EXPECT_THAT(errors,
              Contains("routes[1].training.date: 2999-01-01 is in the future"));

  EXPECT_THAT(
      ErrorsOf(ValidWith("    model: small\n",
                         "    model: small\n    training: {cost_usd: 5, "
                         "date: \"2026-13-01\", baseline_route: ghost}\n")),
      ::testing::AllOf(
          Contains("routes[1].training.baseline_route: unknown route "
                   "\"ghost\""),
          Contains("routes[1].training.date: must be YYYY-MM-DD, got "
                   "\"2026-13-01\"")));
  EXPECT_THAT(
      ErrorsOf(ValidWith("    model: small\n",
                         "    model: small\n    training: {cost_usd: 5, "
                         "date: \"2026-01-01\", baseline_route: tuned}\n")),
      Contains("routes[1].training.baseline_route: a route cannot be its own "
               "baseline"));
  // Only fine-tuned routes are trained; a good one passes.
  EXPECT_THAT(
      ErrorsOf(ValidWith("    model: big\n",
                         "    model: big\n    training: {cost_usd: 5, date: "
                         "\"2026-01-01\", baseline_route: tuned}\n")),
      Contains("routes[0].training: only fine_tuned routes have a training "
               "cost"));
  EXPECT_THAT(
      ErrorsOf(ValidWith("    model: small\n",
                         "    model: small\n    training: {cost_usd: 5, "
                         "date: \"2026-01-01\", baseline_route: prompted}\n")),
      IsEmpty());
}

TEST(ConfigTest, EconomicsSettingsAreValidated) {
  EXPECT_THAT(ErrorsOf(std::string(kValid) +
                       "economics: {window_minutes: -1, budget_usd_per_day: "
                       "-3}\n"),
              ::testing::AllOf(
                  Contains("economics.window_minutes: must be in [1, 10080]"),
                  Contains("economics.budget_usd_per_day: must be >= 0")));
}

TEST(ConfigTest, SimAccuracyMustBeAProbability) {
  EXPECT_THAT(
      ErrorsOf(
          ValidWith("output_tokens: 10",
                    "output_tokens: 10, models: [{name: m, accuracy: 2}]")),
      Contains("backends[0].sim.models[0].accuracy: must be in [0, 1]"));
}

TEST(ConfigTest, UnknownFieldIsAParseErrorNamingIt) {
  auto config = ParseConfigYaml(ValidWith("model: big", "modle: big"));
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(), HasSubstr("modle"));
}

TEST(ConfigTest, YamlSyntaxErrorNamesTheLine) {
  auto config = ParseConfigYaml("tasks: [faq\nroutes: {");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr("line"));
}

TEST(ConfigTest, EveryErrorIsReportedAtOnce) {
  auto loaded = LoadConfigText(
      ValidWith("backend: vllm", "backend: vlm") + "default_task: nope\n",
      "test.yaml", nullptr);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(),
              HasSubstr("test.yaml is invalid (2 errors)"));
  EXPECT_THAT(loaded.status().message(), HasSubstr("routes[1].backend"));
  EXPECT_THAT(loaded.status().message(), HasSubstr("default_task"));
}

TEST(ConfigTest, EmbeddedQuickstartConfigIsValid) {
  auto loaded = LoadEmbeddedConfig();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->config.routes_size(), 3);
}

TEST(ConfigTest, DecisionLogIsBoundedByBytes) {
  auto defaults = ParseConfigYaml(kValid);
  ASSERT_TRUE(defaults.ok());
  ApplyConfigDefaults(*defaults);
  EXPECT_EQ(defaults->server().decision_log_max_mb(), 64);
  // Zero means no log, not the default.
  auto none = ParseConfigYaml(std::string(kValid) +
                              "server: {decision_log_max_mb: 0}\n");
  ASSERT_TRUE(none.ok());
  ApplyConfigDefaults(*none);
  EXPECT_EQ(none->server().decision_log_max_mb(), 0);
  EXPECT_THAT(
      ErrorsOf(std::string(kValid) + "server: {decision_log_max_mb: -1}\n"),
      Contains("server.decision_log_max_mb: must be in [0, 65536]"));
  EXPECT_THAT(
      ErrorsOf(std::string(kValid) +
               "server: {decision_log_capacity: 1000000}\n"),
      Contains(HasSubstr("server.decision_log_capacity: is no longer read")));
}

}  // namespace
}  // namespace arbiter
