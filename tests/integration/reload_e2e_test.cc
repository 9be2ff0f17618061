// A real `arbiter serve` whose config file changes under it: SIGHUP and
// Admin/ReloadConfig swap the new config in without dropping a request.
// Statistics and feedback carry over by name, a new route serves at once,
// an unchanged backend is kept, a request in flight finishes on the config
// it began with, and a bad config is refused whole with the old one kept.

#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/slow_backend.h"
#include "tests/integration/subprocess.h"

namespace arbiter {
namespace {

using ::arbiter::testing::MetricSample;
using ::arbiter::testing::ServingGateway;
using ::arbiter::testing::SlowBackend;
using ::arbiter::testing::StartServe;
using ::testing::HasSubstr;

struct Answer {
  int status = 0;
  nlohmann::json body;
};

class ReloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat(
               "arbiter-reload-", getpid(), "-",
               ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    config_path_ = (dir_ / "arbiter.yaml").string();
  }
  void TearDown() override {
    channel_.reset();  // An open channel would hold the drain up.
    gateway_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Routes `a` (simulator) and `slow` (the slow backend), plus `extra`.
  std::string Config(double a_input_price, const std::string& extra_routes,
                     const std::string& server = "{}",
                     double slow_timeout = 5) const {
    return absl::StrReplaceAll(
        R"yaml(
tasks: [faq]
server: SERVER
state: {path: STATE}
backends:
  - name: sim
    sim:
      seed: 7
      time_to_first_token_seconds: 0
      seconds_per_token: 0
      output_tokens: 4
      dataset: DATASET
      models: [{name: m, accuracy: 0.7}]
  - name: slow
    openai:
      base_url: "http://127.0.0.1:PORT/v1"
      timeout_seconds: TIMEOUT
routes:
  - name: a
    kind: prompted
    backend: sim
    model: m
    pricing: {input_usd_per_mtok: PRICE, output_usd_per_mtok: 1}
  - {name: slow, kind: fine_tuned, backend: slow, model: m}
EXTRA
policy:
  pinned: {route: a}
)yaml",
        {{"SERVER", server},
         {"STATE", (dir_ / "state.db").string()},
         {"DATASET", ARBITER_SOURCE_DIR "/quickstart/questions.jsonl"},
         {"PORT", std::to_string(backend_.port())},
         {"TIMEOUT", absl::StrCat(slow_timeout)},
         {"PRICE", absl::StrCat(a_input_price)},
         {"EXTRA", extra_routes}});
  }

  void Write(const std::string& text) const {
    std::ofstream(config_path_ + ".tmp") << text;
    std::filesystem::rename(config_path_ + ".tmp", config_path_);
  }

  void Start(const std::string& text) {
    Write(text);
    auto gateway = StartServe(ARBITER_BINARY, {"--config", config_path_});
    ASSERT_TRUE(gateway.ok()) << gateway.status();
    gateway_ = std::make_unique<ServingGateway>(*std::move(gateway));
    channel_ = grpc::CreateChannel(gateway_->target(),
                                   grpc::InsecureChannelCredentials());
  }

  Answer Chat(const std::string& model) const {
    nlohmann::json body = {
        {"model", model},
        {"messages", {{{"role", "user"}, {"content", "How do I reset it?"}}}}};
    httplib::Client client("127.0.0.1", gateway_->http_port);
    client.set_read_timeout(20, 0);
    auto result =
        client.Post("/v1/chat/completions", body.dump(), "application/json");
    Answer answer;
    if (!result) return answer;
    answer.status = result->status;
    answer.body = nlohmann::json::parse(result->body, nullptr, false);
    return answer;
  }

  int Feedback(const std::string& request_id) const {
    httplib::Client client("127.0.0.1", gateway_->http_port);
    nlohmann::json body = {{"request_id", request_id}, {"correct", true}};
    auto result = client.Post("/v1/feedback", body.dump(), "application/json");
    return result ? result->status : 0;
  }

  std::string Metrics() const {
    httplib::Client client("127.0.0.1", gateway_->metrics_port);
    auto result = client.Get("/metrics");
    return result ? result->body : "";
  }

  grpc::Status Reload(v1::ReloadConfigResponse* response) const {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(30));
    return v1::Admin::NewStub(channel_)->ReloadConfig(
        &context, v1::ReloadConfigRequest(), response);
  }

