// A real `arbiter serve` with two routes on two backends, one of them dead:
// requests the policy sends to the dead route are answered by the other,
// each attempt is recorded, the dead backend is ejected after its failures
// and returns through probes once it answers again; a pin falls back only
// when the request allows it.

#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/subprocess.h"

namespace arbiter {
namespace {

using ::arbiter::testing::MetricSample;
using ::arbiter::testing::StartServe;
using ::arbiter::testing::Subprocess;
using ::testing::HasSubstr;
using ::testing::Not;

// An OpenAI-compatible backend on `port` (0: the OS chooses) answering
// every request with `text`, plain or streamed; `status` other than 200
// answers that HTTP status instead.
class LiveBackend final {
 public:
  explicit LiveBackend(std::string text, int port = 0)
      : text_(std::move(text)) {
    server_.Post("/v1/chat/completions", [this](const httplib::Request& request,
                                                httplib::Response& response) {
      ++calls_;
      if (fail_next_.fetch_sub(1) > 0) {
        response.status = fail_status_;
        if (!retry_after_.empty()) {
          response.set_header("Retry-After", retry_after_);
        }
        response.set_content(R"({"error":{"message":"not now"}})",
                             "application/json");
        return;
      }
      if (status_ != 200) {
        response.status = status_;
        response.set_content(R"({"error":{"message":"busy"}})",
                             "application/json");
        return;
      }
      if (absl::StrContains(request.body, "\"stream\":true")) {
        const std::string events = absl::StrCat(
            "data: {\"choices\":[{\"delta\":{\"content\":\"", text_,
            "\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],"
            "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\n",
            "data: [DONE]\n\n");
        response.set_content(events, "text/event-stream");
        return;
      }
      response.set_content(
          absl::StrCat(
              R"({"choices":[{"message":{"role":"assistant","content":")",
              text_,
              R"("},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1}})"),
          "application/json");
    });
    // Short, so that stopping does not wait on an idle kept-alive client.
    server_.set_keep_alive_timeout(1);
    port_ = port == 0 ? server_.bind_to_any_port("127.0.0.1")
                      : (server_.bind_to_port("127.0.0.1", port) ? port : -1);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (port_ > 0 && !server_.is_running()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  ~LiveBackend() {
    server_.stop();
    thread_.join();
  }

  int port() const { return port_; }
  int calls() const { return calls_; }
  void AnswerStatus(int status) { status_ = status; }
  // The next `count` calls get `status`, with Retry-After when not empty;
  // set before traffic, while the server is idle.
  void FailNext(int count, int status, std::string retry_after = "") {
    fail_status_ = status;
    retry_after_ = std::move(retry_after);
    fail_next_ = count;
  }

 private:
  const std::string text_;
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<int> calls_{0};
  std::atomic<int> status_{200};
  std::atomic<int> fail_next_{0};
  std::atomic<int> fail_status_{200};
  std::string retry_after_;
};

// A loopback port nothing listens on: connections to it are refused.
int DeadPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

// `extra` holds more backends and routes (see FallbackRoutes...);
// `primary_fallback` the primary route's fallback_routes, if any.
struct Extra {
  std::string backends;
  std::string routes;
  std::string primary_fallback;
};

std::string GatewayConfig(int dead_port, int live_port,
                          const Extra& extra = {}) {
  return absl::StrReplaceAll(R"yaml(
tasks: [faq]
policy:
  weighted: {weights: {primary: 1, secondary: 1}}
backends:
  - name: flaky
    openai: {base_url: "http://127.0.0.1:DEAD/v1", timeout_seconds: 5}
    outlier_detection:
      consecutive_failures: 3
      base_ejection_seconds: 0.5
      probe_requests: 1
  - name: steady
    openai: {base_url: "http://127.0.0.1:LIVE/v1", timeout_seconds: 5}
BACKENDS
routes:
  - name: primary
    kind: prompted
    backend: flaky
    model: m
    fallback_routes: [FALLBACK]
  - name: secondary
    kind: fine_tuned
    backend: steady
    model: m
ROUTES
)yaml",
                             {{"DEAD", std::to_string(dead_port)},
                              {"LIVE", std::to_string(live_port)},
                              {"BACKENDS", extra.backends},
                              {"ROUTES", extra.routes},
                              {"FALLBACK", extra.primary_fallback}});
}

