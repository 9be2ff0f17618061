#include "gateway/config.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbiter {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::StartsWith;

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
  EXPECT_EQ(config->backends(1).openai().max_connections(), 64);
  EXPECT_EQ(config->backends(1).openai().event_threads(), 2);
  EXPECT_EQ(config->retrieval().chunk_tokens(), 200);
  EXPECT_EQ(config->retrieval().chunk_overlap_tokens(), 40);
  EXPECT_EQ(config->retrieval().embedding_dim(), 512);
  EXPECT_EQ(config->retrieval().keyword_match_budget(), 20'000);
  EXPECT_EQ(config->retrieval().index().kind(), v1::INDEX_KIND_AUTO);
  EXPECT_EQ(config->retrieval().index().hnsw_m(), 32);
  EXPECT_EQ(config->retrieval().index().pq_refine_factor(), 10);
  EXPECT_FALSE(config->retrieval().index().has_ivf_nlist());
  EXPECT_EQ(config->server().max_request_bytes(), 1 << 20);
  EXPECT_EQ(config->economics().window_minutes(), 60);
  EXPECT_EQ(config->statistics().prior_strength(), 10);
  const auto& cheapest = config->policy().cheapest_meeting_accuracy();
  EXPECT_EQ(cheapest.min_feedback(), 20);
  EXPECT_EQ(cheapest.explore_share(), 0.1);
  EXPECT_EQ(cheapest.confidence(), 0.5);
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

TEST(ConfigTest, BadKindIsAParseErrorListingTheKinds) {
  auto config =
      ParseConfigYaml(ValidWith("kind: fine_tuned", "kind: finetuned"));
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(std::string(config.status().message()),
            "line 16: routes[1].kind: unknown value \"finetuned\"; expected "
            "prompted, fine_tuned or rag");
}

TEST(ConfigTest, MissingKindIsRejected) {
  EXPECT_THAT(
      ErrorsOf(ValidWith("    kind: fine_tuned\n", "")),
      Contains("routes[1].kind: required: prompted, fine_tuned or rag"));
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
    control: C
    tasks: [faq, nope]
    arms:
      - {name: A, weight: 1, route: prompted}
      - {name: A, weight: 0, route: ghost}
      - {name: B, weight: 1, policy: {budget: {target_cost_usd: 0}}}
      - {name: D, weight: 1}
)yaml";
  auto errors = ErrorsOf(yaml);
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

TEST(ConfigTest, EventThreadsAreBetweenOneAndMaxConnections) {
  const std::string url = "base_url: \"http://127.0.0.1:8000/v1\"";
  EXPECT_THAT(ErrorsOf(ValidWith(url, url + ", max_connections: 3, "
                                            "event_threads: 3")),
              IsEmpty());
  EXPECT_THAT(ErrorsOf(ValidWith(url, url + ", max_connections: 3, "
                                            "event_threads: 4")),
              Contains("backends[1].openai.event_threads: must be in [1, 3] "
                       "(at most max_connections), got 4"));
  EXPECT_THAT(ErrorsOf(ValidWith(url, url + ", event_threads: 0")),
              Contains("backends[1].openai.event_threads: must be in [1, 64] "
                       "(at most max_connections), got 0"));
  // One connection leaves one thread by default.
  auto config = ParseConfigYaml(ValidWith(url, url + ", max_connections: 1"));
  ASSERT_TRUE(config.ok()) << config.status();
  ApplyConfigDefaults(*config);
  EXPECT_EQ(config->backends(1).openai().event_threads(), 1);
}

TEST(ConfigTest, LoadSheddingBoundsHaveDefaultsAndAreValidated) {
  auto unset = ParseConfigYaml(kValid);
  ASSERT_TRUE(unset.ok());
  ApplyConfigDefaults(*unset);
  EXPECT_EQ(unset->server().max_in_flight(), 4096);
  EXPECT_THAT(ErrorsOf(std::string(kValid) + "server: {max_in_flight: 0}\n"),
              Contains(HasSubstr("server.max_in_flight: must be >= 1")));
  const std::string url = "base_url: \"http://127.0.0.1:8000/v1\"";
  EXPECT_THAT(ErrorsOf(ValidWith(url, url + ", max_queue_wait_ms: 50")),
              IsEmpty());
  EXPECT_THAT(ErrorsOf(ValidWith(url, url + ", max_queue_wait_ms: 0")),
              Contains(HasSubstr(
                  "backends[1].openai.max_queue_wait_ms: must be >= 1")));
}

TEST(ConfigTest, RetrySettingsHaveDefaultsAndAreValidated) {
  auto unset = ParseConfigYaml(kValid);
  ASSERT_TRUE(unset.ok());
  ApplyConfigDefaults(*unset);
  EXPECT_EQ(unset->backends(0).retry().max_retries(), 0);
  EXPECT_EQ(unset->backends(0).retry().backoff_base_ms(), 25);
  EXPECT_EQ(unset->backends(0).retry().backoff_max_ms(), 1000);
  const std::string url = "base_url: \"http://127.0.0.1:8000/v1\"";
  auto with = [&](const std::string& retry) {
    return ErrorsOf(
        ValidWith("openai: {" + url + "}",
                  "openai: {" + url + "}\n    retry: {" + retry + "}"));
  };
  EXPECT_THAT(with("max_retries: 2, backoff_base_ms: 10"), IsEmpty());
  EXPECT_THAT(with("max_retries: 11"),
              Contains(HasSubstr("backends[1].retry.max_retries: must be in "
                                 "[0, 10]")));
  EXPECT_THAT(with("backoff_base_ms: 0"),
              Contains(HasSubstr("retry.backoff_base_ms: must be >= 1")));
  EXPECT_THAT(with("backoff_base_ms: 50, backoff_max_ms: 10"),
              Contains(HasSubstr("retry.backoff_max_ms: must be at least "
                                 "backoff_base_ms (50), got 10")));
}

TEST(ConfigTest, ShutdownGraceDefaultsToTenSecondsAndZeroMeansZero) {
  auto unset = ParseConfigYaml(kValid);
  ASSERT_TRUE(unset.ok());
  ApplyConfigDefaults(*unset);
  EXPECT_EQ(unset->server().shutdown_grace_seconds(), 10);
  auto zero = ParseConfigYaml(std::string(kValid) +
                              "server: {shutdown_grace_seconds: 0}\n");
  ASSERT_TRUE(zero.ok());
  ApplyConfigDefaults(*zero);
  EXPECT_EQ(zero->server().shutdown_grace_seconds(), 0);
  EXPECT_THAT(
      ErrorsOf(std::string(kValid) + "server: {shutdown_grace_seconds: -1}\n"),
      Contains("server.shutdown_grace_seconds: must be >= 0"));
}

TEST(ConfigTest, IndexSettingsAndEmbeddingServerAreValidated) {
  auto errors = ErrorsOf(ValidWith(
      "corpus_dir: corpus",
      "corpus_dir: corpus\n"
      "  index: {kind: hnsw, hnsw_m: 1, rebuild_tombstone_share: 2,\n"
      "          pq_refine_factor: 101}\n"
      "  collection_index: {tenant-a: {kind: hnsw, ivf_nprobe: -1},\n"
      "                     tenant-b: {kind: ivf_pq, pq_refine_factor: -1},\n"
      "                     tenant-c: {kind: ivf_pq, pq_refine_factor: 0}}\n"
      "  embedding_server: {url: \"localhost:8080\", max_retries: 11}\n"
      "  keyword_match_budget: -5"));
  EXPECT_THAT(errors, Contains("retrieval.keyword_match_budget: must be >= 0 "
                               "(0: no budget)"));
  EXPECT_THAT(errors, Contains("retrieval.index.hnsw_m: must be in [2, 256]"));
  EXPECT_THAT(errors, Contains("retrieval.index.rebuild_tombstone_share: must "
                               "be in [0, 1]"));
  EXPECT_THAT(errors, Contains("retrieval.collection_index[\"tenant-a\"]."
                               "ivf_nprobe: must be >= 1"));
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

// The message of a config that fails to parse, one problem per element.
std::vector<std::string> ParseErrorsOf(const std::string& yaml) {
  auto config = ParseConfigYaml(yaml);
  EXPECT_FALSE(config.ok()) << "parsed:\n" << yaml;
  if (config.ok()) return {};
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<std::string> lines;
  std::string message(config.status().message());
  for (size_t start = 0; start <= message.size();) {
    size_t end = message.find('\n', start);
    if (end == std::string::npos) end = message.size();
    lines.push_back(message.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

// Defaults applied to a valid config as the loader does.
v1::Config Loaded(const std::string& yaml) {
  auto loaded = LoadConfigText(yaml, "test.yaml", nullptr);
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  return loaded.ok() ? loaded->config : v1::Config();
}

TEST(ConfigTest, EveryParseErrorIsReportedWithItsLine) {
  std::string yaml = ValidWith("    kind: prompted\n", "    knd: prompted\n");
  yaml = yaml.replace(yaml.find("model: small"), 12, "modle: small");
  EXPECT_THAT(
      ParseErrorsOf(yaml),
      ElementsAre("line 10: routes[0].knd: unknown field (did you mean kind?)",
                  "line 18: routes[1].modle: unknown field (did you mean "
                  "model?)"));
}

TEST(ConfigTest, WrongTypesAreParseErrorsNamingWhatWasExpected) {
  auto errors = ParseErrorsOf(R"yaml(
tasks: faq
server: {max_request_bytes: lots, grpc_listen: [a]}
routes:
  - name: r
    rag: {top_k: 99999999999}
    max_output_tokens: 2.5
policy: pinned
statistics: {prior_strength: "many"}
backends: [{name: s, sim: {seed: -1}}]
)yaml");
  EXPECT_THAT(
      errors,
      ElementsAre(
          "line 2: tasks: expected a list, got \"faq\"",
          "line 3: server.max_request_bytes: expected a 32-bit integer, got "
          "\"lots\"",
          "line 3: server.grpc_listen: expected text, got a list",
          "line 6: routes[0].rag.top_k: \"99999999999\" is out of range for a "
          "32-bit integer",
          "line 7: routes[0].max_output_tokens: expected a 32-bit integer, got "
          "\"2.5\"",
          "line 8: policy: expected a mapping of \"Policy\" fields, got "
          "\"pinned\"",
          "line 9: statistics.prior_strength: expected a number, got \"many\"",
          "line 10: backends[0].sim.seed: \"-1\" is out of range for a "
          "non-negative 64-bit integer"));
}

TEST(ConfigTest, AHopelessConfigIsCountedButNotListedWhole) {
  std::string yaml;
  for (int i = 0; i < 150; ++i) absl::StrAppend(&yaml, "field", i, ": 1\n");
  auto loaded = LoadConfigText(yaml, "junk.yaml", nullptr);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(std::string(loaded.status().message()),
              AllOf(StartsWith("junk.yaml is invalid (150 errors):\n  line 1: "
                               "field0: unknown field"),
                    HasSubstr("line 100: field99: unknown field"),
                    Not(HasSubstr("field100")), HasSubstr("... and 50 more")));
}

TEST(ConfigTest, UnknownFieldWithoutACloseNameListsTheFields) {
  EXPECT_THAT(ParseErrorsOf("economics: {budget: 5}\n"),
              ElementsAre("line 1: economics.budget: unknown field; expected "
                          "one of window_minutes, budget_usd_per_day"));
}

TEST(ConfigTest, InfiniteAndNanNumbersAreRejected) {
  for (const char* number : {".inf", "-.inf", "+.Inf", ".nan", ".NaN", "inf",
                             "nan", "1e999", "-1e999"}) {
    SCOPED_TRACE(number);
    EXPECT_THAT(
        ParseErrorsOf(ValidWith("input_usd_per_mtok: 3",
                                absl::StrCat("input_usd_per_mtok: ", number))),
        ElementsAre(absl::StrCat("line 14: routes[0].pricing."
                                 "input_usd_per_mtok: must be a finite "
                                 "number, got \"",
                                 number, "\"")));
  }
  EXPECT_THAT(
      ParseErrorsOf(
          ValidWith("cheapest_meeting_accuracy: {accuracy_floor: 0.8}",
                    "weighted: {weights: {rag: .inf, tuned: .nan}}")),
      ElementsAre("line 25: policy.weighted.weights.rag: must be a finite "
                  "number, got \".inf\"",
                  "line 25: policy.weighted.weights.tuned: must be a finite "
                  "number, got \".nan\""));
  // Tiny and negative numbers are numbers.
  EXPECT_THAT(ErrorsOf(ValidWith("input_usd_per_mtok: 3",
                                 "input_usd_per_mtok: 1e-300")),
              IsEmpty());
}

TEST(ConfigTest, DuplicateKeysNameBothLines) {
  EXPECT_THAT(
      ParseErrorsOf(std::string(kValid) +
                    "policy:\n  pinned: {route: rag}\n"
                    "retrieval: {corpus_dir: other}\n"
                    "task_policies: {faq: {pinned: {route: rag}},\n"
                    "                faq: {pinned: {route: tuned}}}\n"),
      ElementsAre("line 28: policy: duplicate key (first at line 24)",
                  "line 30: retrieval: duplicate key (first at line 26)",
                  "line 32: task_policies.faq: duplicate key (first at line "
                  "31)"));
}

TEST(ConfigTest, TwoMembersOfAOneofAreRejected) {
  EXPECT_THAT(
      ParseErrorsOf(ValidWith("sim: {dataset: q.jsonl, output_tokens: 10}",
                              "sim: {dataset: q.jsonl}\n"
                              "    openai: {base_url: \"http://x\"}")),
      ElementsAre("line 6: backends[0].openai: only one of openai, sim may be "
                  "set; sim is set at line 5"));
}

TEST(ConfigTest, InvalidUtf8NamesTheLineAndTheByte) {
  EXPECT_THAT(
      ParseErrorsOf("tasks: [faq]\nbackends:\n  - name: caf\xe9\n"),
      ElementsAre("line 3: invalid UTF-8 at byte 36 of the file (byte 14 of "
                  "the line); a config must be UTF-8 text"));
  auto loaded =
      LoadConfigText("default_task: \xff\xfe\n", "latin1.yaml", nullptr);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(),
              HasSubstr("latin1.yaml is invalid (1 error):\n  line 1: invalid "
                        "UTF-8 at byte 14"));
}

TEST(ConfigTest, UnsetApiKeyVariableIsRejectedNamingIt) {
  unsetenv("ARBITER_TEST_UNSET_KEY");
  setenv("ARBITER_TEST_EMPTY_KEY", "", 1);
  setenv("ARBITER_TEST_KEY", "sk-test", 1);
  auto errors = ErrorsOf(
      ValidWith("openai: {base_url: \"http://127.0.0.1:8000/v1\"}",
                "openai: {base_url: \"http://127.0.0.1:8000/v1\", "
                "api_key_env: ARBITER_TEST_UNSET_KEY}") +
      "  embedding_server: {url: \"http://127.0.0.1:8080/v1\", model: e, "
      "api_key_env: ARBITER_TEST_EMPTY_KEY}\n");
  EXPECT_THAT(errors,
              AllOf(Contains("backends[1].openai.api_key_env: environment "
                             "variable ARBITER_TEST_UNSET_KEY is not set"),
                    Contains("retrieval.embedding_server.api_key_env: "
                             "environment variable ARBITER_TEST_EMPTY_KEY is "
                             "empty")));
  EXPECT_THAT(
      ErrorsOf(ValidWith("openai: {base_url: \"http://127.0.0.1:8000/v1\"}",
                         "openai: {base_url: \"http://127.0.0.1:8000/v1\", "
                         "api_key_env: ARBITER_TEST_KEY}")),
      IsEmpty());
}

TEST(ConfigTest, MaxRequestBytesIsBoundedByWhatGrpcTakes) {
  auto with = [](const std::string& bytes) {
    return ErrorsOf(std::string(kValid) +
                    "server: {max_request_bytes: " + bytes + "}\n");
  };
  const std::string message =
      "server.max_request_bytes: must be in [1, 67108864] (64 MiB)";
  EXPECT_THAT(with("67108864"), IsEmpty());
  EXPECT_THAT(with("67108865"), Contains(message));
  EXPECT_THAT(with("1500000000"), Contains(message));
  EXPECT_THAT(with("0"), Contains(message));
}

TEST(ConfigTest, ClosedSetsAreEnumsSpeltInLowerCase) {
  v1::Config config = Loaded(
      ValidWith(
          "corpus_dir: corpus",
          "corpus_dir: corpus\n  search: keyword\n  index: {kind: ivf_pq}\n"
          "  collection_index: {a: {kind: flat}, b: {}}") +
      R"yaml(
experiments:
  - name: ab
    unit: request
    arms: [{name: A, weight: 1, route: rag}, {name: B, weight: 1, route: tuned}]
  - name: cd
    arms: [{name: C, weight: 1, route: rag}, {name: D, weight: 1, route: tuned}]
)yaml");
  EXPECT_EQ(config.routes(0).kind(), v1::ROUTE_KIND_PROMPTED);
  EXPECT_EQ(config.routes(1).kind(), v1::ROUTE_KIND_FINE_TUNED);
  EXPECT_EQ(config.routes(2).kind(), v1::ROUTE_KIND_RAG);
  EXPECT_EQ(config.retrieval().search(), v1::SEARCH_MODE_KEYWORD);
  EXPECT_EQ(config.retrieval().index().kind(), v1::INDEX_KIND_IVF_PQ);
  EXPECT_EQ(config.retrieval().collection_index().at("a").kind(),
            v1::INDEX_KIND_FLAT);
  EXPECT_EQ(config.retrieval().collection_index().at("b").kind(),
            v1::INDEX_KIND_AUTO);
  EXPECT_EQ(config.experiments(0).unit(), v1::EXPERIMENT_UNIT_REQUEST);
  EXPECT_EQ(config.experiments(1).unit(), v1::EXPERIMENT_UNIT_UNIT);
  EXPECT_EQ(Loaded(kValid).retrieval().search(), v1::SEARCH_MODE_HYBRID);
  // The proto's own spelling is not the config's.
  EXPECT_THAT(ParseErrorsOf(ValidWith("kind: rag", "kind: ROUTE_KIND_RAG")),
              ElementsAre(HasSubstr("unknown value \"ROUTE_KIND_RAG\"")));
}

TEST(ConfigTest, MisspeltEnumValuesListTheAllowedOnes) {
  EXPECT_THAT(
      ParseErrorsOf(ValidWith("corpus_dir: corpus",
                              "corpus_dir: corpus\n  search: fuzzy\n"
                              "  index: {kind: annoy}") +
                    "experiments: [{name: x, unit: user}]\n"),
      ElementsAre("line 28: retrieval.search: unknown value \"fuzzy\"; "
                  "expected hybrid, keyword or vector",
                  "line 29: retrieval.index.kind: unknown value \"annoy\"; "
                  "expected auto, flat, hnsw, ivf_flat or ivf_pq",
                  "line 30: experiments[0].unit: unknown value \"user\"; "
                  "expected unit or request"));
}

TEST(ConfigTest, EnumNamesRoundTrip) {
  for (const google::protobuf::EnumDescriptor* type :
       {v1::RouteKind_descriptor(), v1::SearchMode_descriptor(),
        v1::IndexKind_descriptor(), v1::ExperimentUnit_descriptor()}) {
    for (int i = 1; i < type->value_count(); ++i) {
      const std::string name = EnumValueName(*type->value(i));
      EXPECT_EQ(name, absl::AsciiStrToLower(name));
      auto number = ParseEnumValueName(*type, name);
      ASSERT_TRUE(number.ok()) << number.status();
      EXPECT_EQ(*number, type->value(i)->number());
    }
  }
  EXPECT_EQ(EnumName(v1::ROUTE_KIND_FINE_TUNED), "fine_tuned");
  EXPECT_EQ(EnumName(v1::INDEX_KIND_IVF_FLAT), "ivf_flat");
  EXPECT_EQ(EnumName(v1::EXPERIMENT_UNIT_REQUEST), "request");
  EXPECT_EQ(*ParseEnumName<v1::SearchMode>("vector"), v1::SEARCH_MODE_VECTOR);
  EXPECT_FALSE(ParseEnumName<v1::SearchMode>("unspecified").ok());
  EXPECT_EQ(EnumNames(*v1::RouteKind_descriptor()),
            "prompted, fine_tuned or rag");
}

TEST(ConfigTest, ZeroMeansZeroWhereZeroMeansSomething) {
  v1::Config config = Loaded(
      ValidWith("cheapest_meeting_accuracy: {accuracy_floor: 0.8}",
                "cheapest_meeting_accuracy: {accuracy_floor: 0.8, "
                "min_feedback: 0, explore_share: 0}") +
      "  chunk_overlap_tokens: 0\n  keyword_match_budget: 0\n"
      "  index: {auto_exact_below: 0, rebuild_tombstone_share: 0,\n"
      "          snapshot_every_changes: 0, pq_refine_factor: 0}\n"
      "  embedding_server: {url: \"http://127.0.0.1:8080/v1\", model: e,\n"
      "                     max_retries: 0}\n"
      "server: {decision_log_max_mb: 0}\n"
      "statistics: {prior_strength: 0}\n"
      "task_policies: {billing: {contextual: {min_feedback: 0, "
      "prior_weight: 0}}}\n");
  const auto& cheapest = config.policy().cheapest_meeting_accuracy();
  EXPECT_EQ(cheapest.min_feedback(), 0);
  EXPECT_EQ(cheapest.explore_share(), 0);
  const v1::RetrievalSettings& retrieval = config.retrieval();
  EXPECT_EQ(retrieval.chunk_overlap_tokens(), 0);
  EXPECT_EQ(retrieval.keyword_match_budget(), 0);
  EXPECT_EQ(retrieval.index().auto_exact_below(), 0);
  EXPECT_EQ(retrieval.index().rebuild_tombstone_share(), 0);
  EXPECT_EQ(retrieval.index().snapshot_every_changes(), 0);
  EXPECT_EQ(retrieval.index().pq_refine_factor(), 0);
  EXPECT_EQ(retrieval.embedding_server().max_retries(), 0);
  EXPECT_EQ(config.server().decision_log_max_mb(), 0);
  EXPECT_EQ(config.statistics().prior_strength(), 0);
  const auto& contextual = config.task_policies().at("billing").contextual();
  EXPECT_EQ(contextual.min_feedback(), 0);
  EXPECT_EQ(contextual.prior_weight(), 0);
}

TEST(ConfigTest, ZeroIsRejectedWhereZeroMeansNothing) {
  auto errors = ErrorsOf(
      ValidWith("    rag: {top_k: 3}\n",
                "    rag: {top_k: 0, max_context_tokens: 0}\n"
                "    max_output_tokens: 0\n")
          .replace(0, 0, "server: {max_request_bytes: 0}\n") +
      "  chunk_tokens: 0\n  embedding_dim: 0\n"
      "  index: {hnsw_m: 0, hnsw_ef_search: 0, ivf_nlist: 0, ivf_nprobe: 0}\n"
      "  embedding_server: {url: \"http://127.0.0.1:8080/v1\", model: e,\n"
      "                     batch_size: 0, timeout_ms: 0}\n"
      "economics: {window_minutes: 0}\n"
      "task_policies: {billing: {contextual: {k: 0, memory_size: 0}}}\n");
  EXPECT_THAT(
      errors,
      AllOf(Contains("server.max_request_bytes: must be in [1, 67108864] (64 "
                     "MiB)"),
            Contains("routes[2].rag.top_k: must be in [1, 100]"),
            Contains("routes[2].rag.max_context_tokens: must be >= 1"),
            Contains("routes[2].max_output_tokens: must be >= 1"),
            Contains("retrieval.chunk_tokens: must be >= 1"),
            Contains("retrieval.embedding_dim: must be in [16, 8192]"),
            Contains("retrieval.index.hnsw_m: must be in [2, 256]"),
            Contains("retrieval.index.hnsw_ef_search: must be >= 1"),
            Contains("retrieval.index.ivf_nlist: must be >= 1"),
            Contains("retrieval.index.ivf_nprobe: must be >= 1"),
            Contains("retrieval.embedding_server.batch_size: must be in [1, "
                     "2048]"),
            Contains("retrieval.embedding_server.timeout_ms: must be >= 1"),
            Contains("economics.window_minutes: must be in [1, 10080]"),
            Contains("task_policies.billing.contextual.k: must be >= 1"),
            Contains("task_policies.billing.contextual.memory_size: must be "
                     "in [1, 1000000]")));
  EXPECT_THAT(
      ErrorsOf(ValidWith("openai: {base_url: \"http://127.0.0.1:8000/v1\"}",
                         "openai: {base_url: \"http://127.0.0.1:8000/v1\", "
                         "timeout_seconds: 0, max_connections: 0}")),
      AllOf(Contains("backends[1].openai.timeout_seconds: must be > 0"),
            Contains("backends[1].openai.max_connections: must be >= 1")));
}

TEST(ConfigTest, EachMessageAgreesWithItsCheck) {
  // Each bound a message states: the value on it passes, one beyond fails
  // with that message.
  struct Bound {
    std::string field;  // Appended to the valid config's retrieval block.
    std::string inside;
    std::string outside;
    std::string message;
  };
  const std::vector<Bound> bounds = {
      {"economics: {window_minutes: X}\n", "1", "0",
       "economics.window_minutes: must be in [1, 10080]"},
      {"economics: {window_minutes: X}\n", "10080", "10081",
       "economics.window_minutes: must be in [1, 10080]"},
      {"  index: {hnsw_m: X}\n", "2", "1",
       "retrieval.index.hnsw_m: must be in [2, 256]"},
      {"  index: {hnsw_m: X}\n", "256", "257",
       "retrieval.index.hnsw_m: must be in [2, 256]"},
      {"  embedding_server: {url: \"http://e/v1\", model: e, batch_size: X}\n",
       "1", "0", "retrieval.embedding_server.batch_size: must be in [1, 2048]"},
      {"  embedding_server: {url: \"http://e/v1\", model: e, batch_size: X}\n",
       "2048", "2049",
       "retrieval.embedding_server.batch_size: must be in [1, 2048]"},
      {"  embedding_server: {url: \"http://e/v1\", model: e, max_retries: X}\n",
       "0", "-1", "retrieval.embedding_server.max_retries: must be in [0, 10]"},
      {"  embedding_dim: X\n", "16", "15",
       "retrieval.embedding_dim: must be in [16, 8192]"},
      {"  embedding_dim: X\n", "8192", "8193",
       "retrieval.embedding_dim: must be in [16, 8192]"},
      {"  chunk_tokens: 10\n  chunk_overlap_tokens: X\n", "9", "10",
       "retrieval.chunk_overlap_tokens: must be smaller than chunk_tokens"},
      {"  index: {auto_memory_budget_mb: X}\n", "1048576", "1048577",
       "retrieval.index.auto_memory_budget_mb: must be in [0, 1048576]"},
      {"  index: {rebuild_tombstone_share: X}\n", "1", "1.01",
       "retrieval.index.rebuild_tombstone_share: must be in [0, 1]"},
  };
  for (const Bound& bound : bounds) {
    auto with = [&](const std::string& value) {
      return ErrorsOf(std::string(kValid) +
                      absl::StrReplaceAll(bound.field, {{"X", value}}));
    };
    SCOPED_TRACE(bound.message);
    EXPECT_THAT(with(bound.inside), IsEmpty());
    EXPECT_THAT(with(bound.outside), Contains(bound.message));
  }
  auto training = [](const std::string& days) {
    return ErrorsOf(ValidWith(
        "    model: small\n",
        "    model: small\n    training: {cost_usd: 5, date: \"2026-01-01\", "
        "baseline_route: prompted, amortization_days: " +
            days + "}\n"));
  };
  EXPECT_THAT(training("1"), IsEmpty());
  EXPECT_THAT(training("0"),
              Contains("routes[1].training.amortization_days: must be >= 1"));
  auto top_k = [](const std::string& k) {
    return ErrorsOf(ValidWith("rag: {top_k: 3}", "rag: {top_k: " + k + "}"));
  };
  EXPECT_THAT(top_k("1"), IsEmpty());
  EXPECT_THAT(top_k("100"), IsEmpty());
  EXPECT_THAT(top_k("0"), Contains("routes[2].rag.top_k: must be in [1, 100]"));
  EXPECT_THAT(top_k("101"),
              Contains("routes[2].rag.top_k: must be in [1, 100]"));
}

TEST(ConfigTest, CheckConfigReferencesReadsWithoutCreating) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() /
      absl::StrCat("arbiter-config-test-", getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir / "empty");
  std::filesystem::create_directories(dir / "corpus");
  std::ofstream(dir / "corpus" / "a.md") << "# A\nText.\n";
  std::ofstream(dir / "q.jsonl") << "not json\n";
  std::unique_ptr<FileSource> files = MakeDiskFileSource(dir.string());
  auto check = [&](const std::string& yaml) {
    v1::Config config = Loaded(yaml);
    return CheckConfigReferences(config, *files);
  };
  const std::string store =
      absl::StrCat("  store_path: ", (dir / "store.db").string(), "\n");
  EXPECT_THAT(check(std::string(kValid) + store),
              ElementsAre(StartsWith("backends[0].sim.dataset: question set "
                                     "\"q.jsonl\": ")));
  std::ofstream(dir / "q.jsonl")
      << R"({"id": "1", "task": "faq", "question": "q?", "answer": "a"})"
      << "\n";
  EXPECT_THAT(check(std::string(kValid) + store), IsEmpty());
  EXPECT_THAT(
      check(ValidWith("corpus_dir: corpus", "corpus_dir: empty") +
            "  store_path: " + (dir / "nowhere" / "s.db").string() + "\n"),
      ElementsAre(
          "retrieval.corpus_dir: no .md or .txt files in \"empty\"",
          absl::StrCat("retrieval.store_path: folder \"",
                       (dir / "nowhere").string(), "\" does not exist")));
  EXPECT_THAT(check(ValidWith("corpus_dir: corpus", "corpus_dir: missing")),
              ElementsAre(StartsWith("retrieval.corpus_dir: ")));
  // Nothing was created: no store, no snapshot folder.
  EXPECT_FALSE(std::filesystem::exists(dir / "store.db"));
  EXPECT_FALSE(std::filesystem::exists(dir / "store.db.index"));
  std::filesystem::remove_all(dir);
}

TEST(ConfigTest, EmbeddedQuickstartConfigIsValid) {
  auto loaded = LoadEmbeddedConfig();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->config.routes_size(), 3);
}

TEST(ConfigTest, WorkerPoolSizesAreDefaultedAndValidated) {
  auto config = ParseConfigYaml(kValid);
  ASSERT_TRUE(config.ok());
  ApplyConfigDefaults(*config);
  EXPECT_EQ(config->server().retrieval_threads(), 4);
  EXPECT_EQ(config->server().retrieval_queue(), 256);
  EXPECT_EQ(config->server().ingest_threads(), 2);
  EXPECT_EQ(config->server().ingest_queue(), 64);
  // Zero queues mean zero: nothing waits.
  auto zero = ParseConfigYaml(
      std::string(kValid) + "server: {retrieval_queue: 0, ingest_queue: 0}\n");
  ASSERT_TRUE(zero.ok());
  EXPECT_THAT(ValidateConfig(*zero), IsEmpty());
  ApplyConfigDefaults(*zero);
  EXPECT_EQ(zero->server().retrieval_queue(), 0);
  EXPECT_EQ(zero->server().ingest_queue(), 0);
  EXPECT_THAT(
      ErrorsOf(std::string(kValid) +
               "server: {retrieval_threads: 0, ingest_queue: -1}\n"),
      ::testing::AllOf(
          Contains("server.retrieval_threads: must be in [1, 256], got 0"),
          Contains("server.ingest_queue: must be in [0, 1000000], got -1")));
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

TEST(ConfigTest, TlsAndMetricsAuthAreCheckedByField) {
  EXPECT_THAT(ErrorsOf(absl::StrCat(kValid, "server: {tls: {key_file: k}}\n")),
              Contains(HasSubstr("server.tls.cert_file: is required")));
  EXPECT_THAT(ErrorsOf(absl::StrCat(kValid, "server: {tls: {cert_file: c}}\n")),
              Contains(HasSubstr("server.tls.key_file: is required")));
  EXPECT_THAT(ErrorsOf(absl::StrCat(kValid, "server: {metrics_tls: true}\n")),
              Contains(HasSubstr("server.metrics_tls: needs server.tls")));
  EXPECT_THAT(
      ErrorsOf(absl::StrCat(kValid,
                            "server: {metrics_basic_auth: {username: 'a:b', "
                            "password_sha256: xyz}}\n")),
      AllOf(Contains(HasSubstr("server.metrics_basic_auth.username: must be "
                               "set and hold no ':'")),
            Contains(HasSubstr("server.metrics_basic_auth.password_sha256: "
                               "must be the password's SHA-256"))));
  EXPECT_THAT(
      ErrorsOf(absl::StrCat(
          kValid,
          "server: {tls: {cert_file: c, key_file: k}, metrics_tls: true, "
          "metrics_basic_auth: {username: prometheus, password_sha256: "
          "5E884898DA28047151D0E56F8DC6292773603D0D6AABBDD62A11EF721D1542D8}}"
          "\n")),
      IsEmpty());
}

}  // namespace
}  // namespace arbiter
