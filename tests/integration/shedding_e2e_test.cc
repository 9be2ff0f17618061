// A real `arbiter serve` under more load than it may take: past
// server.max_in_flight a request is refused at once with 429 naming the
// bound; a backend whose connections are busy sheds what waits longer than
// max_queue_wait_ms; a request's own deadline (x-arbiter-timeout-ms,
// arbiter.timeout_ms, the gRPC deadline) ends it with 504 /
// DEADLINE_EXCEEDED on time. Every refusal is counted with its reason.

#include <httplib.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
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

// `slow`: the simulator answering after 1 s; `narrow`: one connection to
// the slow backend, waiting at most 100 ms for it, ejected by one failure;
// `queued`: one connection to it with no bound on the wait and a 0.8 s
// timeout.
std::string GatewayConfig(int backend_port) {
  return absl::StrReplaceAll(
      R"yaml(
tasks: [faq]
server: {max_in_flight: 4}
backends:
  - name: slow_sim
    sim:
      seed: 7
      time_to_first_token_seconds: 1
      seconds_per_token: 0
      output_tokens: 4
      dataset: DATASET
      models: [{name: m, accuracy: 0.7}]
  - name: narrow
    openai:
      base_url: "http://127.0.0.1:PORT/v1"
      timeout_seconds: 5
      max_connections: 1
      max_queue_wait_ms: 100
    outlier_detection: {consecutive_failures: 1}
  - name: queued
    openai:
      base_url: "http://127.0.0.1:PORT/v1"
      timeout_seconds: 0.8
      max_connections: 1
    outlier_detection: {consecutive_failures: 1}
routes:
  - {name: slow, kind: prompted, backend: slow_sim, model: m}
  - {name: narrow, kind: fine_tuned, backend: narrow, model: m}
  - {name: queued, kind: prompted, backend: queued, model: m}
policy:
  pinned: {route: slow}
)yaml",
      {{"PORT", std::to_string(backend_port)},
       {"DATASET", ARBITER_SOURCE_DIR "/quickstart/questions.jsonl"}});
}

struct Answer {
  int status = 0;
  nlohmann::json body;
  absl::Duration took;
};

class SheddingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    backend_ = new SlowBackend(std::chrono::milliseconds(500), "late");
    config_path_ =
        new std::string((std::filesystem::temp_directory_path() /
                         absl::StrCat("arbiter-shedding-", getpid(), ".yaml"))
                            .string());
    std::ofstream(*config_path_) << GatewayConfig(backend_->port());
    auto gateway = StartServe(ARBITER_BINARY, {"--config", *config_path_});
    if (!gateway.ok())
      return ::arbiter::testing::SuiteSetupFailed(gateway.status());
    gateway_ = new ServingGateway(*std::move(gateway));
  }

  static void TearDownTestSuite() {
    delete gateway_;
    delete backend_;
    std::filesystem::remove(*config_path_);
    delete config_path_;
  }

  void SetUp() override {
    ASSERT_TRUE(::arbiter::testing::SuiteSetupStatus().ok())
        << ::arbiter::testing::SuiteSetupStatus();
    ASSERT_NE(gateway_, nullptr) << "the gateway did not start";
  }

  static Answer Chat(const std::string& model, const httplib::Headers& headers,
                     nlohmann::json extra = nlohmann::json::object()) {
    nlohmann::json body = {
        {"model", model},
        {"messages", {{{"role", "user"}, {"content", "How do I reset it?"}}}}};
    body.update(extra);
    httplib::Client client("127.0.0.1", gateway_->http_port);
    client.set_read_timeout(20, 0);
    const absl::Time start = absl::Now();
    auto result = client.Post("/v1/chat/completions", headers, body.dump(),
                              "application/json");
    Answer answer;
    answer.took = absl::Now() - start;
    if (!result) return answer;
    answer.status = result->status;
    answer.body = nlohmann::json::parse(result->body, nullptr, false);
    return answer;
  }

  static std::string ErrorMessage(const Answer& answer) {
    return answer.body.value("/error/message"_json_pointer, std::string());
  }

  static std::string Metrics() {
    httplib::Client client("127.0.0.1", gateway_->metrics_port);
    auto result = client.Get("/metrics");
    return result ? result->body : "";
  }

  static SlowBackend* backend_;
  static std::string* config_path_;
  static ServingGateway* gateway_;
};

SlowBackend* SheddingTest::backend_ = nullptr;
std::string* SheddingTest::config_path_ = nullptr;
ServingGateway* SheddingTest::gateway_ = nullptr;