class FallbackTest : public ::testing::Test {
 protected:
  void Start(const Extra& extra = {}) {
    dead_port_ = DeadPort();
    config_path_ = (std::filesystem::temp_directory_path() /
                    absl::StrCat("arbiter-fallback-", getpid(), ".yaml"))
                       .string();
    std::ofstream(config_path_)
        << GatewayConfig(dead_port_, steady_.port(), extra);
    auto gateway = StartServe(ARBITER_BINARY, {"--config", config_path_});
    ASSERT_TRUE(gateway.ok()) << gateway.status();
    gateway_ = std::move(gateway->process);
    metrics_port_ = gateway->metrics_port;
    http_port_ = gateway->http_port;
    grpc_port_ = gateway->grpc_port;
    stub_ = v1::Gateway::NewStub(grpc::CreateChannel(
        gateway->target(), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    gateway_.reset();
    std::filesystem::remove(config_path_);
  }

  grpc::Status Infer(v1::InferResponse* response, const std::string& route = "",
                     bool allow_fallback = false) {
    v1::InferRequest request;
    v1::ChatMessage* message = request.add_messages();
    message->set_role(v1::ROLE_USER);
    message->set_content("How do I reset my password?");
    request.set_route(route);
    request.set_allow_fallback(allow_fallback);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(20));
    return stub_->Infer(&context, request, response);
  }

  std::string Metrics() {
    httplib::Client client("127.0.0.1", metrics_port_);
    auto result = client.Get("/metrics");
    return result ? result->body : "";
  }

  LiveBackend steady_{"steady answer"};
  int dead_port_ = 0;
  std::string config_path_;
  std::unique_ptr<Subprocess> gateway_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
  int metrics_port_ = 0;
  int http_port_ = 0;
  int grpc_port_ = 0;
};

TEST_F(FallbackTest, RequestsTheDeadRouteGetsAreAnsweredByTheNextOne) {
  Start();
  int fell_back = 0;
  for (int i = 0; i < 40; ++i) {
    v1::InferResponse response;
    grpc::Status status = Infer(&response);
    ASSERT_TRUE(status.ok()) << i << ": " << status.error_message();
    EXPECT_EQ(response.route(), "secondary");
    EXPECT_EQ(response.text(), "steady answer");
    ASSERT_GE(response.attempts_size(), 1);
    const v1::Attempt& last = *response.attempts().rbegin();
    EXPECT_EQ(last.route(), "secondary");
    EXPECT_EQ(last.status(), "OK");
    if (response.attempts_size() == 2) {
      ++fell_back;
      const v1::Attempt& first = response.attempts(0);
      EXPECT_EQ(first.route(), "primary");
      EXPECT_EQ(first.backend(), "flaky");
      EXPECT_EQ(first.status(), "UNAVAILABLE");
      EXPECT_EQ(first.failure(), "unavailable");
      EXPECT_THAT(first.error(), HasSubstr("backend \"flaky\""));
      EXPECT_THAT(response.decision().reason(),
                  HasSubstr("fallback from primary (unavailable): secondary"));
      // The route is named once.
      EXPECT_THAT(response.decision().reason(),
                  Not(HasSubstr("secondary: secondary")));
    } else {
      EXPECT_EQ(response.attempts_size(), 1);
    }
  }
  // Three failures eject the backend; from then on it gets a probe at most
  // every half second, and each failed probe doubles its time out.
  EXPECT_GE(fell_back, 3);
  EXPECT_LE(fell_back, 8);
  const std::string metrics = Metrics();
  EXPECT_EQ(MetricSample(metrics, "arbiter_fallbacks_total",
                         {{"from_route", "primary"},
                          {"to_route", "secondary"},
                          {"reason", "unavailable"}}),
            fell_back);
  EXPECT_EQ(MetricSample(metrics, "arbiter_backend_up", {{"backend", "flaky"}}),
            0);
  EXPECT_EQ(
      MetricSample(metrics, "arbiter_backend_up", {{"backend", "steady"}}), 1);
  EXPECT_GE(
      MetricSample(metrics, "arbiter_backend_ejections_total",
                   {{"backend", "flaky"}, {"reason", "consecutive_failures"}}),
      1);
  // Every request counted once, by its final outcome.
  EXPECT_EQ(MetricSample(metrics, "arbiter_requests_total",
                         {{"route", "secondary"}, {"outcome", "ok"}}),
            40);
  EXPECT_EQ(MetricSample(metrics, "arbiter_requests_total",
                         {{"route", "primary"}, {"outcome", "unavailable"}}),
            0);
  EXPECT_EQ(MetricSample(metrics, "arbiter_request_attempts_count", {}), 40);

  // The route statistics and readiness say which backend is out.
  auto admin = v1::Admin::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", grpc_port_),
                          grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  v1::GetRouteStatsResponse stats;
  ASSERT_TRUE(
      admin->GetRouteStats(&context, v1::GetRouteStatsRequest(), &stats).ok());
  ASSERT_EQ(stats.backends_size(), 2);
  EXPECT_EQ(stats.backends(0).name(), "flaky");
  EXPECT_FALSE(stats.backends(0).up());
  // Ejected, or out again after a failed probe.
  EXPECT_THAT(stats.backends(0).health(), HasSubstr("ejected for"));
  EXPECT_EQ(stats.backends(1).name(), "steady");
  EXPECT_EQ(stats.backends(1).health(), "in service");
  httplib::Client client("127.0.0.1", http_port_);
  auto ready = client.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  const auto body = nlohmann::json::parse(ready->body);
  EXPECT_EQ(body["backends"]["steady"], "reachable");
  EXPECT_EQ(body["backends"]["flaky"], "unreachable");
}

TEST_F(FallbackTest, AnEjectedBackendReturnsThroughProbesOnceItAnswers) {
  Start();
  // Pinned with leave to fall back: each goes to the dead route first.
  for (int i = 0; i < 3; ++i) {
    v1::InferResponse response;
    ASSERT_TRUE(Infer(&response, "primary", /*allow_fallback=*/true).ok());
  }
  ASSERT_EQ(
      MetricSample(Metrics(), "arbiter_backend_up", {{"backend", "flaky"}}), 0);
  LiveBackend revived("revived answer", dead_port_);
  ASSERT_EQ(revived.port(), dead_port_);
  // Within a few ejection times a probe gets through and it is back.
  bool back = false;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(8);
  while (!back && std::chrono::steady_clock::now() < until) {
    v1::InferResponse response;
    ASSERT_TRUE(Infer(&response).ok());
    back = MetricSample(Metrics(), "arbiter_backend_up",
                        {{"backend", "flaky"}}) == 1;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(back);
  EXPECT_GE(revived.calls(), 1);
  int primary = 0;
  for (int i = 0; i < 40; ++i) {
    v1::InferResponse response;
    ASSERT_TRUE(Infer(&response).ok());
    if (response.route() == "primary") {
      ++primary;
      EXPECT_EQ(response.text(), "revived answer");
    }
  }
  EXPECT_GT(primary, 5);  // Half the weight, in service again.
}

TEST_F(FallbackTest, APinFallsBackOnlyWhenTheRequestAllowsIt) {
  Start();
  v1::InferResponse pinned;
  grpc::Status status = Infer(&pinned, "primary");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("backend \"flaky\""));
  v1::InferResponse allowed;
  status = Infer(&allowed, "primary", /*allow_fallback=*/true);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(allowed.route(), "secondary");
  ASSERT_EQ(allowed.attempts_size(), 2);
  EXPECT_EQ(allowed.attempts(0).route(), "primary");
  // Ejected, a pin without leave fails at once, naming why.
  for (int i = 0; i < 3; ++i) {
    v1::InferResponse response;
    Infer(&response, "primary");
  }
  status = Infer(&pinned, "primary");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(),
              HasSubstr("route primary cannot take requests now (route "
                        "primary: backend flaky ejected for"));
}

