// A real `arbiter serve` in front of a fake OpenAI-compatible backend that
// answers with every kind of malformed body: each request fails with
// UNAVAILABLE naming the backend and what is wrong, the failures are
// counted, and the gateway keeps serving.

#include <httplib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

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
using ::arbiter::testing::StartServe;
using ::arbiter::testing::Subprocess;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kGoodAnswer[] =
    R"({"choices":[{"message":{"role":"assistant","content":"Fine."}}],
        "usage":{"prompt_tokens":5,"completion_tokens":1}})";
constexpr size_t kHugeBytes = 200u << 20;

// Answers every request with the body the test set last; "HUGE-LENGTH" and
// "HUGE-CHUNKED" send 200 MB with and without a Content-Length.
class FakeBackend final {
 public:
  FakeBackend() {
    server_.Post("/v1/chat/completions", [this](const httplib::Request&,
                                                httplib::Response& response) {
      std::string body;
      {
        std::lock_guard lock(mu_);
        body = body_;
      }
      if (body == "HUGE-LENGTH") {
        response.set_content_provider(
            kHugeBytes, "application/json",
            [](size_t, size_t, httplib::DataSink& sink) { return Pad(sink); });
      } else if (body == "HUGE-CHUNKED") {
        response.set_chunked_content_provider(
            "application/json",
            [sent = size_t{0}](size_t, httplib::DataSink& sink) mutable {
              if (sent >= kHugeBytes) {
                sink.done();
                return true;
              }
              sent += kChunk;
              return Pad(sink);
            });
      } else {
        response.set_content(body, "application/json");
      }
    });
    server_.set_tcp_nodelay(true);
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  ~FakeBackend() {
    server_.stop();
    thread_.join();
  }

  void Answer(std::string body) {
    std::lock_guard lock(mu_);
    body_ = std::move(body);
  }
  int port() const { return port_; }

 private:
  static constexpr size_t kChunk = 64 << 10;
  static bool Pad(httplib::DataSink& sink) {
    static const std::string chunk(kChunk, ' ');
    return sink.write(chunk.data(), chunk.size());
  }

  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  std::string body_ = kGoodAnswer;
};

std::string GatewayConfig(int backend_port) {
  return absl::StrReplaceAll(R"yaml(
tasks: [faq]
policy: {pinned: {route: tuned}}
backends:
  - name: vllm
    openai: {base_url: "http://127.0.0.1:PORT/v1", timeout_seconds: 20}
    # Every answer here is bad on purpose: the backend must stay in service
    # so that each request shows what its answer did.
    outlier_detection: {consecutive_failures: 0, failure_rate_percent: 0}
routes:
  - name: tuned
    kind: fine_tuned
    backend: vllm
    model: m
)yaml",
                             {{"PORT", std::to_string(backend_port)}});
}

class HostileBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_path_ = (std::filesystem::temp_directory_path() /
                    absl::StrCat("arbiter-hostile-", getpid(), ".yaml"))
                       .string();
    std::ofstream(config_path_) << GatewayConfig(backend_.port());
    auto gateway = StartServe(ARBITER_BINARY, {"--config", config_path_});
    ASSERT_TRUE(gateway.ok()) << gateway.status();
    gateway_ = std::move(gateway->process);
    metrics_port_ = gateway->metrics_port;
    stub_ = v1::Gateway::NewStub(grpc::CreateChannel(
        gateway->target(), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    gateway_.reset();
    std::filesystem::remove(config_path_);
  }

  grpc::Status Infer(v1::InferResponse* response) {
    v1::InferRequest request;
    v1::ChatMessage* message = request.add_messages();
    message->set_role(v1::ROLE_USER);
    message->set_content("How do I reset my password?");
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(30));
    return stub_->Infer(&context, request, response);
  }

  std::string Metrics() {
    httplib::Client client("127.0.0.1", metrics_port_);
    auto result = client.Get("/metrics");
    return result ? result->body : "";
  }

  FakeBackend backend_;
  std::string config_path_;
  std::unique_ptr<Subprocess> gateway_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
  int metrics_port_ = 0;
};