TEST_F(SheddingTest, PastMaxInFlightARequestIsRefusedAtOnceNamingTheBound) {
  std::vector<Answer> held(4);
  std::vector<std::thread> clients;
  for (Answer& answer : held) {
    clients.emplace_back([&answer] { answer = Chat("slow", {}); });
  }
  // The four take a second each; they are all in flight well before.
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  const Answer refused = Chat("slow", {});
  for (std::thread& client : clients) client.join();
  EXPECT_EQ(refused.status, 429) << refused.body;
  EXPECT_THAT(ErrorMessage(refused),
              HasSubstr("4 requests in flight, its limit "
                        "(server.max_in_flight)"));
  EXPECT_LT(refused.took, absl::Milliseconds(300)) << "refused at once";
  for (const Answer& answer : held) EXPECT_EQ(answer.status, 200);
  EXPECT_GE(MetricSample(
                Metrics(), "arbiter_rejected_requests_total",
                {{"code", "resource_exhausted"}, {"reason", "max_in_flight"}}),
            1);
  // Room again once they ended.
  EXPECT_EQ(Chat("slow", {}).status, 200);
}

TEST_F(SheddingTest, ARequestsTimeoutEndsItWith504OnTime) {
  const Answer header = Chat("slow", {{"x-arbiter-timeout-ms", "200"}});
  EXPECT_EQ(header.status, 504) << header.body;
  EXPECT_EQ(ErrorMessage(header),
            "the request's deadline (200ms after it arrived) passed while "
            "backend \"slow_sim\" was answering");
  EXPECT_GE(header.took, absl::Milliseconds(190));
  EXPECT_LT(header.took, absl::Milliseconds(700));  // The answer takes 1 s.
  const Answer body = Chat("slow", {}, {{"arbiter", {{"timeout_ms", 300}}}});
  EXPECT_EQ(body.status, 504) << body.body;
  EXPECT_GE(body.took, absl::Milliseconds(290));
  EXPECT_LT(body.took, absl::Milliseconds(800));
  const Answer bad = Chat("slow", {{"x-arbiter-timeout-ms", "-1"}});
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(ErrorMessage(bad), HasSubstr("x-arbiter-timeout-ms"));
  // gRPC's own deadline does the same.
  auto stub = v1::Gateway::NewStub(grpc::CreateChannel(
      gateway_->target(), grpc::InsecureChannelCredentials()));
  v1::InferRequest request;
  v1::ChatMessage* message = request.add_messages();
  message->set_role(v1::ROLE_USER);
  message->set_content("How do I reset it?");
  request.set_route("slow");
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(250));
  v1::InferResponse response;
  const absl::Time start = absl::Now();
  const grpc::Status status = stub->Infer(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::DEADLINE_EXCEEDED);
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(750));
}

TEST_F(SheddingTest, ABackendShedsWhatWaitsLongerThanMaxQueueWait) {
  Answer first;
  std::thread client([&first] { first = Chat("narrow", {}); });
  // The one connection is taken for 500 ms.
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  const Answer second = Chat("narrow", {});
  client.join();
  EXPECT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(second.status, 429) << second.body;
  EXPECT_THAT(ErrorMessage(second),
              HasSubstr("no connection free within 100ms"));
  EXPECT_THAT(ErrorMessage(second), HasSubstr("max_queue_wait_ms"));
  EXPECT_GE(second.took, absl::Milliseconds(95));
  EXPECT_LT(second.took, absl::Milliseconds(400));
  EXPECT_GE(MetricSample(
                Metrics(), "arbiter_rejected_requests_total",
                {{"code", "resource_exhausted"}, {"reason", "backend_queue"}}),
            1);
  // A deadline that ends while the request still waits says so.
  Answer holder;
  std::thread busy([&holder] { holder = Chat("narrow", {}); });
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  const Answer waiting = Chat("narrow", {{"x-arbiter-timeout-ms", "50"}});
  busy.join();
  EXPECT_EQ(holder.status, 200);
  EXPECT_EQ(waiting.status, 504) << waiting.body;
  EXPECT_THAT(ErrorMessage(waiting),
              HasSubstr("still waiting for a connection"));
  EXPECT_GE(MetricSample(
                Metrics(), "arbiter_rejected_requests_total",
                {{"code", "deadline_exceeded"}, {"reason", "backend_queue"}}),
            1);
  // Shed by the gateway's own queue: not the backend's failure.
  EXPECT_EQ(
      MetricSample(Metrics(), "arbiter_backend_up", {{"backend", "narrow"}}),
      1);
  EXPECT_EQ(Chat("narrow", {}).status, 200);
}

TEST_F(SheddingTest, ATimeoutTheGatewaysQueueCausedDoesNotEjectTheBackend) {
  Answer first;
  std::thread client([&first] { first = Chat("queued", {}); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  // Waits ~450 ms for the connection, then has ~350 ms of a 500 ms answer.
  const Answer second = Chat("queued", {});
  client.join();
  EXPECT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(second.status, 504) << second.body;
  EXPECT_THAT(ErrorMessage(second), HasSubstr("before a connection was free"));
  // The backend answered at its usual speed: it stays in.
  EXPECT_EQ(
      MetricSample(Metrics(), "arbiter_backend_up", {{"backend", "queued"}}),
      1);
  EXPECT_EQ(Chat("queued", {}).status, 200);
}

}  // namespace
}  // namespace arbiter
