// A real `arbiter serve` with a state store, stopped and started again:
// what it learned and accounted is there after SIGTERM and after SIGKILL,
// judged requests stay judged, and config changes are handled by name.

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "tests/integration/subprocess.h"

namespace arbiter {
namespace {

using ::arbiter::testing::ServingGateway;
using ::arbiter::testing::StartServe;
using ::testing::HasSubstr;

// Questions of each task the quickstart's simulator knows.
const std::vector<std::pair<std::string, std::string>>& Questions() {
  static const auto* questions =
      new std::vector<std::pair<std::string, std::string>>{
          {"faq", "How do I reset my password?"},
          {"billing", "How much does Plus cost per month if I pay yearly?"},
          {"troubleshooting",
           "Which sync error code means I lost permission to edit the page?"},
          {"policy", "How do I turn on 2FA for my account?"}};
  return *questions;
}

class StateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("arbiter-state-e2e-", getpid(), "-", counter_++);
    std::filesystem::create_directories(dir_);
    std::ifstream in(ARBITER_SOURCE_DIR "/quickstart/arbiter.yaml");
    std::stringstream text;
    text << in.rdbuf();
    // The quickstart answering at once, with a state store and a short
    // batch window.
    quickstart_ = absl::StrReplaceAll(
        text.str(),
        {{"time_to_first_token_seconds: 0.05",
          "time_to_first_token_seconds: 0"},
         {"seconds_per_token: 0.002", "seconds_per_token: 0"},
         {"dataset: questions.jsonl",
          "dataset: " ARBITER_SOURCE_DIR "/quickstart/questions.jsonl"},
         {"corpus_dir: corpus",
          "corpus_dir: " ARBITER_SOURCE_DIR "/quickstart/corpus"},
         {"path: data/arbiter-state.db",
          absl::StrCat("path: ", (dir_ / "state.db").string())}});
    ASSERT_THAT(quickstart_, HasSubstr("flush_interval_ms: 100"));
  }
  void TearDown() override {
    gateway_.process.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  void Start(const std::string& yaml) {
    const std::string path =
        (dir_ / absl::StrCat("config-", configs_++, ".yaml")).string();
    std::ofstream(path) << yaml;
    auto gateway = StartServe(ARBITER_BINARY, {"--config", path});
    ASSERT_TRUE(gateway.ok()) << gateway.status();
    gateway_ = *std::move(gateway);
    channel_ = grpc::CreateChannel(gateway_.target(),
                                   grpc::InsecureChannelCredentials());
  }
  void Start() { Start(quickstart_); }

  static std::unique_ptr<grpc::ClientContext> Context() {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    return context;
  }

  // One request of question q (for unit `unit`); its id, or "" on failure.
  std::string Infer(int q, const std::string& unit) {
    v1::InferRequest request;
    v1::ChatMessage* message = request.add_messages();
    message->set_role(v1::ROLE_USER);
    const auto& [task, question] = Questions()[q % Questions().size()];
    message->set_content(question);
    request.set_task(task);
    request.set_unit_id(unit);
    v1::InferResponse response;
    grpc::Status status = v1::Gateway::NewStub(channel_)->Infer(
        Context().get(), request, &response);
    return status.ok() ? response.request_id() : "";
  }
  grpc::Status Feedback(const std::string& id, bool correct) {
    v1::FeedbackRequest request;
    request.set_request_id(id);
    request.set_correct(correct);
    v1::FeedbackResponse response;
    return v1::Gateway::NewStub(channel_)->Feedback(Context().get(), request,
                                                    &response);
  }
  // Requests with feedback on two of three, over 40 experiment units.
  void Traffic(int n) {
    for (int i = 0; i < n; ++i) {
      const std::string id = Infer(i, absl::StrCat("user-", i % 40));
      ASSERT_FALSE(id.empty()) << "request " << i;
      ASSERT_TRUE(Feedback(id, i % 3 != 0).ok()) << "feedback " << i;
    }
  }

  v1::GetRouteStatsResponse Stats() {
    v1::GetRouteStatsResponse response;
    EXPECT_TRUE(v1::Admin::NewStub(channel_)
                    ->GetRouteStats(Context().get(), {}, &response)
                    .ok());
    return response;
  }
  v1::GetEconomicsResponse Economics() {
    v1::GetEconomicsResponse response;
    EXPECT_TRUE(v1::Admin::NewStub(channel_)
                    ->GetEconomics(Context().get(), {}, &response)
                    .ok());
    return response;
  }
  v1::ExperimentAnalysis Experiment() {
    v1::GetExperimentRequest request;
    request.set_name("prompt-vs-rag");
    v1::ExperimentAnalysis response;
    EXPECT_TRUE(v1::Admin::NewStub(channel_)
                    ->GetExperiment(Context().get(), request, &response)
                    .ok());
    return response;
  }
  static int64_t FeedbackCount(const v1::GetRouteStatsResponse& stats) {
    int64_t n = 0;
    for (const v1::RouteTaskStats& cell : stats.stats()) {
      n += cell.feedback_count();
    }
    return n;
  }

  static inline int counter_ = 0;
  std::filesystem::path dir_;
  int configs_ = 0;
  std::string quickstart_;
  ServingGateway gateway_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(StateTest, SigtermAndRestartKeepStatisticsEconomicsAndExperiments) {
  Start();
  Traffic(240);
  const v1::GetRouteStatsResponse stats = Stats();
  const v1::GetEconomicsResponse economics = Economics();
  const v1::ExperimentAnalysis experiment = Experiment();
  ASSERT_EQ(gateway_.process->Stop(), 0) << gateway_.process->Output();

  Start();
  EXPECT_THAT(gateway_.process->Output(), HasSubstr("state: restored "));
  const v1::GetRouteStatsResponse stats_after = Stats();
  ASSERT_EQ(stats_after.stats_size(), stats.stats_size());
  EXPECT_EQ(FeedbackCount(stats), 240);
  for (int i = 0; i < stats.stats_size(); ++i) {
    const v1::RouteTaskStats& a = stats.stats(i);
    const v1::RouteTaskStats& b = stats_after.stats(i);
    SCOPED_TRACE(absl::StrCat(a.route(), "/", a.task()));
    EXPECT_EQ(b.route(), a.route());
    EXPECT_EQ(b.task(), a.task());
    EXPECT_EQ(b.requests(), a.requests());
    EXPECT_EQ(b.errors(), a.errors());
    EXPECT_EQ(b.input_tokens(), a.input_tokens());
    EXPECT_EQ(b.output_tokens(), a.output_tokens());
    EXPECT_NEAR(b.cost_usd(), a.cost_usd(), 1e-12);
    EXPECT_EQ(b.feedback_count(), a.feedback_count());
    EXPECT_DOUBLE_EQ(b.accuracy(), a.accuracy());
    EXPECT_DOUBLE_EQ(b.latency_p50_seconds(), a.latency_p50_seconds());
    EXPECT_DOUBLE_EQ(b.latency_p99_seconds(), a.latency_p99_seconds());
    // Evidence decays (half-life 1 h) over the seconds of the restart.
    EXPECT_NEAR(b.recent_feedback(), a.recent_feedback(),
                a.recent_feedback() * 0.01);
    EXPECT_NEAR(b.estimated_accuracy(), a.estimated_accuracy(), 0.01);
  }

  const v1::GetEconomicsResponse economics_after = Economics();
  EXPECT_GE(economics_after.uptime_seconds(), economics.uptime_seconds());
  ASSERT_EQ(economics_after.routes_size(), economics.routes_size());
  for (int r = 0; r < economics.routes_size(); ++r) {
    const v1::RouteEconomics& a = economics.routes(r);
    const v1::RouteEconomics& b = economics_after.routes(r);
    SCOPED_TRACE(a.route());
    EXPECT_EQ(b.requests(), a.requests());
    EXPECT_NEAR(b.request_cost().total_usd(), a.request_cost().total_usd(),
                1e-12);
    EXPECT_EQ(b.judged(), a.judged());
    EXPECT_DOUBLE_EQ(b.correct(), a.correct());
    // Hosting ($0.40 an hour) goes on accruing through the restart, once.
    EXPECT_GE(b.hosting_usd(), a.hosting_usd());
    EXPECT_NEAR(b.hosting_usd(), a.hosting_usd(), 0.01);
    EXPECT_NEAR(b.breakeven().savings_usd(), a.breakeven().savings_usd(), 0.01);
    EXPECT_NEAR(b.breakeven().recovered_share(),
                a.breakeven().recovered_share(), 0.001);
  }

  const v1::ExperimentAnalysis experiment_after = Experiment();
  ASSERT_EQ(experiment_after.arms_size(), experiment.arms_size());
  int64_t units = 0;
  for (int a = 0; a < experiment.arms_size(); ++a) {
    EXPECT_EQ(experiment_after.arms(a).requests(),
              experiment.arms(a).requests());
    EXPECT_EQ(experiment_after.arms(a).feedback(),
              experiment.arms(a).feedback());
    EXPECT_DOUBLE_EQ(experiment_after.arms(a).accuracy(),
                     experiment.arms(a).accuracy());
    units += experiment.arms(a).requests();
  }
  EXPECT_GT(units, 0);
  EXPECT_EQ(experiment_after.verdict(), experiment.verdict());
}

TEST_F(StateTest, FeedbackCountedBeforeARestartIsAlreadyExistsAfter) {
  Start();
  const std::string id = Infer(0, "");
  ASSERT_TRUE(Feedback(id, true).ok());
  EXPECT_EQ(Feedback(id, true).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  ASSERT_EQ(gateway_.process->Stop(), 0);
  Start();
  grpc::Status again = Feedback(id, false);
  EXPECT_EQ(again.error_code(), grpc::StatusCode::ALREADY_EXISTS)
      << again.error_message();
  EXPECT_EQ(FeedbackCount(Stats()), 1);
}

TEST_F(StateTest, IdsIssuedBeforeARestartAreCreditedAfterIt) {
  // No key is configured: the one made at first start is in the state file.
  Start();
  const std::string id = Infer(1, "");
  ASSERT_FALSE(id.empty());
  ASSERT_EQ(gateway_.process->Stop(), 0);
  Start();
  grpc::Status feedback = Feedback(id, true);
  EXPECT_TRUE(feedback.ok()) << feedback.error_message();
  EXPECT_EQ(FeedbackCount(Stats()), 1);
}

TEST_F(StateTest, ExportAndImportMoveADeployment) {
  Start();
  Traffic(30);
  const std::string unjudged = Infer(2, "");
  const v1::GetRouteStatsResponse stats = Stats();
  ASSERT_EQ(gateway_.process->Stop(), 0);
  // Exported, imported into a new file, served from there.
  const std::string exported = (dir_ / "state.json").string();
  const std::string moved = (dir_ / "moved" / "state.db").string();
  auto run = [&](std::vector<std::string> args) {
    const testing::CommandResult result =
        testing::RunCommand(ARBITER_BINARY, std::move(args));
    EXPECT_EQ(result.exit_code, 0) << result.output;
  };
  run({"state", "export", "--state", (dir_ / "state.db").string(), "--output",
       exported});
  run({"state", "import", exported, "--state", moved});
  Start(absl::StrReplaceAll(quickstart_,
                            {{(dir_ / "state.db").string(), moved}}));
  const v1::GetRouteStatsResponse after = Stats();
  ASSERT_EQ(after.stats_size(), stats.stats_size());
  for (int i = 0; i < stats.stats_size(); ++i) {
    EXPECT_EQ(after.stats(i).requests(), stats.stats(i).requests());
    EXPECT_EQ(after.stats(i).feedback_count(), stats.stats(i).feedback_count());
  }
  // The key moved with the state: ids issued before still verify.
  EXPECT_TRUE(Feedback(unjudged, true).ok());
}

TEST_F(StateTest, SigkillUnderLoadLosesAtMostTheBatchWindowAndNothingTwice) {
  Start();
  // Four clients send requests and feedback until the kill; each feedback
  // acknowledged is noted with the time of its answer.
  std::mutex mu;
  std::vector<std::pair<std::string, absl::Time>> acked;
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; !stop; ++i) {
        const std::string id = Infer(i + c, "");
        if (id.empty() || !Feedback(id, i % 2 == 0).ok()) continue;
        const absl::Time now = absl::Now();
        std::lock_guard lock(mu);
        acked.emplace_back(id, now);
      }
    });
  }
  absl::SleepFor(absl::Seconds(2));
  const absl::Time killed = absl::Now();
  gateway_.process->Signal(SIGKILL);
  gateway_.process->Wait();
  stop = true;
  for (std::thread& client : clients) client.join();
  ASSERT_GT(acked.size(), 50u);

  Start();
  const int64_t kept = FeedbackCount(Stats());
  // Acknowledged more than the batch window (100 ms, and as long again for
  // the commit itself) before the kill: kept.
  int64_t before_window = 0;
  for (const auto& [id, at] : acked) {
    if (at < killed - absl::Milliseconds(200)) ++before_window;
  }
  EXPECT_GE(kept, before_window);
  EXPECT_LE(kept, static_cast<int64_t>(acked.size()));
  // Sending every acknowledged feedback again counts only what was lost:
  // one count per request in the end, none twice.
  int64_t recounted = 0;
  for (const auto& [id, at] : acked) {
    grpc::Status status = Feedback(id, true);
    if (status.ok()) {
      ++recounted;
    } else {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS)
          << status.error_message();
    }
  }
  EXPECT_EQ(kept + recounted, static_cast<int64_t>(acked.size()));
  EXPECT_EQ(FeedbackCount(Stats()), static_cast<int64_t>(acked.size()));
}