TEST_F(FallbackTest, FallbackRoutesTakePrecedenceAndRateLimitsFallBack) {
  LiveBackend third("third answer");
  Extra extra;
  extra.backends = absl::StrCat(
      "  - name: third\n    openai: {base_url: \"http://127.0.0.1:",
      third.port(), "/v1\"}");
  extra.routes = R"yaml(
  - name: tertiary
    kind: fine_tuned
    backend: third
    model: m
)yaml";
  extra.primary_fallback = "tertiary";
  Start(extra);
  v1::InferResponse response;
  grpc::Status status = Infer(&response, "primary", /*allow_fallback=*/true);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.route(), "tertiary");
  EXPECT_EQ(response.decision().reason(),
            "fallback from primary (unavailable): tertiary (fallback_routes)");
  // A 429 falls back as rate_limited.
  steady_.AnswerStatus(429);
  status = Infer(&response, "secondary", /*allow_fallback=*/true);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_NE(response.route(), "secondary");
  ASSERT_GE(response.attempts_size(), 2);
  EXPECT_EQ(response.attempts(0).failure(), "rate_limited");
  EXPECT_EQ(
      MetricSample(Metrics(), "arbiter_fallbacks_total",
                   {{"from_route", "secondary"}, {"reason", "rate_limited"}}),
      1);
}

