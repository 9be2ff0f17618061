// Starts `arbiter sim-server` and `arbiter serve` as real processes on
// OS-chosen loopback ports and drives them over gRPC and HTTP.

#include <httplib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "tests/integration/subprocess.h"

namespace arbiter {
namespace {

using ::arbiter::testing::MetricSample;
using ::arbiter::testing::PortOf;
using ::arbiter::testing::StartServe;
using ::arbiter::testing::Subprocess;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kQuestion[] = "How do I reset my password?";

// One rag route over sim-server's OpenAI API and the quickstart corpus;
// `retrieval` holds the retrieval section's further lines (indented).
std::string RagGatewayConfig(int sim_port, absl::string_view retrieval) {
  return absl::StrCat(
      absl::StrReplaceAll(R"yaml(
tasks: [faq]
policy: {pinned: {route: rag}}
backends:
  - name: sim-http
    openai: {base_url: "http://127.0.0.1:SIM_PORT/v1"}
routes:
  - name: rag
    kind: rag
    backend: sim-http
    model: quill-large
retrieval:
  corpus_dir: QUICKSTART/corpus
)yaml",
                          {{"SIM_PORT", std::to_string(sim_port)},
                           {"QUICKSTART", ARBITER_SOURCE_DIR "/quickstart"}}),
      retrieval);
}

// The quickstart's routes, plus routes over the `openai` backend pointed at
// sim-server, at a closed port, and with a timeout shorter than generation.
std::string TestConfig(int sim_port) {
  std::string quickstart = ARBITER_SOURCE_DIR "/quickstart";
  return absl::StrReplaceAll(
      R"yaml(
tasks: [faq, billing, troubleshooting, policy]
default_task: faq
backends:
  - name: sim-http
    openai: {base_url: "http://127.0.0.1:SIM_PORT/v1", timeout_seconds: 10}
  - name: dead
    openai: {base_url: "http://127.0.0.1:1/v1", timeout_seconds: 2}
  - name: slow
    openai: {base_url: "http://127.0.0.1:SIM_PORT/v1", timeout_seconds: 0.02}
routes:
  - name: prompted
    kind: prompted
    backend: sim-http
    model: quill-large
    system_prompt: You are a support assistant.
    examples:
      - {user: "Can I get a receipt?", assistant: "Yes, under Settings > Billing."}
    pricing: {input_usd_per_mtok: 3, output_usd_per_mtok: 15, request_usd: 0.0001}
  - name: fine-tuned
    kind: fine_tuned
    backend: sim-http
    model: quill-small-ft
    pricing: {input_usd_per_mtok: 0.3, output_usd_per_mtok: 1.2}
  - name: rag
    kind: rag
    backend: sim-http
    model: quill-large
    rag: {top_k: 4, max_context_tokens: 600}
    pricing: {input_usd_per_mtok: 3, output_usd_per_mtok: 15, retrieval_usd_per_query: 0.0001}
  - name: dead
    kind: fine_tuned
    backend: dead
    model: m
  - name: slow
    kind: fine_tuned
    backend: slow
    model: m
policy:
  weighted: {weights: {prompted: 1, fine-tuned: 1, rag: 1}}
task_policies:
  troubleshooting: {contextual: {k: 5, min_feedback: 2, explore_share: 0}}
experiments:
  - name: prompt-vs-tuned
    salt: e2e
    tasks: [policy]
    arms:
      - {name: A, weight: 1, route: prompted}
      - {name: B, weight: 1, route: fine-tuned}
    guardrails: {max_error_rate: 0.5}
retrieval:
  corpus_dir: QUICKSTART/corpus
)yaml",
      {{"SIM_PORT", std::to_string(sim_port)}, {"QUICKSTART", quickstart}});
}

class EndToEndTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto sim = Subprocess::Start(
        {ARBITER_BINARY, "sim-server", "--listen", "127.0.0.1:0", "--config",
         ARBITER_SOURCE_DIR "/quickstart/arbiter.yaml"});
    if (!sim.ok()) return ::arbiter::testing::SuiteSetupFailed(sim.status());
    sim_ = sim->release();
    auto sim_line =
        sim_->WaitForLine("sim-server listening on ", absl::Seconds(30));
    if (!sim_line.ok())
      return ::arbiter::testing::SuiteSetupFailed(sim_line.status());
    int sim_port = PortOf(*sim_line);
    if (sim_port <= 0) {
      return ::arbiter::testing::SuiteSetupFailed(
          absl::InternalError("no sim-server port"));
    }
    sim_port_ = sim_port;

    config_path_ =
        new std::string((std::filesystem::temp_directory_path() /
                         absl::StrCat("arbiter-e2e-", getpid(), ".yaml"))
                            .string());
    std::ofstream(*config_path_) << TestConfig(sim_port);
    auto gateway = StartServe(ARBITER_BINARY, {"--config", *config_path_});
    if (!gateway.ok())
      return ::arbiter::testing::SuiteSetupFailed(gateway.status());
    gateway_ = gateway->process.release();
    grpc_port_ = gateway->grpc_port;
    metrics_port_ = gateway->metrics_port;
    channel_ = new std::shared_ptr<grpc::Channel>(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", grpc_port_),
                            grpc::InsecureChannelCredentials()));
  }

  static void TearDownTestSuite() {
    delete gateway_;
    delete sim_;
    if (config_path_ != nullptr) std::filesystem::remove(*config_path_);
    delete config_path_;
    delete channel_;
  }

  void SetUp() override {
    ASSERT_TRUE(::arbiter::testing::SuiteSetupStatus().ok())
        << ::arbiter::testing::SuiteSetupStatus();
    ASSERT_NE(channel_, nullptr) << "servers did not start";
  }

  static grpc::Status Infer(const v1::InferRequest& request,
                            v1::InferResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(30));
    return v1::Gateway::NewStub(*channel_)->Infer(&context, request, response);
  }

  static grpc::Status Feedback(const v1::FeedbackRequest& request) {
    grpc::ClientContext context;
    v1::FeedbackResponse response;
    return v1::Gateway::NewStub(*channel_)->Feedback(&context, request,
                                                     &response);
  }

  static v1::InferRequest Ask(const std::string& text, const std::string& route,
                              const std::string& task = "faq") {
    v1::InferRequest request;
    v1::ChatMessage* message = request.add_messages();
    message->set_role(v1::ROLE_USER);
    message->set_content(text);
    request.set_route(route);
    request.set_task(task);
    return request;
  }

  static std::string Metrics() {
    httplib::Client client("127.0.0.1", metrics_port_);
    auto result = client.Get("/metrics");
    return result ? result->body : "";
  }

  static v1::GetRouteStatsResponse Stats() {
    grpc::ClientContext context;
    v1::GetRouteStatsResponse response;
    grpc::Status status = v1::Admin::NewStub(*channel_)->GetRouteStats(
        &context, v1::GetRouteStatsRequest(), &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  static inline Subprocess* sim_ = nullptr;
  static inline Subprocess* gateway_ = nullptr;
  static inline std::string* config_path_ = nullptr;
  static inline std::shared_ptr<grpc::Channel>* channel_ = nullptr;
  static inline int grpc_port_ = 0;
  static inline int sim_port_ = 0;
  static inline int metrics_port_ = 0;
};

// The sum of the samples `name{labels...}` whose labels include all of
// `want` (e.g. over a label left out), or -1 if there is none.
double SumOfSamples(const std::string& metrics, const std::string& name,
                    const std::map<std::string, std::string>& want) {
  std::istringstream lines(metrics);
  std::string line;
  double sum = 0;
  bool found = false;
  while (std::getline(lines, line)) {
    if (!line.starts_with(name + "{")) continue;
    bool all = true;
    for (const auto& [key, value] : want) {
      all = all && line.find(absl::StrCat(key, "=\"", value, "\"")) !=
                       std::string::npos;
    }
    if (!all) continue;
    sum += std::stod(line.substr(line.rfind(' ') + 1));
    found = true;
  }
  return found ? sum : -1;
}

// The value of the sample `name{labels...}` whose labels include all of
// `want`, or -1.
TEST_F(EndToEndTest, EachRouteKindAnswersPricesAndTakesFeedback) {
  // Costs per route as the client saw them, to compare with the server's.
  std::map<std::string, double> cost;
  std::map<std::string, int64_t> input_tokens;
  for (const char* route : {"prompted", "fine-tuned", "rag"}) {
    for (int i = 0; i < 3; ++i) {
      v1::InferResponse response;
      grpc::Status status = Infer(Ask(kQuestion, route), &response);
      ASSERT_TRUE(status.ok()) << route << ": " << status.error_message();
      EXPECT_EQ(response.route(), route);
      EXPECT_THAT(response.text(), StartsWith("[sim]"));
      EXPECT_EQ(response.backend(), "sim-http");
      EXPECT_GT(response.usage().input_tokens(), 0);
      EXPECT_GT(response.usage().output_tokens(), 0);
      EXPECT_FALSE(response.usage().estimated()) << "sim-server reports usage";
      EXPECT_GT(response.latency_seconds(), 0);
      EXPECT_EQ(response.decision().policy(), "pinned");
      EXPECT_EQ(response.decision().propensity(), 1);
      EXPECT_THAT(response.request_id(), StartsWith("arb2_"));
      cost[route] += response.cost_usd();
      input_tokens[route] = response.usage().input_tokens();
      if (std::string(route) == "rag") {
        EXPECT_EQ(response.route_kind(), "rag");
        ASSERT_FALSE(response.citations().empty());
        EXPECT_EQ(response.citations(0).marker(), "[1]");
        EXPECT_FALSE(response.citations(0).doc_id().empty());
        // The quickstart's password article holds the gold answer, so a
        // working retriever makes the rag answer right.
        EXPECT_THAT(response.text(), HasSubstr("The answer is"));
      } else {
        EXPECT_TRUE(response.citations().empty());
      }
      // Price check: tokens times the route's prices plus its fees.
      double expected =
          std::string(route) == "prompted"
              ? response.usage().input_tokens() * 3e-6 +
                    response.usage().output_tokens() * 15e-6 + 0.0001
          : std::string(route) == "fine-tuned"
              ? response.usage().input_tokens() * 0.3e-6 +
                    response.usage().output_tokens() * 1.2e-6
              : response.usage().input_tokens() * 3e-6 +
                    response.usage().output_tokens() * 15e-6 + 0.0001;
      EXPECT_NEAR(response.cost_usd(), expected, 1e-12) << route;
      v1::FeedbackRequest feedback;
      feedback.set_request_id(response.request_id());
      if (i == 2) {
        feedback.set_score(0.5);
      } else {
        feedback.set_correct(i == 0);
      }
      grpc::Status fb = Feedback(feedback);
      ASSERT_TRUE(fb.ok()) << fb.error_message();
    }
  }
  // Prompting sends the examples; fine-tuned sends the bare question; rag
  // adds retrieved context.
  EXPECT_GT(input_tokens["prompted"], input_tokens["fine-tuned"]);
  EXPECT_GT(input_tokens["rag"], input_tokens["prompted"]);

  v1::GetRouteStatsResponse stats = Stats();
  std::string metrics = Metrics();
  for (const char* route : {"prompted", "fine-tuned", "rag"}) {
    const v1::RouteTaskStats* faq = nullptr;
    for (const auto& row : stats.stats()) {
      if (row.route() == route && row.task() == "faq") faq = &row;
    }
    ASSERT_NE(faq, nullptr);
    EXPECT_EQ(faq->requests(), 3);
    EXPECT_EQ(faq->errors(), 0);
    EXPECT_EQ(faq->feedback_count(), 3);
    EXPECT_DOUBLE_EQ(faq->feedback_score_sum(), 1.5);
    EXPECT_DOUBLE_EQ(faq->accuracy(), 0.5);
    EXPECT_NEAR(faq->cost_usd(), cost[route], 1e-12);
    EXPECT_NEAR(faq->cost_per_correct_usd(), cost[route] / 3 / 0.5, 1e-12);
    // The metrics endpoint agrees with the Admin API.
    std::map<std::string, std::string> labels = {{"route", route},
                                                 {"task", "faq"}};
    auto with = [&](const char* key, const char* value) {
      auto copy = labels;
      copy[key] = value;
      return copy;
    };
    EXPECT_EQ(
        MetricSample(metrics, "arbiter_requests_total", with("outcome", "ok")),
        3);
    EXPECT_EQ(SumOfSamples(metrics, "arbiter_decisions_total", labels), 3);
    EXPECT_EQ(SumOfSamples(metrics, "arbiter_decisions_total",
                           with("reason", "requested")),
              3);
    EXPECT_NEAR(SumOfSamples(metrics, "arbiter_cost_usd_total", labels),
                faq->cost_usd(), 1e-9);
    EXPECT_GT(MetricSample(metrics, "arbiter_cost_usd_total",
                           with("component", "input_tokens")),
              0);
    EXPECT_EQ(MetricSample(metrics, "arbiter_tokens_total",
                           with("direction", "input")),
              faq->input_tokens());
    EXPECT_EQ(MetricSample(metrics, "arbiter_feedback_total",
                           with("outcome", "correct")),
              1);
    EXPECT_EQ(MetricSample(metrics, "arbiter_feedback_total",
                           with("outcome", "incorrect")),
              1);
    EXPECT_EQ(MetricSample(metrics, "arbiter_feedback_total",
                           with("outcome", "graded")),
              1);
    EXPECT_DOUBLE_EQ(
        MetricSample(metrics, "arbiter_feedback_score_total", labels), 1.5);
    EXPECT_EQ(
        MetricSample(metrics, "arbiter_request_duration_seconds_count", labels),
        3);
  }
}

TEST_F(EndToEndTest, PolicyChoosesWhenNothingIsPinned) {
  std::map<std::string, int> seen;
  for (int i = 0; i < 30; ++i) {
    v1::InferResponse response;
    grpc::Status status = Infer(Ask(kQuestion, "", "billing"), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.decision().policy(), "weighted");
    EXPECT_NEAR(response.decision().propensity(), 1.0 / 3, 1e-9);
    ++seen[response.route()];
  }
  EXPECT_GE(seen.size(), 2u) << "a 3-way split sent 30 requests to one route";
}

TEST_F(EndToEndTest, BadRequestsGetClearErrors) {
  struct Case {
    v1::InferRequest request;
    grpc::StatusCode code;
    std::string message;
  };
  std::vector<Case> cases;
  cases.push_back({v1::InferRequest(), grpc::INVALID_ARGUMENT,
                   "messages: must not be empty"});
  cases.push_back({Ask(kQuestion, "nope"), grpc::INVALID_ARGUMENT,
                   "route: unknown route \"nope\""});
  cases.push_back({Ask(kQuestion, "", "astrology"), grpc::INVALID_ARGUMENT,
                   "task: unknown task \"astrology\""});
  cases.push_back({Ask("", "rag"), grpc::INVALID_ARGUMENT,
                   "messages[0].content: must not be empty"});
  v1::InferRequest negative = Ask(kQuestion, "");
  negative.mutable_limits()->set_max_output_tokens(-5);
  cases.push_back(
      {negative, grpc::INVALID_ARGUMENT, "limits.max_output_tokens"});
  v1::InferRequest oversized = Ask(std::string(1100000, 'x'), "");
  cases.push_back(
      {oversized, grpc::INVALID_ARGUMENT, "server.max_request_bytes"});
  v1::InferRequest tool_without_id = Ask(kQuestion, "");
  tool_without_id.add_messages()->set_role(v1::ROLE_TOOL);
  cases.push_back({tool_without_id, grpc::INVALID_ARGUMENT,
                   "messages[1].tool_call_id: a tool message must name the "
                   "call it answers"});
  v1::InferRequest stray_id = Ask(kQuestion, "");
  stray_id.mutable_messages(0)->set_tool_call_id("call_1");
  cases.push_back({stray_id, grpc::INVALID_ARGUMENT,
                   "messages[0].tool_call_id: only a tool message has one"});
  v1::InferRequest bad_calls = Ask(kQuestion, "");
  v1::ChatMessage* assistant = bad_calls.mutable_messages()->Add();
  assistant->set_role(v1::ROLE_ASSISTANT);
  assistant->set_tool_calls_json("{\"id\": 1}");
  bad_calls.add_messages()->CopyFrom(bad_calls.messages(0));
  cases.push_back({bad_calls, grpc::INVALID_ARGUMENT,
                   "messages[1].tool_calls_json: expected an array, got an "
                   "object"});
  v1::InferRequest user_calls = Ask(kQuestion, "");
  user_calls.mutable_messages(0)->set_tool_calls_json("[]");
  cases.push_back({user_calls, grpc::INVALID_ARGUMENT,
                   "messages[0].tool_calls_json: only an assistant message"});
  v1::InferRequest too_cheap = Ask(kQuestion, "");
  too_cheap.mutable_constraints()->set_max_cost_usd(1e-9);
  cases.push_back({too_cheap, grpc::FAILED_PRECONDITION, "max_cost_usd"});
  for (const Case& c : cases) {
    v1::InferResponse response;
    grpc::Status status = Infer(c.request, &response);
    EXPECT_EQ(status.error_code(), c.code) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
  }

  v1::FeedbackRequest unknown;
  unknown.set_request_id("not-a-request");
  unknown.set_correct(true);
  grpc::Status status = Feedback(unknown);
  EXPECT_EQ(status.error_code(), grpc::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("request_id"));

  v1::InferResponse served;
  ASSERT_TRUE(Infer(Ask(kQuestion, "fine-tuned"), &served).ok());
  v1::FeedbackRequest out_of_range;
  out_of_range.set_request_id(served.request_id());
  out_of_range.set_score(1.5);
  status = Feedback(out_of_range);
  EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("score: must be in [0, 1]"));
  v1::FeedbackRequest twice;
  twice.set_request_id(served.request_id());
  twice.set_correct(true);
  EXPECT_TRUE(Feedback(twice).ok());
  EXPECT_EQ(Feedback(twice).error_code(), grpc::ALREADY_EXISTS);

  EXPECT_GT(MetricSample(
                Metrics(), "arbiter_rejected_requests_total",
                {{"code", "invalid_argument"}, {"reason", "invalid_request"}}),
            0);
}