TEST_F(StateTest, ConfigChangesBetweenStartsAreHandledByName) {
  Start();
  Traffic(60);
  std::map<std::string, int64_t> requests;
  const v1::GetRouteStatsResponse first = Stats();
  for (const v1::RouteTaskStats& cell : first.stats()) {
    requests[cell.route()] += cell.requests();
  }
  ASSERT_GT(requests["prompted"] + requests["fine-tuned"], 0);
  ASSERT_EQ(gateway_.process->Stop(), 0);

  // "rag" is gone (and the experiment that used it), "fine-tuned" serves a
  // new model and starts over, "prompted" keeps its statistics.
  std::string next = absl::StrReplaceAll(
      quickstart_, {{"    model: quill-small-ft\n",
                     "    model: quill-large\n    reset_statistics: true\n"}});
  const size_t rag = next.find("  - name: rag\n");
  const size_t policy = next.find("\npolicy:");
  ASSERT_NE(rag, std::string::npos);
  next.erase(rag, policy + 1 - rag);
  const size_t experiments = next.find("\nexperiments:");
  const size_t state = next.find("\n# What the gateway learns");
  ASSERT_NE(state, std::string::npos);
  next.erase(experiments + 1, state - experiments);
  Start(next);
  const std::string log = gateway_.process->Output();
  EXPECT_THAT(log, HasSubstr("route fine-tuned: backend/model changed from "
                             "sim/quill-small-ft to sim/quill-large; its "
                             "statistics start over"));
  EXPECT_THAT(log, HasSubstr("not in the config, kept on disk but not "
                             "served: routes rag"));
  EXPECT_THAT(log, HasSubstr("experiments prompt-vs-rag"));
  std::map<std::string, int64_t> after;
  const v1::GetRouteStatsResponse second = Stats();
  for (const v1::RouteTaskStats& cell : second.stats()) {
    after[cell.route()] += cell.requests();
  }
  EXPECT_EQ(after["prompted"], requests["prompted"]);
  EXPECT_EQ(after["fine-tuned"], 0);
  EXPECT_EQ(after.count("rag"), 0u);
  ASSERT_EQ(gateway_.process->Stop(), 0);

  // Back to the first config: rag's statistics were kept on disk.
  Start();
  std::map<std::string, int64_t> again;
  const v1::GetRouteStatsResponse third = Stats();
  for (const v1::RouteTaskStats& cell : third.stats()) {
    again[cell.route()] += cell.requests();
  }
  EXPECT_EQ(again["rag"], requests["rag"]);
  EXPECT_EQ(again["prompted"], requests["prompted"]);
}

TEST_F(StateTest, ASecondGatewayOnTheSameStateFileRefusesToStart) {
  Start();
  const std::string path = (dir_ / "second.yaml").string();
  std::ofstream(path) << quickstart_;
  auto second = testing::Subprocess::Start(
      {ARBITER_BINARY, "serve", "--config", path, "--grpc-listen",
       "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--http-listen",
       "127.0.0.1:0"});
  ASSERT_TRUE(second.ok());
  EXPECT_EQ((*second)->Wait(), 1);
  EXPECT_THAT((*second)->Output(), HasSubstr("in use by another arbiter"));
  EXPECT_FALSE(Infer(0, "").empty()) << "the first one serves on";
}

}  // namespace
}  // namespace arbiter