TEST_F(FallbackTest, AStreamFallsBackBeforeItsFirstToken) {
  Start();
  httplib::Client client("127.0.0.1", http_port_);
  const std::string body = R"({"model":"primary","stream":true,
      "messages":[{"role":"user","content":"How do I reset my password?"}],
      "arbiter":{"allow_fallback":true}})";
  auto result = client.Post("/v1/chat/completions", body, "application/json");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200) << result->body;
  EXPECT_EQ(result->get_header_value("x-arbiter-route"), "secondary");
  EXPECT_THAT(result->body, HasSubstr("steady answer"));
  EXPECT_THAT(result->body, HasSubstr("data: [DONE]"));
  EXPECT_THAT(result->body, HasSubstr("fallback from primary (unavailable)"));
}

// A backend with retry settings gets a failed attempt again, after a jittered
// backoff or its Retry-After, before any fallback; retries are counted and
// listed among the attempts.
TEST_F(FallbackTest, RetriesTheSameBackendBeforeFallingBack) {
  Extra extra;
  extra.backends = R"yaml(
  - name: retrying
    openai: {base_url: "http://127.0.0.1:RETRYING/v1", timeout_seconds: 5}
    retry: {max_retries: 2, backoff_base_ms: 20, backoff_max_ms: 100}
)yaml";
  LiveBackend retrying("retried answer");
  extra.backends = absl::StrReplaceAll(
      extra.backends, {{"RETRYING", std::to_string(retrying.port())}});
  extra.routes = R"yaml(
  - name: patient
    kind: fine_tuned
    backend: retrying
    model: m
)yaml";
  Start(extra);
  // Two 503s, then an answer: the third attempt, on the same route.
  retrying.FailNext(2, 503);
  v1::InferResponse response;
  grpc::Status status = Infer(&response, "patient");
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.text(), "retried answer");
  ASSERT_EQ(response.attempts_size(), 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(response.attempts(i).route(), "patient");
  }
  EXPECT_EQ(response.attempts(0).failure(), "server_error");
  EXPECT_EQ(response.attempts(2).status(), "OK");
  EXPECT_THAT(response.decision().reason(),
              HasSubstr("retry 2 on patient (server_error)"));
  EXPECT_EQ(MetricSample(Metrics(), "arbiter_retries_total",
                         {{"backend", "retrying"}, {"reason", "server_error"}}),
            2);
  // Three in a row use up the retries; a pin without allow_fallback then
  // fails with every attempt named.
  retrying.FailNext(3, 503);
  status = Infer(&response, "patient");
  EXPECT_EQ(status.error_code(), grpc::UNAVAILABLE);
  EXPECT_THAT(status.error_message(),
              HasSubstr("attempts: patient server_error, patient "
                        "server_error, patient server_error"));
  // Retry-After is honoured: a 429 asking for 1 s is retried after it.
  retrying.FailNext(1, 429, "1");
  const absl::Time start = absl::Now();
  status = Infer(&response, "patient");
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(990));
  EXPECT_THAT(response.attempts(0).error(), HasSubstr("Retry-After: 1 s"));
  EXPECT_EQ(MetricSample(Metrics(), "arbiter_retries_total",
                         {{"backend", "retrying"}, {"reason", "rate_limited"}}),
            1);
  // A Retry-After past the request's deadline is not waited for.
  retrying.FailNext(1, 503, "30");
  v1::InferRequest request;
  v1::ChatMessage* message = request.add_messages();
  message->set_role(v1::ROLE_USER);
  message->set_content("How do I reset my password?");
  request.set_route("patient");
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(2));
  const absl::Time asked = absl::Now();
  status = stub_->Infer(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::UNAVAILABLE);
  EXPECT_LT(absl::Now() - asked, absl::Milliseconds(500));
}