TEST_F(EndToEndTest, DeadAndSlowBackendsFailClearlyAndServingContinues) {
  v1::InferResponse response;
  grpc::Status status = Infer(Ask(kQuestion, "dead"), &response);
  EXPECT_EQ(status.error_code(), grpc::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("backend \"dead\""));

  status = Infer(Ask(kQuestion, "slow"), &response);
  EXPECT_EQ(status.error_code(), grpc::DEADLINE_EXCEEDED);
  EXPECT_THAT(status.error_message(), HasSubstr("backend \"slow\""));

  std::string metrics = Metrics();
  EXPECT_GE(
      MetricSample(
          metrics, "arbiter_requests_total",
          {{"route", "dead"}, {"task", "faq"}, {"outcome", "unavailable"}}),
      1);
  EXPECT_GE(MetricSample(
                metrics, "arbiter_requests_total",
                {{"route", "slow"}, {"task", "faq"}, {"outcome", "timeout"}}),
            1);
  ASSERT_TRUE(Infer(Ask(kQuestion, "rag"), &response).ok());
}

TEST_F(EndToEndTest, SimServerListsItsModels) {
  httplib::Client client("127.0.0.1", sim_port_);
  auto result = client.Get("/v1/models");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
  EXPECT_THAT(result->body, HasSubstr(R"("id":"quill-large")"));
  EXPECT_THAT(result->body, HasSubstr(R"("id":"quill-small-ft")"));
  auto bad =
      client.Post("/v1/chat/completions", "{not json", "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_THAT(bad->body, HasSubstr("not JSON"));
}

TEST_F(EndToEndTest, ExperimentAssignsStickilyAndAnalyzes) {
  std::map<std::string, std::string> route_of_unit;
  int requests = 0;
  for (int round = 0; round < 2; ++round) {
    for (int u = 0; u < 30; ++u) {
      v1::InferRequest request = Ask(kQuestion, "", "policy");
      request.set_unit_id("user-" + std::to_string(u));
      v1::InferResponse response;
      grpc::Status status = Infer(request, &response);
      ASSERT_TRUE(status.ok()) << status.error_message();
      ++requests;
      EXPECT_EQ(response.decision().experiment(), "prompt-vs-tuned");
      EXPECT_EQ(response.route(),
                response.decision().arm() == "A" ? "prompted" : "fine-tuned");
      EXPECT_DOUBLE_EQ(response.decision().propensity(), 0.5);
      EXPECT_THAT(response.decision().reason(),
                  HasSubstr("experiment prompt-vs-tuned arm "));
      auto [it, inserted] =
          route_of_unit.emplace(request.unit_id(), response.route());
      EXPECT_EQ(it->second, response.route()) << "unit moved arms";
      v1::FeedbackRequest feedback;
      feedback.set_request_id(response.request_id());
      feedback.set_correct(response.route() == "fine-tuned");
      ASSERT_TRUE(Feedback(feedback).ok());
    }
  }
  // A pinned request stays out of the experiment.
  v1::InferResponse pinned;
  ASSERT_TRUE(Infer(Ask(kQuestion, "rag", "policy"), &pinned).ok());
  EXPECT_EQ(pinned.decision().experiment(), "");

  grpc::ClientContext context;
  v1::GetExperimentRequest request;
  request.set_name("prompt-vs-tuned");
  v1::ExperimentAnalysis analysis;
  grpc::Status status = v1::Admin::NewStub(*channel_)->GetExperiment(
      &context, request, &analysis);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(analysis.arms_size(), 2);
  EXPECT_EQ(analysis.arms(0).requests() + analysis.arms(1).requests(),
            requests);
  EXPECT_EQ(analysis.arms(0).feedback() + analysis.arms(1).feedback(),
            requests);
  EXPECT_DOUBLE_EQ(analysis.arms(0).accuracy(), 0);
  EXPECT_DOUBLE_EQ(analysis.arms(1).accuracy(), 1);
  EXPECT_TRUE(analysis.arms(1).compared());
  EXPECT_THAT(analysis.verdict(), HasSubstr("SRM"));

  grpc::ClientContext missing_context;
  request.set_name("nope");
  status = v1::Admin::NewStub(*channel_)->GetExperiment(&missing_context,
                                                        request, &analysis);
  EXPECT_EQ(status.error_code(), grpc::NOT_FOUND);

  std::string metrics = Metrics();
  double arm_requests =
      MetricSample(metrics, "arbiter_experiment_requests_total",
                   {{"experiment", "prompt-vs-tuned"},
                    {"arm", "A"},
                    {"outcome", "ok"}}) +
      MetricSample(
          metrics, "arbiter_experiment_requests_total",
          {{"experiment", "prompt-vs-tuned"}, {"arm", "B"}, {"outcome", "ok"}});
  EXPECT_EQ(arm_requests, requests);
  EXPECT_EQ(MetricSample(metrics, "arbiter_experiment_feedback_score_total",
                         {{"experiment", "prompt-vs-tuned"}, {"arm", "A"}}),
            0);
  EXPECT_EQ(MetricSample(metrics, "arbiter_experiment_feedback_total",
                         {{"experiment", "prompt-vs-tuned"}, {"arm", "A"}}) +
                MetricSample(metrics, "arbiter_experiment_feedback_total",
                             {{"experiment", "prompt-vs-tuned"}, {"arm", "B"}}),
            requests);

  auto show = Subprocess::Start({ARBITER_BINARY, "experiment", "show",
                                 "prompt-vs-tuned", "--target",
                                 absl::StrCat("127.0.0.1:", grpc_port_)});
  ASSERT_TRUE(show.ok());
  auto verdict = (*show)->WaitForLine("verdict: ", absl::Seconds(30));
  ASSERT_TRUE(verdict.ok()) << verdict.status();
  EXPECT_THAT(*verdict, HasSubstr("B beats A on accuracy"));
  EXPECT_EQ((*show)->Wait(), 0);
}

TEST_F(EndToEndTest, ContextualPolicyLearnsFromFeedbackOnSimilarPrompts) {
  const std::string question = "Why does sync keep failing on my laptop?";
  // Teach it: on this prompt, fine-tuned is right and rag is wrong.
  for (int i = 0; i < 3; ++i) {
    for (const char* route : {"fine-tuned", "rag"}) {
      v1::InferResponse response;
      ASSERT_TRUE(
          Infer(Ask(question, route, "troubleshooting"), &response).ok());
      v1::FeedbackRequest feedback;
      feedback.set_request_id(response.request_id());
      feedback.set_correct(std::string(route) == "fine-tuned");
      ASSERT_TRUE(Feedback(feedback).ok());
    }
  }
  v1::InferResponse response;
  ASSERT_TRUE(Infer(Ask(question, "", "troubleshooting"), &response).ok());
  EXPECT_EQ(response.decision().policy(), "contextual");
  EXPECT_EQ(response.route(), "fine-tuned") << response.decision().reason();
  EXPECT_THAT(response.decision().reason(),
              ::testing::ContainsRegex("from [1-5] neighbours"));
}

TEST_F(EndToEndTest, RetrievalServiceIngestsSearchesAndDeletes) {
  std::string target = absl::StrCat("127.0.0.1:", grpc_port_);
  auto add = Subprocess::Start({ARBITER_BINARY, "index", "add", "--collection",
                                "kb", "--target", target,
                                ARBITER_SOURCE_DIR "/quickstart/corpus"});
  ASSERT_TRUE(add.ok());
  EXPECT_EQ((*add)->Wait(), 0) << (*add)->Output();
  EXPECT_THAT((*add)->Output(), HasSubstr("added 48 documents to \"kb\""));

  auto search =
      Subprocess::Start({ARBITER_BINARY, "index", "search", "--collection",
                         "kb", "--target", target, "I forgot my password"});
  ASSERT_TRUE(search.ok());
  auto first = (*search)->WaitForLine(" 1. ", absl::Seconds(30));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_THAT(*first, HasSubstr("reset-your-password"));
  EXPECT_EQ((*search)->Wait(), 0);

  // The quickstart questions as a BEIR test collection.
  std::string dir = std::filesystem::temp_directory_path() /
                    absl::StrCat("arbiter-eval-", getpid());
  std::filesystem::create_directories(dir);
  {
    std::ifstream questions(ARBITER_SOURCE_DIR "/quickstart/questions.jsonl");
    std::ofstream queries(dir + "/queries.jsonl");
    std::ofstream qrels(dir + "/qrels.tsv");
    qrels << "query-id\tcorpus-id\tscore\n";
    std::string line;
    while (std::getline(questions, line)) {
      auto id = line.substr(line.find("\"id\": \"") + 7);
      id = id.substr(0, id.find('"'));
      auto question = line.substr(line.find("\"question\": \"") + 13);
      question = question.substr(0, question.find("\", \"answer\""));
      auto doc = line.substr(line.find("\"doc\": \"") + 8);
      doc = doc.substr(0, doc.find('"'));
      queries << "{\"_id\": \"" << id << "\", \"text\": \"" << question
              << "\"}\n";
      qrels << id << "\t" << doc << "\t1\n";
    }
  }
  auto eval = Subprocess::Start({ARBITER_BINARY, "index", "eval",
                                 "--collection", "kb", "--target", target,
                                 "--queries", dir + "/queries.jsonl", "--qrels",
                                 dir + "/qrels.tsv"});
  ASSERT_TRUE(eval.ok());
  auto hybrid_line = (*eval)->WaitForLine("hybrid ", absl::Seconds(120));
  ASSERT_TRUE(hybrid_line.ok()) << hybrid_line.status();
  EXPECT_EQ((*eval)->Wait(), 0) << (*eval)->Output();
  EXPECT_THAT((*eval)->Output(), HasSubstr("keyword       253"));
  std::filesystem::remove_all(dir);

  auto stub = v1::Retrieval::NewStub(*channel_);
  {
    grpc::ClientContext context;
    v1::GetCollectionRequest request;
    request.set_name("kb");
    v1::CollectionInfo info;
    ASSERT_TRUE(stub->GetCollection(&context, request, &info).ok());
    EXPECT_EQ(info.documents(), 48);
    EXPECT_GT(info.chunks(), 48);
  }
  {
    grpc::ClientContext context;
    v1::UpsertRequest request;
    request.set_collection("kb");
    v1::RetrievalDocument* document = request.add_documents();
    document->set_id("zebra-policy");
    document->set_text("Zebras may not be kept in shared workspaces.");
    document->set_metadata_json(R"({"team": "zoo"})");
    v1::UpsertResponse response;
    ASSERT_TRUE(stub->Upsert(&context, request, &response).ok());
    EXPECT_EQ(response.versions(0), 1);
  }
  auto search_zebra = [&](v1::SearchMode mode) {
    grpc::ClientContext context;
    v1::SearchRequest request;
    request.set_collection("kb");
    request.set_query("zebras in workspaces");
    request.set_mode(mode);
    request.set_k(3);
    v1::SearchResponse response;
    EXPECT_TRUE(stub->Search(&context, request, &response).ok());
    return response;
  };
  for (v1::SearchMode mode : {v1::SEARCH_MODE_HYBRID, v1::SEARCH_MODE_KEYWORD,
                              v1::SEARCH_MODE_VECTOR}) {
    v1::SearchResponse response = search_zebra(mode);
    ASSERT_GT(response.results_size(), 0) << mode;
    EXPECT_EQ(response.results(0).doc_id(), "zebra-policy") << mode;
  }
  {
    // Filtered: only the zoo team's document, though others match the words.
    grpc::ClientContext context;
    v1::SearchRequest request;
    request.set_collection("kb");
    request.set_query("shared workspaces");
    v1::MetadataFilter* filter = request.add_filters();
    filter->set_key("team");
    filter->add_values_json("\"zoo\"");
    v1::SearchResponse response;
    ASSERT_TRUE(stub->Search(&context, request, &response).ok());
    ASSERT_EQ(response.results_size(), 1);
    EXPECT_EQ(response.results(0).doc_id(), "zebra-policy");
  }
  {
    grpc::ClientContext context;
    v1::DeleteRequest request;
    request.set_collection("kb");
    request.set_metadata_key("team");
    request.set_metadata_value_json("\"zoo\"");
    v1::DeleteResponse response;
    ASSERT_TRUE(stub->Delete(&context, request, &response).ok());
    EXPECT_EQ(response.deleted(), 1);
  }
  for (v1::SearchMode mode : {v1::SEARCH_MODE_HYBRID, v1::SEARCH_MODE_KEYWORD,
                              v1::SEARCH_MODE_VECTOR}) {
    v1::SearchResponse after = search_zebra(mode);
    for (const auto& result : after.results()) {
      EXPECT_NE(result.doc_id(), "zebra-policy") << "deleted but found";
    }
  }
  // Bad input: each gets a clear error naming what is wrong.
  struct Case {
    v1::SearchRequest request;
    grpc::StatusCode code;
    std::string message;
  };
  v1::SearchRequest unknown;
  unknown.set_collection("nope");
  unknown.set_query("x");
  v1::SearchRequest huge;
  huge.set_collection("kb");
  huge.set_query(std::string(5000, 'a'));
  v1::SearchRequest bad_mode;
  bad_mode.set_collection("kb");
  bad_mode.set_query("password");
  bad_mode.set_mode(static_cast<v1::SearchMode>(42));
  for (const Case& c : std::vector<Case>{
           {unknown, grpc::NOT_FOUND, "unknown collection \"nope\""},
           {huge, grpc::INVALID_ARGUMENT, "query: 5000 bytes"},
           {bad_mode, grpc::INVALID_ARGUMENT, "mode: must be hybrid"}}) {
    grpc::ClientContext context;
    v1::SearchResponse response;
    grpc::Status status = stub->Search(&context, c.request, &response);
    EXPECT_EQ(status.error_code(), c.code);
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
  }
  grpc::ClientContext context;
  v1::UpsertRequest empty;
  empty.set_collection("kb");
  empty.add_documents()->set_id("blank");
  v1::UpsertResponse response;
  grpc::Status status = stub->Upsert(&context, empty, &response);
  EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("documents[0].text"));
}

