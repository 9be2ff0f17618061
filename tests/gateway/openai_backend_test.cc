// The `openai` backend against a real HTTP server on loopback that answers
// the way various OpenAI-compatible servers do (with and without usage,
// errors, garbage, silence).

#include "gateway/backends/openai_backend.h"

#include <httplib.h>

#include <thread>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbiter {
namespace {

using ::testing::HasSubstr;

class OpenAIBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.Post("/v1/chat/completions", [this](const httplib::Request& request,
                                                httplib::Response& response) {
      last_body_ = request.body;
      last_auth_ = request.get_header_value("Authorization");
      const std::string& model = nlohmann_model(request.body);
      if (model == "with-usage") {
        response.set_content(
            R"({"choices":[{"message":{"role":"assistant","content":"Hello there."}}],
                "usage":{"prompt_tokens":11,"completion_tokens":3}})",
            "application/json");
      } else if (model == "no-usage") {
        response.set_content(
            R"({"choices":[{"message":{"role":"assistant","content":"Hello there."}}]})",
            "application/json");
      } else if (model == "garbage") {
        response.set_content("<html>oops</html>", "text/html");
      } else if (model == "overloaded") {
        response.status = 503;
        response.set_content("overloaded", "text/plain");
      } else if (model == "unknown-model") {
        response.status = 404;
        response.set_content(R"({"error":"model not found"})",
                             "application/json");
      } else if (model == "slow") {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        response.set_content("{}", "application/json");
      }
    });
    server_.set_tcp_nodelay(true);
    server_.new_task_queue = [] { return new httplib::ThreadPool(32); };
    port_ = server_.bind_to_any_port("127.0.0.1");
    ASSERT_GT(port_, 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running())
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

  void TearDown() override {
    server_.stop();
    thread_.join();
  }

  // The model name picks the fake server's behaviour.
  static std::string nlohmann_model(const std::string& body) {
    size_t at = body.find("\"model\":\"");
    if (at == std::string::npos) return "";
    at += 9;
    return body.substr(at, body.find('"', at) - at);
  }

  absl::StatusOr<BackendResponse> Call(
      const std::string& model, absl::Duration timeout = absl::Seconds(5),
      int port = 0) {
    v1::OpenAIBackend config;
    config.set_base_url(
        absl::StrCat("http://127.0.0.1:", port ? port : port_, "/v1/"));
    config.set_max_connections(4);
    OpenAIBackend backend("fake", config, "secret-key");
    BackendRequest request;
    request.model = model;
    request.messages = {{"system", "Be brief."}, {"user", "Say hello."}};
    request.max_output_tokens = 16;
    request.timeout = timeout;
    absl::Notification done;
    absl::StatusOr<BackendResponse> result;
    backend.Complete(std::move(request),
                     [&](absl::StatusOr<BackendResponse> response) {
                       result = std::move(response);
                       done.Notify();
                     });
    done.WaitForNotification();
    return result;
  }

  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::string last_body_;
  std::string last_auth_;
};

TEST_F(OpenAIBackendTest, TakesUsageFromTheResponse) {
  auto response = Call("with-usage");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->text, "Hello there.");
  EXPECT_EQ(response->input_tokens, 11);
  EXPECT_EQ(response->output_tokens, 3);
  EXPECT_TRUE(response->usage_reported);
  EXPECT_THAT(last_body_, HasSubstr(R"("max_tokens":16)"));
  EXPECT_THAT(last_body_,
              HasSubstr(R"({"content":"Say hello.","role":"user"})"));
  EXPECT_EQ(last_auth_, "Bearer secret-key");
}

TEST_F(OpenAIBackendTest, CountsTokensWhenUsageIsMissing) {
  auto response = Call("no-usage");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_FALSE(response->usage_reported);
  // "Be brief." = 4 and "Say hello." = 4, plus 4 framing tokens each.
  EXPECT_EQ(response->input_tokens, 16);
  EXPECT_EQ(response->output_tokens, 5);  // "Hello there." = 2 + 2 + 1.
}

TEST_F(OpenAIBackendTest, MalformedResponseIsUnavailableNamingTheBackend) {
  auto response = Call("garbage");
  EXPECT_EQ(response.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(response.status().message(), HasSubstr("backend \"fake\""));
  EXPECT_THAT(response.status().message(), HasSubstr("malformed"));
}

TEST_F(OpenAIBackendTest, ServerErrorsAreUnavailableAndClientErrorsRejected) {
  auto overloaded = Call("overloaded");
  EXPECT_EQ(overloaded.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(overloaded.status().message(), HasSubstr("HTTP 503"));
  auto unknown = Call("unknown-model");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(unknown.status().message(), HasSubstr("HTTP 404"));
  EXPECT_THAT(unknown.status().message(), HasSubstr("model not found"));
}

TEST_F(OpenAIBackendTest, SlowServerTimesOut) {
  auto response = Call("slow", absl::Milliseconds(100));
  EXPECT_EQ(response.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(response.status().message(), HasSubstr("backend \"fake\""));
}

TEST_F(OpenAIBackendTest, ClosedPortIsUnavailable) {
  auto response = Call("with-usage", absl::Seconds(2), /*port=*/1);
  EXPECT_EQ(response.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(response.status().message(), HasSubstr("backend \"fake\""));
}

TEST_F(OpenAIBackendTest, ManyConcurrentRequestsAllComplete) {
  v1::OpenAIBackend config;
  config.set_base_url(absl::StrCat("http://127.0.0.1:", port_, "/v1"));
  config.set_max_connections(8);
  OpenAIBackend backend("fake", config, "");
  constexpr int kRequests = 200;
  std::atomic<int> ok{0};
  std::atomic<int> finished{0};
  absl::Notification all_done;
  for (int i = 0; i < kRequests; ++i) {
    BackendRequest request;
    request.model = "with-usage";
    request.messages = {{"user", "hi"}};
    backend.Complete(std::move(request),
                     [&](absl::StatusOr<BackendResponse> response) {
                       ok += response.ok();
                       if (++finished == kRequests) all_done.Notify();
                     });
  }
  all_done.WaitForNotification();
  EXPECT_EQ(ok.load(), kRequests);
}

}  // namespace
}  // namespace arbiter

namespace arbiter {
namespace {

TEST_F(OpenAIBackendTest, CancelAllFailsRequestsInFlightAtOnce) {
  v1::OpenAIBackend config;
  config.set_base_url(absl::StrCat("http://127.0.0.1:", port_, "/v1"));
  config.set_max_connections(1);  // One in flight, the others queued.
  OpenAIBackend backend("fake", config, "");
  constexpr int kRequests = 3;
  std::atomic<int> cancelled{0};
  std::atomic<int> finished{0};
  absl::Notification all_done;
  for (int i = 0; i < kRequests; ++i) {
    BackendRequest request;
    request.model = "slow";
    request.messages = {{"user", "hi"}};
    request.timeout = absl::Seconds(30);
    backend.Complete(
        std::move(request), [&](absl::StatusOr<BackendResponse> response) {
          cancelled +=
              response.status().code() == absl::StatusCode::kUnavailable;
          if (++finished == kRequests) all_done.Notify();
        });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  backend.CancelAll(absl::UnavailableError("shutting down"));
  // The slow server answers after 500 ms; cancelled requests end before.
  EXPECT_TRUE(all_done.WaitForNotificationWithTimeout(absl::Milliseconds(300)));
  EXPECT_EQ(cancelled.load(), kRequests);
}

}  // namespace
}  // namespace arbiter