  // Requests and feedback of each route, by route.
  std::map<std::string, std::pair<int64_t, int64_t>> Stats() const {
    grpc::ClientContext context;
    v1::GetRouteStatsResponse response;
    v1::Admin::NewStub(channel_)->GetRouteStats(
        &context, v1::GetRouteStatsRequest(), &response);
    std::map<std::string, std::pair<int64_t, int64_t>> stats;
    for (const v1::RouteTaskStats& cell : response.stats()) {
      stats[cell.route()] = {cell.requests(), cell.feedback_count()};
    }
    return stats;
  }

  std::string ConfigHash() const {
    const std::string metrics = Metrics();
    const std::string key = "arbiter_config_info{hash=\"";
    const size_t at = metrics.find(key);
    if (at == std::string::npos) return "";
    return metrics.substr(at + key.size(), 12);
  }

  SlowBackend backend_{std::chrono::milliseconds(300), "slow"};
  std::filesystem::path dir_;
  std::string config_path_;
  std::unique_ptr<ServingGateway> gateway_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(ReloadTest, SighupSwapsTheConfigInKeepingWhatWasLearned) {
  ASSERT_NO_FATAL_FAILURE(Start(Config(3.0, "")));
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    const Answer answer = Chat("a");
    ASSERT_EQ(answer.status, 200) << answer.body;
    ids.push_back(answer.body["arbiter"]["request_id"]);
  }
  ASSERT_EQ(Feedback(ids[0]), 200);
  const std::string hash_before = ConfigHash();
  ASSERT_FALSE(hash_before.empty());
  const double cost_before = Chat("a").body["arbiter"]["cost_usd"];