TEST_F(EndToEndTest, MetricsPassPromtool) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool not installed (Debian package prometheus)";
  }
  std::string path = (std::filesystem::temp_directory_path() /
                      absl::StrCat("arbiter-metrics-", getpid(), ".txt"))
                         .string();
  std::ofstream(path) << Metrics();
  std::string command =
      absl::StrCat("promtool check metrics < ", path, " 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[512];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  int rc = pclose(pipe);
  std::filesystem::remove(path);
  EXPECT_EQ(rc, 0) << output;
  EXPECT_EQ(output, "");
}

TEST(ReplayCommandTest, ReplaysALogAndPrintsTableAndJson) {
  std::string dir = std::filesystem::temp_directory_path() /
                    absl::StrCat("arbiter-replay-", getpid());
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/policy.yaml") << R"yaml(
tasks: [easy, hard]
backends: [{name: sim, sim: {dataset: none.jsonl}}]
routes:
  - {name: small, kind: fine_tuned, backend: sim, model: s,
     pricing: {input_usd_per_mtok: 1, output_usd_per_mtok: 2}}
  - {name: large, kind: prompted, backend: sim, model: l,
     pricing: {input_usd_per_mtok: 20, output_usd_per_mtok: 40}}
policy: {best_utility: {cost_weight: 10, min_feedback: 30}}
)yaml";
  {
    std::ofstream log(dir + "/outcomes.jsonl");
    for (int i = 0; i < 600; ++i) {
      bool hard = i % 2;
      bool small_right = !hard || (i / 2) % 10 < 3;
      log << absl::StrCat(
          R"({"id": "r)", i, R"(", "task": ")", hard ? "hard" : "easy",
          R"(", "prompt": "q", "outcomes": {"small": {"correct": )",
          small_right ? "true" : "false",
          R"(, "input_tokens": 1000, "output_tokens": 100, "latency_ms": 80},)",
          R"( "large": {"score": 0.95, "input_tokens": 1000, "output_tokens": 100, "latency_ms": 400}}})",
          "\n");
    }
  }
  auto table = Subprocess::Start({ARBITER_BINARY, "replay", "--log",
                                  dir + "/outcomes.jsonl", "--config",
                                  dir + "/policy.yaml"});
  ASSERT_TRUE(table.ok());
  auto routing = (*table)->WaitForLine(
      "routing (weak small, strong large): PGR ", absl::Seconds(60));
  ASSERT_TRUE(routing.ok()) << routing.status();
  EXPECT_THAT(*routing, HasSubstr("APGR"));
  EXPECT_EQ((*table)->Wait(), 0);
  std::string output = (*table)->Output();
  // small alone: 300 easy right + 90 hard right of 600; 0.0012 per request.
  EXPECT_THAT(output,
              HasSubstr("small               600     0.650      0.7200"));
  EXPECT_THAT(output, HasSubstr("oracle"));

  auto json = Subprocess::Start({ARBITER_BINARY, "replay", "--log",
                                 dir + "/outcomes.jsonl", "--config",
                                 dir + "/policy.yaml", "--json"});
  ASSERT_TRUE(json.ok());
  EXPECT_EQ((*json)->Wait(), 0);
  EXPECT_THAT((*json)->Output(), HasSubstr(R"("strong_route": "large")"));
  EXPECT_THAT((*json)->Output(), HasSubstr(R"("apgr": )"));

  std::ofstream(dir + "/bad.jsonl")
      << R"({"id": 1, "task": "easy", "outcomes": {"medium": {"correct": true}}})"
      << "\n";
  auto bad =
      Subprocess::Start({ARBITER_BINARY, "replay", "--log", dir + "/bad.jsonl",
                         "--config", dir + "/policy.yaml"});
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ((*bad)->Wait(), 1);
  EXPECT_THAT(
      (*bad)->Output(),
      HasSubstr("request 1 (id \"1\"): route \"medium\" is not in the config"));
  std::filesystem::remove_all(dir);
}