TEST_F(HostileBackendTest, MalformedAnswersFailClearlyAndTheGatewayLivesOn) {
  struct Case {
    std::string body;
    std::string message;
  };
  const std::vector<Case> malformed = {
      {R"({"choices":[{"message":{"content":"hi"}}],
           "usage":{"prompt_tokens":null,"completion_tokens":"3"}})",
       "usage.completion_tokens: expected an integer, got a string"},
      {R"({"choices":[{"message":{"content":"hi"}}],
           "usage":{"prompt_tokens":"11","completion_tokens":3}})",
       "usage.prompt_tokens: expected an integer, got a string"},
      {R"({"choices":[{"message":{"content":"hi"}}],
           "usage":{"prompt_tokens":-5,"completion_tokens":3}})",
       "usage.prompt_tokens: must be in [0, 1000000000], got -5"},
      {R"({"choices":[{"message":{"content":"hi"}}],
           "usage":{"prompt_tokens":{},"completion_tokens":3}})",
       "usage.prompt_tokens: expected an integer, got an object"},
      {R"({"choices":[{"message":{"content":"hi"}}],"usage":[1]})",
       "usage: expected an object, got an array"},
      {R"({"choices":[{"message":{"content":null}}]})",
       "choices[0].message.content: expected a string, got null"},
      {R"({"choices":[{"message":{"content":["hi"]}}]})",
       "choices[0].message.content: expected a string, got an array"},
      {R"({"choices":[{"message":{}}]})",
       "choices[0].message.content: missing"},
      {R"({"choices":[{"message":false}]})",
       "choices[0].message: expected an object, got a boolean"},
      {R"({"choices":[{"text":"hi"}]})", "choices[0].message: missing"},
      {R"({"choices":[]})", "choices: empty"},
      {R"({"choices":"hi"})", "choices: expected an array, got a string"},
      {R"({})", "choices: missing"},
      {R"(42)", "the document: expected an object, got a number"},
      {"<html><body>502 Bad Gateway</body></html>", "not valid JSON"},
      {R"({"choices":[{"message":{"content":"trunc)", "not valid JSON"},
      {R"({"choices":[{"message":{"content":"hi"}}],)", "not valid JSON"},
  };
  for (const Case& c : malformed) {
    backend_.Answer(c.body);
    v1::InferResponse response;
    grpc::Status status = Infer(&response);
    EXPECT_EQ(status.error_code(), grpc::UNAVAILABLE) << c.body;
    EXPECT_THAT(status.error_message(),
                AllOf(HasSubstr("backend \"vllm\": malformed response: "),
                      HasSubstr(c.message), Not(HasSubstr("127.0.0.1"))))
        << c.body;
  }
  for (const char* huge : {"HUGE-LENGTH", "HUGE-CHUNKED"}) {
    backend_.Answer(huge);
    v1::InferResponse response;
    grpc::Status status = Infer(&response);
    EXPECT_EQ(status.error_code(), grpc::UNAVAILABLE) << huge;
    EXPECT_THAT(status.error_message(),
                HasSubstr("backend \"vllm\": response larger than "
                          "max_response_bytes (8388608 bytes)"))
        << huge;
  }

  // A null count is no count: the gateway counts that side itself.
  backend_.Answer(R"({"choices":[{"message":{"content":"hi"}}],
                      "usage":{"prompt_tokens":null,"completion_tokens":1}})");
  v1::InferResponse counted;
  grpc::Status null_usage = Infer(&counted);
  ASSERT_TRUE(null_usage.ok()) << null_usage.error_message();
  EXPECT_TRUE(counted.usage().estimated());
  EXPECT_GT(counted.usage().input_tokens(), 0);

  // Text that is not UTF-8 is repaired, not refused.
  backend_.Answer("{\"choices\":[{\"message\":{\"content\":\"caf\xe9\"}}]}");
  v1::InferResponse repaired;
  grpc::Status status = Infer(&repaired);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(repaired.text(), "caf\xEF\xBF\xBD");
  EXPECT_TRUE(repaired.usage().estimated());

  // Alive, and a normal answer still goes through.
  backend_.Answer(kGoodAnswer);
  v1::InferResponse fine;
  status = Infer(&fine);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(fine.text(), "Fine.");
  EXPECT_EQ(fine.usage().input_tokens(), 5);

  const std::string metrics = Metrics();
  EXPECT_EQ(MetricSample(metrics, "arbiter_backend_errors_total",
                         {{"backend", "vllm"}, {"reason", "malformed"}}),
            static_cast<double>(malformed.size()));
  EXPECT_EQ(MetricSample(metrics, "arbiter_backend_errors_total",
                         {{"backend", "vllm"}, {"reason", "too_large"}}),
            2);
  EXPECT_EQ(MetricSample(metrics, "arbiter_backend_errors_total",
                         {{"backend", "vllm"}, {"reason", "timeout"}}),
            0);
  // The log has what clients do not get: where and what the backend sent.
  EXPECT_THAT(gateway_->Output(),
              HasSubstr(absl::StrCat(
                  "backend \"vllm\" (http://127.0.0.1:", backend_.port(),
                  "/v1/chat/completions)", ": malformed response")));
}

TEST(HostileBackendConfigTest, RejectsBadLimitsNamingTheField) {
  const std::string path =
      (std::filesystem::temp_directory_path() /
       absl::StrCat("arbiter-hostile-config-", getpid(), ".yaml"))
          .string();
  std::ofstream(path) << absl::StrReplaceAll(
      GatewayConfig(1), {{"timeout_seconds: 20",
                          "max_response_bytes: 0, max_queued_requests: -1"}});
  auto check = Subprocess::Start({ARBITER_BINARY, "check-config", path});
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_NE((*check)->Wait(), 0);
  EXPECT_THAT((*check)->Output(),
              AllOf(HasSubstr("backends[0].openai.max_response_bytes: must be "
                              "in [1, 1073741824], got 0"),
                    HasSubstr("backends[0].openai.max_queued_requests: must "
                              "be >= 0")));
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace arbiter