  // Dearer input, and a route added.
  Write(Config(30.0, "  - {name: c, kind: prompted, backend: sim, model: m}"));
  gateway_->process->Signal(SIGHUP);
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  while (MetricSample(Metrics(), "arbiter_config_reloads_total",
                      {{"outcome", "applied"}}) < 1 &&
         absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ(MetricSample(Metrics(), "arbiter_config_reloads_total",
                         {{"outcome", "applied"}}),
            1)
      << gateway_->process->Output();
  const std::string hash_after = ConfigHash();
  EXPECT_NE(hash_after, hash_before);
  EXPECT_EQ(
      MetricSample(Metrics(), "arbiter_config_info", {{"hash", hash_before}}),
      -1)
      << "the old config's series is gone";

  // What route a learned is still there; the new route starts at zero.
  auto stats = Stats();
  EXPECT_EQ(stats["a"].first, 6);
  EXPECT_EQ(stats["a"].second, 1);
  EXPECT_EQ(stats["c"].first, 0);
  const Answer added = Chat("c");
  EXPECT_EQ(added.status, 200) << added.body;
  const double cost_after = Chat("a").body["arbiter"]["cost_usd"];
  EXPECT_GT(cost_after, cost_before) << "the new prices hold";

  // Feedback for answers given before the reload: counted once, still.
  EXPECT_EQ(Feedback(ids[0]), 409);
  EXPECT_EQ(Feedback(ids[1]), 200);
  EXPECT_EQ(Feedback(ids[1]), 409);
  EXPECT_EQ(Stats()["a"].second, 2);
}

TEST_F(ReloadTest, AReloadNamesWhatItKeptAndARequestInFlightFinishes) {
  ASSERT_NO_FATAL_FAILURE(Start(Config(3.0, "")));
  v1::ReloadConfigResponse response;
  Write(Config(3.0, "  - {name: b, kind: prompted, backend: sim, model: m}"));
  ASSERT_TRUE(Reload(&response).ok());
  EXPECT_EQ(response.config_hash(), ConfigHash());
  EXPECT_THAT(absl::StrJoin(response.changes(), "\n"),
              HasSubstr("routes added: b"));
  EXPECT_THAT(absl::StrJoin(response.changes(), "\n"),
              HasSubstr("backends kept (connections and health): sim, slow"));
  // Kept for real: the next request rides the connection the last one used.
  ASSERT_EQ(Chat("slow").status, 200);
  const int connection = backend_.last_client_port();
  ASSERT_TRUE(Reload(&response).ok());
  ASSERT_EQ(Chat("slow").status, 200);
  EXPECT_EQ(backend_.last_client_port(), connection);

  // A request on `slow` is in flight when its route goes away.
  Answer in_flight;
  std::thread client([&] { in_flight = Chat("slow"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  Write(absl::StrReplaceAll(Config(3.0, "", "{}", 7),
                            {{"  - {name: slow, kind: fine_tuned, backend: "
                              "slow, model: m}\n",
                              ""}}));
  ASSERT_TRUE(Reload(&response).ok());
  EXPECT_THAT(absl::StrJoin(response.changes(), "\n"),
              HasSubstr("routes removed: slow, b"));
  EXPECT_THAT(absl::StrJoin(response.changes(), "\n"),
              HasSubstr("backends made new: slow"));
  client.join();
  EXPECT_EQ(in_flight.status, 200) << in_flight.body;
  EXPECT_EQ(in_flight.body["arbiter"]["route"], "slow");
  EXPECT_EQ(Chat("slow").status, 404);
  EXPECT_EQ(Chat("a").status, 200);
  // From the command line: nothing changed this time.
  const auto command = ::arbiter::testing::RunCommand(
      ARBITER_BINARY, {"reload", "--target", gateway_->target()});
  EXPECT_EQ(command.exit_code, 0) << command.output;
  EXPECT_THAT(command.output,
              HasSubstr(absl::StrCat("reloaded: config hash ", ConfigHash())));
}

TEST_F(ReloadTest, ABadConfigIsRefusedWholeAndTheRunningOneStays) {
  ASSERT_NO_FATAL_FAILURE(Start(Config(3.0, "")));
  const std::string hash = ConfigHash();
  // Two mistakes: both are named.
  Write(Config(3.0,
               "  - {name: d, kind: rgs, backend: sim, model: m}\n"
               "  - {name: e, kind: prompted, backend: sim, modle: m}"));
  v1::ReloadConfigResponse response;
  grpc::Status refused = Reload(&response);
  EXPECT_EQ(refused.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(refused.error_message(), HasSubstr("rgs"));
  EXPECT_THAT(refused.error_message(), HasSubstr("modle"));
  // A setting only a restart changes.
  Write(Config(3.0, "", "{max_in_flight: 7}"));
  refused = Reload(&response);
  EXPECT_EQ(refused.error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_THAT(refused.error_message(), HasSubstr("server.max_in_flight"));
  EXPECT_EQ(MetricSample(Metrics(), "arbiter_config_reloads_total",
                         {{"outcome", "refused"}}),
            2);
  EXPECT_EQ(ConfigHash(), hash);
  EXPECT_EQ(Chat("a").status, 200);
  // The command line says the same.
  const auto command = ::arbiter::testing::RunCommand(
      ARBITER_BINARY, {"reload", "--target", gateway_->target()});
  EXPECT_EQ(command.exit_code, 1);
  EXPECT_THAT(command.output, HasSubstr("server.max_in_flight"));
  // A file that is not there at all.
  std::filesystem::remove(config_path_);
  refused = Reload(&response);
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(refused.error_message(), HasSubstr(config_path_));
  EXPECT_EQ(Chat("a").status, 200);
}

TEST_F(ReloadTest, ARouteRemovedAndAddedBackKeepsWhatItLearned) {
  const std::string with_c =
      "  - {name: c, kind: prompted, backend: sim, model: m}";
  ASSERT_NO_FATAL_FAILURE(Start(Config(3.0, with_c)));
  for (int i = 0; i < 3; ++i) ASSERT_EQ(Chat("c").status, 200);
  v1::ReloadConfigResponse response;
  Write(Config(3.0, ""));
  ASSERT_TRUE(Reload(&response).ok());
  EXPECT_EQ(Chat("c").status, 404);
  Write(Config(3.0, with_c));
  ASSERT_TRUE(Reload(&response).ok());
  EXPECT_EQ(Stats()["c"].first, 3);
}

TEST_F(ReloadTest, StatisticsCarriedOverByAReloadSurviveARestart) {
  ASSERT_NO_FATAL_FAILURE(Start(Config(3.0, "")));
  for (int i = 0; i < 3; ++i) ASSERT_EQ(Chat("a").status, 200);
  Write(Config(3.0, "  - {name: c, kind: prompted, backend: sim, model: m}"));
  v1::ReloadConfigResponse response;
  ASSERT_TRUE(Reload(&response).ok());
  ASSERT_EQ(Chat("a").status, 200);
  ASSERT_EQ(Chat("c").status, 200);
  channel_.reset();
  EXPECT_EQ(gateway_->process->Stop(), 0);
  ASSERT_NO_FATAL_FAILURE(Start(
      Config(3.0, "  - {name: c, kind: prompted, backend: sim, model: m}")));
  auto stats = Stats();
  EXPECT_EQ(stats["a"].first, 4);
  EXPECT_EQ(stats["c"].first, 1);
}

}  // namespace
}  // namespace arbiter