TEST_F(EndToEndTest, CheckConfigRejectsABadConfigWithEveryError) {
  std::string path = (std::filesystem::temp_directory_path() /
                      absl::StrCat("arbiter-bad-", getpid(), ".yaml"))
                         .string();
  std::ofstream(path) << absl::StrReplaceAll(
      TestConfig(1), {{"backend: dead\n", "backend: vlm\n"},
                      {"request_usd: 0.0001", "request_usd: -1"}});
  auto check = Subprocess::Start({ARBITER_BINARY, "check-config", path});
  ASSERT_TRUE(check.ok());
  auto line = (*check)->WaitForLine("  routes[3].backend", absl::Seconds(30));
  EXPECT_TRUE(line.ok()) << line.status();
  EXPECT_THAT((*check)->Output(),
              HasSubstr("routes[0].pricing.request_usd: must be >= 0"));
  EXPECT_EQ((*check)->Wait(), 1);
  std::filesystem::remove(path);
}

// A gateway whose vectors come from an embedding server (sim-server's
// /v1/embeddings), with a persistent store and an HNSW index: ingest, search,
// restart from the snapshot, and refuse a server of the wrong dimension.
TEST_F(EndToEndTest, EmbeddingServerPersistentStoreAndSnapshots) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    absl::StrCat("arbiter-embed-", getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  // Also when an assertion ends the test early.
  const absl::Cleanup remove_dir = [&] { std::filesystem::remove_all(dir); };
  auto write_config = [&](int dim) {
    const std::string path = (dir / "gateway.yaml").string();
    std::ofstream(path) << RagGatewayConfig(
        sim_port_, absl::StrReplaceAll(
                       R"yaml(  store_path: DIR/store.db
  embedding_dim: DIM
  index: {kind: hnsw}
  embedding_server: {url: "http://127.0.0.1:SIM_PORT/v1", model: sim-embed, batch_size: 16}
)yaml",
                       {{"SIM_PORT", std::to_string(sim_port_)},
                        {"DIR", dir.string()},
                        {"DIM", std::to_string(dim)}}));
    return path;
  };
  auto start = [&](int dim) {
    return Subprocess::Start({ARBITER_BINARY, "serve", "--config",
                              write_config(dim), "--grpc-listen", "127.0.0.1:0",
                              "--metrics-listen", "127.0.0.1:0",
                              "--http-listen", "127.0.0.1:0"});
  };
  auto stats = [](int port) {
    auto run = Subprocess::Start({ARBITER_BINARY, "index", "stats",
                                  "--collection", "corpus", "--target",
                                  absl::StrCat("127.0.0.1:", port)});
    EXPECT_TRUE(run.ok());
    EXPECT_EQ((*run)->Wait(), 0) << (*run)->Output();
    return (*run)->Output();
  };
  for (int round = 0; round < 2; ++round) {
    auto gateway = start(384);  // sim-server's default dimension.
    ASSERT_TRUE(gateway.ok()) << gateway.status();
    auto line =
        (*gateway)->WaitForLine("grpc listening on ", absl::Seconds(60));
    ASSERT_TRUE(line.ok()) << line.status() << (*gateway)->Output();
    const int port = PortOf(*line);
    const std::string output = stats(port);
    EXPECT_THAT(output, HasSubstr("index       hnsw"));
    EXPECT_THAT(output, HasSubstr("corpus.index"));
    // The first start builds and saves the index; the second loads it.
    EXPECT_THAT(output, HasSubstr(round == 0 ? "rebuilt from the store: no "
                                               "index snapshot"
                                             : "loaded index snapshot"));
    auto search = Subprocess::Start(
        {ARBITER_BINARY, "index", "search", "--collection", "corpus", "--mode",
         "vector", "--target", absl::StrCat("127.0.0.1:", port),
         "I forgot my password and cannot sign in"});
    ASSERT_TRUE(search.ok());
    EXPECT_EQ((*search)->Wait(), 0) << (*search)->Output();
    EXPECT_THAT((*search)->Output(), HasSubstr("password"));
    EXPECT_EQ((*gateway)->Stop(), 0) << (*gateway)->Output();
    if (round == 1) {
      // The unchanged corpus was not written again, so nothing to replay.
      EXPECT_THAT((*gateway)->Output(),
                  HasSubstr("replayed 0 removals and 0 additions"));
    }
  }
  // A server answering with 384-d vectors for a 128-d config: refused at
  // start, naming both dimensions.
  std::filesystem::remove_all(dir / "store.db.index");
  auto wrong = start(128);
  ASSERT_TRUE(wrong.ok());
  EXPECT_NE((*wrong)->Wait(), 0);
  EXPECT_THAT((*wrong)->Output(), HasSubstr("384-dim vectors"));
  EXPECT_THAT((*wrong)->Output(), HasSubstr("expects 128"));
}