// gRPC health and /readyz follow whether any route can serve: NOT_SERVING
// while the only backend refuses connections, SERVING once it listens,
// NOT_SERVING again while it is ejected.
TEST(ReadinessTest, GrpcHealthIsNotServingWhileNoRouteCanServe) {
  const int port = DeadPort();
  const std::string config_path =
      (std::filesystem::temp_directory_path() /
       absl::StrCat("arbiter-readiness-", getpid(), ".yaml"))
          .string();
  std::ofstream(config_path)
      << absl::StrReplaceAll(R"yaml(
tasks: [faq]
policy:
  pinned: {route: only}
backends:
  - name: lone
    openai: {base_url: "http://127.0.0.1:PORT/v1", timeout_seconds: 5}
    outlier_detection: {consecutive_failures: 1, base_ejection_seconds: 30}
routes:
  - {name: only, kind: prompted, backend: lone, model: m}
)yaml",
                             {{"PORT", std::to_string(port)}});
  auto gateway = StartServe(ARBITER_BINARY, {"--config", config_path});
  ASSERT_TRUE(gateway.ok()) << gateway.status();
  auto channel = grpc::CreateChannel(gateway->target(),
                                     grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  auto status_now = [&] {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(5));
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    EXPECT_TRUE(health->Check(&context, request, &response).ok());
    return response.status();
  };
  auto wait_for = [&](grpc::health::v1::HealthCheckResponse::ServingStatus want,
                      absl::Duration within) {
    const absl::Time until = absl::Now() + within;
    while (status_now() != want && absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(50));
    }
    return status_now() == want;
  };
  httplib::Client http("127.0.0.1", gateway->http_port);
  EXPECT_EQ(status_now(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  auto ready = http.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 503);
  EXPECT_THAT(ready->body, HasSubstr("unreachable"));
  {
    LiveBackend lone("here now", port);
    ASSERT_EQ(lone.port(), port);
    EXPECT_TRUE(wait_for(grpc::health::v1::HealthCheckResponse::SERVING,
                         absl::Seconds(3)));
    EXPECT_EQ(http.Get("/readyz")->status, 200);
    // One failure ejects it for 30 s: nothing can serve.
    lone.AnswerStatus(503);
    auto stub = v1::Gateway::NewStub(channel);
    v1::InferRequest request;
    v1::ChatMessage* message = request.add_messages();
    message->set_role(v1::ROLE_USER);
    message->set_content("How do I reset my password?");
    grpc::ClientContext context;
    v1::InferResponse response;
    EXPECT_FALSE(stub->Infer(&context, request, &response).ok());
    EXPECT_TRUE(wait_for(grpc::health::v1::HealthCheckResponse::NOT_SERVING,
                         absl::Seconds(1)));
    ready = http.Get("/readyz");
    ASSERT_TRUE(ready);
    EXPECT_EQ(ready->status, 503);
    EXPECT_THAT(ready->body, HasSubstr("ejected for"));
  }
  gateway->process.reset();
  std::filesystem::remove(config_path);
}

}  // namespace
}  // namespace arbiter