// Wide vectors (32 KiB each) pass the size from which a collection's index
// is given room ahead of need within about a hundred one-chunk documents:
// the grower copies it while the gateway serves, and GetCollection and
// `index stats` report the growth.
TEST_F(EndToEndTest, IndexStatsReportsGrowthAheadOfNeed) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            absl::StrCat("arbiter-grow-", getpid(), ".yaml"))
                               .string();
  const absl::Cleanup remove_config = [&] { std::filesystem::remove(path); };
  std::ofstream(path) << RagGatewayConfig(
      sim_port_, "  embedding_dim: 8192\n  index: {kind: flat}\n");
  auto gateway =
      Subprocess::Start({ARBITER_BINARY, "serve", "--config", path,
                         "--grpc-listen", "127.0.0.1:0", "--metrics-listen",
                         "127.0.0.1:0", "--http-listen", "127.0.0.1:0"});
  ASSERT_TRUE(gateway.ok()) << gateway.status();
  auto line = (*gateway)->WaitForLine("grpc listening on ", absl::Seconds(60));
  ASSERT_TRUE(line.ok()) << line.status() << (*gateway)->Output();
  const std::string target = absl::StrCat("127.0.0.1:", PortOf(*line));
  auto stub = v1::Retrieval::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  auto upsert = [&](int from, int to) {
    for (int i = from; i < to; ++i) {
      grpc::ClientContext context;
      v1::UpsertRequest request;
      request.set_collection("kb");
      v1::RetrievalDocument& doc = *request.add_documents();
      doc.set_id(absl::StrCat("note-", i));
      doc.set_title(absl::StrCat("Note ", i));
      doc.set_text(absl::StrCat("Short note number ", i, " about backups."));
      v1::UpsertResponse response;
      ASSERT_TRUE(stub->Upsert(&context, request, &response).ok()) << i;
    }
  };
  auto info = [&] {
    grpc::ClientContext context;
    v1::GetCollectionRequest request;
    request.set_name("kb");
    v1::CollectionInfo collection;
    EXPECT_TRUE(stub->GetCollection(&context, request, &collection).ok());
    return collection;
  };
  // Fill the room in steps, pausing after each so that no writer races the
  // grower; background rebuilds (the embedder is refitted as the corpus
  // doubles) may replace the index and its room meanwhile.
  int rows = 0;
  do {
    const int step = rows == 0 ? 90 : 10;  // Due at 96 rows of 128.
    upsert(rows, rows + step);
    rows += step;
    for (int i = 0; i < 20 && info().index_growths() == 0; ++i) {
      absl::SleepFor(absl::Milliseconds(15));
    }
  } while (info().index_growths() == 0 && rows < 1000);
  const v1::CollectionInfo after = info();
  EXPECT_GE(after.index_growths(), 1);
  EXPECT_EQ(after.index_vectors(), rows);
  EXPECT_GE(after.index_growth_hold_ms(), 0);
  auto stats = Subprocess::Start({ARBITER_BINARY, "index", "stats",
                                  "--collection", "kb", "--target", target});
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ((*stats)->Wait(), 0) << (*stats)->Output();
  EXPECT_THAT((*stats)->Output(),
              HasSubstr(absl::StrCat("index       flat, ", rows, " vectors")));
  EXPECT_THAT((*stats)->Output(),
              HasSubstr("room        grown ahead of need "));
  stub.reset();  // An open channel would hold the gateway's drain.
  EXPECT_EQ((*gateway)->Stop(), 0);
  EXPECT_THAT((*gateway)->Output(), HasSubstr("room ahead of need at"));
}

}  // namespace
}  // namespace arbiter
