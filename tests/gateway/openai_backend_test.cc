// The `openai` backend against a real HTTP server on loopback that answers
// the way various OpenAI-compatible servers do (with and without usage,
// errors, garbage, silence, too much) and the ways a hostile one might.

#include "gateway/backends/openai_backend.h"

#include <httplib.h>

#include <atomic>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gateway/config.h"
#include "gateway/http/http_server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace arbiter {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kGoodAnswer[] =
    R"({"choices":[{"message":{"role":"assistant","content":"Hello there."}}],
        "usage":{"prompt_tokens":11,"completion_tokens":3}})";

class OpenAIBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.Post("/v1/chat/completions", [this](const httplib::Request& request,
                                                httplib::Response& response) {
      const std::string model = ModelOf(request.body);
      std::string canned;
      {
        std::lock_guard lock(mu_);
        last_body_ = request.body;
        last_auth_ = request.get_header_value("Authorization");
        auto it = canned_.find(model);
        if (it != canned_.end()) canned = it->second;
      }
      if (!canned.empty()) {
        response.set_content(canned, "application/json");
      } else if (model == "with-usage") {
        response.set_content(kGoodAnswer, "application/json");
      } else if (model == "no-usage") {
        response.set_content(
            R"({"choices":[{"message":{"role":"assistant","content":"Hello there."}}]})",
            "application/json");
      } else if (model == "garbage") {
        response.set_content("<html>oops</html>", "text/html");
      } else if (model == "overloaded") {
        response.status = 503;
        response.set_content("overloaded: upstream-secret-detail",
                             "text/plain");
      } else if (model == "unknown-model") {
        response.status = 404;
        response.set_content(R"({"error":"model not found"})",
                             "application/json");
      } else if (model == "slow") {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        response.set_content("{}", "application/json");
      } else if (model == "slow-ok") {
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        response.set_content(kGoodAnswer, "application/json");
      } else if (model == "very-slow") {
        std::this_thread::sleep_for(std::chrono::seconds(2));
        response.set_content(kGoodAnswer, "application/json");
      } else if (model == "claims-huge") {
        // Says 200 MB are coming, then sends nothing for 1.5 s.
        response.set_content_provider(
            200u << 20, "application/json",
            [](size_t, size_t, httplib::DataSink& sink) {
              std::this_thread::sleep_for(std::chrono::milliseconds(1500));
              return false;
            });
      } else if (model == "huge-with-length" || model == "huge-chunked") {
        // 200 MB of padding inside a string, sent 64 KiB at a time.
        constexpr size_t kHuge = 200u << 20;
        auto provide = [this](size_t offset, httplib::DataSink& sink) {
          static const std::string chunk(64 << 10, 'x');
          sent_bytes_ += chunk.size();
          return sink.write(chunk.data(), chunk.size());
        };
        if (model == "huge-with-length") {
          response.set_content_provider(
              kHuge, "application/json",
              [provide](size_t offset, size_t, httplib::DataSink& sink) {
                return provide(offset, sink);
              });
        } else {
          response.set_chunked_content_provider(
              "application/json",
              [provide, sent = size_t{0}](size_t offset,
                                          httplib::DataSink& sink) mutable {
                if (sent >= kHuge) {
                  sink.done();
                  return true;
                }
                sent += 64 << 10;
                return provide(offset, sink);
              });
        }
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
  static std::string ModelOf(const std::string& body) {
    size_t at = body.find("\"model\":\"");
    if (at == std::string::npos) return "";
    at += 9;
    return body.substr(at, body.find('"', at) - at);
  }

  // The fake answers `model` with `body` from now on.
  void Serve(const std::string& model, const std::string& body) {
    std::lock_guard lock(mu_);
    canned_[model] = body;
  }

  v1::OpenAIBackend Config(int max_connections = 4, int port = 0) const {
    v1::OpenAIBackend config;
    config.set_base_url(
        absl::StrCat("http://127.0.0.1:", port ? port : port_, "/v1/"));
    config.set_max_connections(max_connections);
    ApplyOpenAIBackendDefaults(config);
    return config;
  }

  static BackendRequest Request(const std::string& model,
                                absl::Duration timeout = absl::Seconds(5)) {
    BackendRequest request;
    request.model = model;
    request.messages = {{"system", "Be brief."}, {"user", "Say hello."}};
    request.max_output_tokens = 16;
    request.timeout = timeout;
    return request;
  }

  // One request through `backend`, waited for.
  static absl::StatusOr<BackendResponse> Call(Backend& backend,
                                              BackendRequest request) {
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

  absl::StatusOr<BackendResponse> Call(
      const std::string& model, absl::Duration timeout = absl::Seconds(5),
      int port = 0) {
    OpenAIBackend backend("fake", Config(4, port), "secret-key");
    return Call(backend, Request(model, timeout));
  }

  std::string last_body() {
    std::lock_guard lock(mu_);
    return last_body_;
  }

  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<size_t> sent_bytes_{0};
  std::mutex mu_;
  std::map<std::string, std::string> canned_;
  std::string last_body_;
  std::string last_auth_;
};

// Counts what the backend reports to metrics.
struct ErrorTally {
  std::mutex mu;
  std::map<BackendError, int> counts;

  BackendErrorObserver Observer() {
    return [this](BackendError reason) {
      std::lock_guard lock(mu);
      ++counts[reason];
    };
  }
  int operator[](BackendError reason) {
    std::lock_guard lock(mu);
    return counts[reason];
  }
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

TEST_F(OpenAIBackendTest, CountsLocallyWhatUsageLeavesNullOrOut) {
  Serve("null-usage",
        R"({"choices":[{"message":{"content":"Hello there."}}],"usage":null})");
  Serve("partial-usage",
        R"({"choices":[{"message":{"content":"Hello there."}}],
            "usage":{"prompt_tokens":11,"completion_tokens":null}})");
  auto null_usage = Call("null-usage");
  ASSERT_TRUE(null_usage.ok()) << null_usage.status();
  EXPECT_FALSE(null_usage->usage_reported);
  EXPECT_EQ(null_usage->input_tokens, 16);
  auto partial = Call("partial-usage");
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_FALSE(partial->usage_reported);
  EXPECT_EQ(partial->input_tokens, 11);
  EXPECT_EQ(partial->output_tokens, 5);
}

TEST_F(OpenAIBackendTest, MalformedResponseIsUnavailableNamingTheBackend) {
  auto response = Call("garbage");
  EXPECT_EQ(response.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(response.status().message(), HasSubstr("backend \"fake\""));
  EXPECT_THAT(response.status().message(), HasSubstr("malformed"));
  // What the backend sent stays in the log.
  EXPECT_THAT(response.status().message(), Not(HasSubstr("html")));
}

// Every field the client reads, wrong in every way that matters: each is
// UNAVAILABLE naming the backend and the field, and counted as malformed.
TEST_F(OpenAIBackendTest, WrongFieldsAreUnavailableNamingTheField) {
  struct Case {
    std::string body;
    std::string message;
  };
  const std::vector<Case> cases = {
      {R"({"choices":[{"message":{"content":"hi"}}],
           "usage":{"prompt_tokens":"11","completion_tokens":3}})",
       "usage.prompt_tokens: expected an integer, got a string"},
      {R"({"choices":[{"message":{"content":"hi"}}],
           "usage":{"prompt_tokens":11,"completion_tokens":true}})",
       "usage.completion_tokens: expected an integer, got a boolean"},
      {R"({"choices":[{"message":{"content":"hi"}}],
           "usage":{"prompt_tokens":1.5,"completion_tokens":3}})",
       "usage.prompt_tokens: expected an integer, got a number"},
      {R"({"choices":[{"message":{"content":"hi"}}],
           "usage":{"prompt_tokens":-1,"completion_tokens":3}})",
       "usage.prompt_tokens: must be in [0, 1000000000], got -1"},
      {R"({"choices":[{"message":{"content":"hi"}}],
           "usage":{"prompt_tokens":11,"completion_tokens":1e15}})",
       "usage.completion_tokens: must be in [0, 1000000000]"},
      {R"({"choices":[{"message":{"content":"hi"}}],
           "usage":{"prompt_tokens":[],"completion_tokens":3}})",
       "usage.prompt_tokens: expected an integer, got an array"},
      {R"({"choices":[{"message":{"content":"hi"}}],"usage":"lots"})",
       "usage: expected an object, got a string"},
      {R"({"choices":[{"message":{"content":null}}]})",
       "choices[0].message.content: expected a string, got null"},
      {R"({"choices":[{"message":{"content":42}}]})",
       "choices[0].message.content: expected a string, got a number"},
      {R"({"choices":[{"message":{"role":"assistant"}}]})",
       "choices[0].message.content: missing"},
      {R"({"choices":[{"message":"hi"}]})",
       "choices[0].message: expected an object, got a string"},
      {R"({"choices":[{}]})", "choices[0].message: missing"},
      {R"({"choices":[7]})", "choices[0].message: missing"},
      {R"({"choices":[]})", "choices: empty"},
      {R"({"choices":{"message":{"content":"hi"}}})",
       "choices: expected an array, got an object"},
      {R"({"choices":null})", "choices: expected an array, got null"},
      {R"({"usage":{"prompt_tokens":1,"completion_tokens":1}})",
       "choices: missing"},
      {R"([{"choices":[]}])", "the document: expected an object"},
      {R"("just a string")", "the document: expected an object"},
      {"<html>oops</html>", "not valid JSON at byte 1"},
      {R"({"choices":[{"message":{"content":"hi)", "not valid JSON"},
      {"", "not valid JSON"},
      {R"({"choices":[{"message":{"content":"\udc00"}}]})", "not valid JSON"},
  };
  ErrorTally errors;
  OpenAIBackend backend("fake", Config(), "", errors.Observer());
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string model = absl::StrCat("case-", i);
    Serve(model, cases[i].body.empty() ? " " : cases[i].body);
    auto response = Call(backend, Request(model));
    EXPECT_EQ(response.status().code(), absl::StatusCode::kUnavailable)
        << cases[i].body;
    EXPECT_THAT(response.status().message(),
                AllOf(HasSubstr("backend \"fake\": malformed response: "),
                      HasSubstr(cases[i].message)))
        << cases[i].body;
  }
  EXPECT_EQ(errors[BackendError::kMalformed], static_cast<int>(cases.size()));
}

TEST_F(OpenAIBackendTest, RepairsTextThatIsNotUtf8) {
  // A Latin-1 "é" and a lone continuation byte in the content.
  Serve("latin1",
        "{\"choices\":[{\"message\":{\"content\":\"caf\xe9 \x80!\"}}]}");
  auto response = Call("latin1");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->text, "caf\xEF\xBF\xBD \xEF\xBF\xBD!");
}

TEST_F(OpenAIBackendTest, SendsPromptsThatAreNotUtf8WithReplacements) {
  OpenAIBackend backend("fake", Config(), "");
  BackendRequest request = Request("with-usage");
  request.messages.back().content = "caf\xe9?";
  auto response = Call(backend, std::move(request));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_THAT(last_body(), HasSubstr("caf\xEF\xBF\xBD?"));
}

TEST_F(OpenAIBackendTest, SendsToolCallsAndToolResultsAsOpenAIHasThem) {
  OpenAIBackend backend("fake", Config(), "");
  BackendRequest request = Request("with-usage");
  const std::string calls =
      R"([{"id":"call_1","type":"function","function":{"name":"lookup","arguments":"{}"}}])";
  request.messages.push_back({"assistant", "", calls, "", ""});
  request.messages.push_back({"tool", "42", "", "call_1", "lookup"});
  auto response = Call(backend, std::move(request));
  ASSERT_TRUE(response.ok()) << response.status();
  auto body = nlohmann::json::parse(last_body());
  const auto& messages = body["messages"];
  ASSERT_EQ(messages.size(), 4u);
  EXPECT_EQ(messages[2]["role"], "assistant");
  EXPECT_EQ(messages[2]["content"], nullptr);
  EXPECT_EQ(messages[2]["tool_calls"], nlohmann::json::parse(calls));
  EXPECT_EQ(messages[3]["role"], "tool");
  EXPECT_EQ(messages[3]["tool_call_id"], "call_1");
  EXPECT_EQ(messages[3]["name"], "lookup");
  EXPECT_EQ(messages[3]["content"], "42");
  EXPECT_FALSE(messages[1].contains("tool_call_id"));
}

TEST_F(OpenAIBackendTest, CutsOffAnAnswerOverMaxResponseBytes) {
  ErrorTally errors;
  v1::OpenAIBackend config = Config();
  config.set_max_response_bytes(1 << 20);
  OpenAIBackend backend("fake", config, "", errors.Observer());
  for (const char* model : {"huge-with-length", "huge-chunked"}) {
    sent_bytes_ = 0;
    const absl::Time start = absl::Now();
    auto response = Call(backend, Request(model));
    EXPECT_EQ(response.status().code(), absl::StatusCode::kUnavailable)
        << model;
    EXPECT_THAT(response.status().message(),
                AllOf(HasSubstr("backend \"fake\""),
                      HasSubstr("larger than max_response_bytes (1048576")))
        << model;
    EXPECT_LT(absl::Now() - start, absl::Seconds(3)) << model;
  }
  EXPECT_EQ(errors[BackendError::kTooLarge], 2);
  // The default cap holds too: 200 MB never make it into memory.
  OpenAIBackend defaults("fake", Config(), "");
  auto response = Call(defaults, Request("huge-chunked"));
  EXPECT_THAT(response.status().message(),
              HasSubstr("larger than max_response_bytes (8388608"));
}

// Easy handles are reused: after calls that were cut off, timed out, were
// refused or failed, a handle reset for the next call carries nothing over
// (its URL, body, headers, limits and callbacks are the new call's).
TEST_F(OpenAIBackendTest, AReusedHandleCarriesNothingOverFromItsLastCall) {
  v1::OpenAIBackend config = Config(/*max_connections=*/1);
  config.set_max_response_bytes(1 << 20);
  OpenAIBackend backend("fake", config, "secret-key");
  EXPECT_FALSE(Call(backend, Request("huge-chunked")).ok());
  EXPECT_FALSE(Call(backend, Request("slow", absl::Milliseconds(100))).ok());
  EXPECT_FALSE(Call(backend, Request("garbage")).ok());
  EXPECT_FALSE(Call(backend, Request("overloaded")).ok());
  for (int i = 0; i < 3; ++i) {
    auto response = Call(backend, Request("with-usage"));
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->text, "Hello there.");
    EXPECT_EQ(response->input_tokens, 11);
  }
  EXPECT_THAT(last_body(), HasSubstr("\"model\":\"with-usage\""));
  {
    std::lock_guard lock(mu_);
    EXPECT_EQ(last_auth_, "Bearer secret-key");
  }
  BackendRequest streamed = Request("with-usage");
  streamed.stream = true;
  EXPECT_TRUE(Call(backend, std::move(streamed)).ok());
}

TEST_F(OpenAIBackendTest, RefusesEarlyAnAnswerWhoseLengthIsOverTheLimit) {
  v1::OpenAIBackend config = Config();
  config.set_max_response_bytes(1 << 20);
  OpenAIBackend backend("fake", config, "");
  const absl::Time start = absl::Now();
  auto response = Call(backend, Request("claims-huge"));
  // Content-Length is enough: no need to wait for the body.
  EXPECT_THAT(response.status().message(), HasSubstr("max_response_bytes"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
}

TEST_F(OpenAIBackendTest, ServerErrorsAreUnavailableAndClientErrorsRejected) {
  ErrorTally errors;
  OpenAIBackend backend("fake", Config(), "", errors.Observer());
  auto overloaded = Call(backend, Request("overloaded"));
  EXPECT_EQ(overloaded.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(overloaded.status().message(), "backend \"fake\": HTTP 503");
  auto unknown = Call(backend, Request("unknown-model"));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(unknown.status().message(),
            "backend \"fake\" rejected the request: HTTP 404");
  EXPECT_EQ(errors[BackendError::kHttp5xx], 1);
  EXPECT_EQ(errors[BackendError::kHttp4xx], 1);
}

TEST_F(OpenAIBackendTest, SlowServerTimesOut) {
  auto response = Call("slow", absl::Milliseconds(100));
  EXPECT_EQ(response.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(response.status().message(), HasSubstr("backend \"fake\""));
}

TEST_F(OpenAIBackendTest, ClosedPortIsUnavailableWithoutTheUrl) {
  ErrorTally errors;
  OpenAIBackend backend("fake", Config(4, /*port=*/1), "", errors.Observer());
  auto response = Call(backend, Request("with-usage", absl::Seconds(2)));
  EXPECT_EQ(response.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(response.status().message(),
            "backend \"fake\": connection refused");
  EXPECT_EQ(errors[BackendError::kConnect], 1);
}

// Two connections, answers after 2 s, 20 requests with 500 ms timeouts:
// the ones waiting for a connection time out on time too.
TEST_F(OpenAIBackendTest, TimesOutOnTimeWhileWaitingForAConnection) {
  constexpr int kRequests = 20;
  constexpr absl::Duration kTimeout = absl::Milliseconds(500);
  ErrorTally errors;
  OpenAIBackend backend("fake", Config(/*max_connections=*/2), "",
                        errors.Observer());
  std::mutex mu;
  std::vector<absl::Duration> took;
  std::vector<absl::Status> statuses;
  std::atomic<int> finished{0};
  absl::Notification all_done;
  for (int i = 0; i < kRequests; ++i) {
    const absl::Time start = absl::Now();
    backend.Complete(Request("very-slow", kTimeout),
                     [&, start](absl::StatusOr<BackendResponse> response) {
                       {
                         std::lock_guard lock(mu);
                         took.push_back(absl::Now() - start);
                         statuses.push_back(response.status());
                       }
                       if (++finished == kRequests) all_done.Notify();
                     });
  }
  ASSERT_TRUE(all_done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  int waited = 0;
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_EQ(statuses[i].code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_GE(took[i], kTimeout - absl::Milliseconds(1));
    EXPECT_LE(took[i], kTimeout + absl::Milliseconds(50)) << statuses[i];
    const bool waiting = absl::StrContains(
        statuses[i].message(), "still waiting for a connection (all 2 in use)");
    // Or it got a connection freed by an earlier deadline, just before its
    // own: on a loaded machine the 20 deadlines spread over milliseconds.
    EXPECT_TRUE(waiting ||
                absl::StrContains(statuses[i].message(), "no answer within"))
        << statuses[i];
    waited += waiting;
  }
  EXPECT_GT(waited, 0);
  // Those that never left the queue were shed by it, not failed by the
  // backend; so were those that got a connection only near their deadline
  // (every connection frees at about 500 ms, over half the timeout). Only
  // the two on the wire from the start timed out on the backend.
  EXPECT_EQ(errors[BackendError::kTimeout], 2);
  EXPECT_EQ(errors[BackendError::kQueueFull], kRequests - 2);
}

// Sends `count` copies of `request` at once; their results and how long
// each took, in the order they ended. False if they did not all end in 10 s.
bool CompleteAtOnce(OpenAIBackend& backend, const BackendRequest& request,
                    int count,
                    std::vector<absl::StatusOr<BackendResponse>>& results,
                    std::vector<absl::Duration>& took) {
  auto mu = std::make_shared<std::mutex>();
  auto finished = std::make_shared<std::atomic<int>>(0);
  auto all_done = std::make_shared<absl::Notification>();
  for (int i = 0; i < count; ++i) {
    const absl::Time start = absl::Now();
    backend.Complete(request, [=, &results, &took](
                                  absl::StatusOr<BackendResponse> response) {
      {
        std::lock_guard lock(*mu);
        results.push_back(std::move(response));
        took.push_back(absl::Now() - start);
      }
      if (++*finished == count) all_done->Notify();
    });
  }
  return all_done->WaitForNotificationWithTimeout(absl::Seconds(10));
}

TEST_F(OpenAIBackendTest, RefusesAtOnceWhenTooManyWaitForAConnection) {
  v1::OpenAIBackend config = Config(/*max_connections=*/1);
  config.set_max_queued_requests(2);
  ErrorTally errors;
  OpenAIBackend backend("fake", config, "", errors.Observer());
  constexpr int kRequests = 6;
  std::vector<absl::StatusOr<BackendResponse>> results;
  std::vector<absl::Duration> took;
  ASSERT_TRUE(
      CompleteAtOnce(backend, Request("slow-ok"), kRequests, results, took));
  int ok = 0;
  int refused = 0;
  for (int i = 0; i < kRequests; ++i) {
    if (results[i].ok()) {
      ++ok;
      continue;
    }
    EXPECT_EQ(results[i].status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_THAT(
        results[i].status().message(),
        AllOf(HasSubstr("backend \"fake\""), HasSubstr("max_queued_requests")));
    // Refused at once, not after waiting.
    EXPECT_LT(took[i], absl::Milliseconds(150));
    ++refused;
  }
  EXPECT_EQ(ok, 3);  // One on the wire and two waiting.
  EXPECT_EQ(refused, 3);
  EXPECT_EQ(errors[BackendError::kQueueFull], 3);
  // Once they are answered, room again.
  EXPECT_TRUE(Call(backend, Request("with-usage")).ok());
}

TEST_F(OpenAIBackendTest, ShedsARequestThatWaitsLongerThanMaxQueueWait) {
  v1::OpenAIBackend config = Config(/*max_connections=*/1);
  config.set_max_queue_wait_ms(100);
  ErrorTally errors;
  OpenAIBackend backend("fake", config, "", errors.Observer());
  constexpr int kRequests = 3;
  std::vector<absl::StatusOr<BackendResponse>> results;
  std::vector<absl::Duration> took;
  ASSERT_TRUE(
      CompleteAtOnce(backend, Request("slow-ok"), kRequests, results, took));
  int ok = 0;
  for (int i = 0; i < kRequests; ++i) {
    if (results[i].ok()) {
      ++ok;
      continue;
    }
    // Shed after its allowed wait (the answer takes 300 ms), long before
    // its 5 s timeout.
    EXPECT_EQ(results[i].status().code(), absl::StatusCode::kResourceExhausted)
        << results[i].status();
    EXPECT_THAT(results[i].status().message(),
                AllOf(HasSubstr("backend \"fake\": no connection free within "
                                "100ms"),
                      HasSubstr("max_queue_wait_ms")));
    EXPECT_EQ(BackendErrorOf(results[i].status()), BackendError::kQueueFull);
    EXPECT_GE(took[i], absl::Milliseconds(99));
    EXPECT_LT(took[i], absl::Milliseconds(290));
  }
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(errors[BackendError::kQueueFull], 2);
}

TEST_F(OpenAIBackendTest, ACallbackThatThrowsIsCalledOnceAndTheLoopGoesOn) {
  OpenAIBackend backend("fake", Config(), "");
  std::atomic<int> calls{0};
  absl::Notification called;
  backend.Complete(Request("with-usage"), [&](absl::StatusOr<BackendResponse>) {
    ++calls;
    called.Notify();
    throw std::runtime_error("callback bug");
  });
  called.WaitForNotification();
  EXPECT_TRUE(Call(backend, Request("with-usage")).ok());
  EXPECT_EQ(calls.load(), 1);
}

TEST(CatchAllTest, TurnsAnExceptionIntoInternal) {
  auto threw = CatchAll<int>("reading the answer", []() -> absl::StatusOr<int> {
    throw std::out_of_range("index 3");
  });
  EXPECT_EQ(threw.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(threw.status().message(), "reading the answer: index 3");
  auto fine = CatchAll<int>("x", []() -> absl::StatusOr<int> { return 7; });
  EXPECT_EQ(*fine, 7);
}

TEST_F(OpenAIBackendTest, ManyConcurrentRequestsAllComplete) {
  v1::OpenAIBackend config;
  config.set_base_url(absl::StrCat("http://127.0.0.1:", port_, "/v1"));
  config.set_max_connections(8);
  ApplyOpenAIBackendDefaults(config);
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

TEST_F(OpenAIBackendTest, CancelAllFailsRequestsInFlightAtOnce) {
  v1::OpenAIBackend config;
  config.set_base_url(absl::StrCat("http://127.0.0.1:", port_, "/v1"));
  config.set_max_connections(1);  // One in flight, the others queued.
  ApplyOpenAIBackendDefaults(config);
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

// Shards take even shares of the limits: four event threads of one
// connection each, no queue, serve four slow calls at once, and only a fifth
// is refused, naming the configured totals.
TEST_F(OpenAIBackendTest, ShardsShareTheLimitsAndRefuseOnlyWhenAllAreFull) {
  v1::OpenAIBackend config = Config(/*max_connections=*/4);
  config.set_max_queued_requests(0);
  config.set_event_threads(4);
  ErrorTally errors;
  std::unique_ptr<Backend> backend =
      MakeOpenAIBackend("fake", config, "", errors.Observer());
  constexpr int kRequests = 5;
  std::mutex mu;
  std::vector<absl::StatusOr<BackendResponse>> results;
  std::atomic<int> finished{0};
  absl::Notification all_done;
  const absl::Time start = absl::Now();
  for (int i = 0; i < kRequests; ++i) {
    backend->Complete(Request("slow-ok"),
                      [&](absl::StatusOr<BackendResponse> response) {
                        {
                          std::lock_guard lock(mu);
                          results.push_back(std::move(response));
                        }
                        if (++finished == kRequests) all_done.Notify();
                      });
  }
  ASSERT_TRUE(all_done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  // Four at once on four connections: one slow answer's time, not four.
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(1000));
  int ok = 0;
  for (const auto& result : results) {
    if (result.ok()) {
      ++ok;
      continue;
    }
    EXPECT_EQ(result.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_THAT(result.status().message(),
                AllOf(HasSubstr("backend \"fake\""),
                      HasSubstr("all 4 in use, 0 waiting")));
  }
  EXPECT_EQ(ok, 4);
  EXPECT_EQ(errors[BackendError::kQueueFull], 1);
  EXPECT_TRUE(Call(*backend, Request("with-usage")).ok());
}

TEST_F(OpenAIBackendTest, CancelAllReachesEveryShard) {
  v1::OpenAIBackend config = Config(/*max_connections=*/3);
  config.set_event_threads(3);
  std::unique_ptr<Backend> backend = MakeOpenAIBackend("fake", config, "", {});
  constexpr int kRequests = 6;  // Two a shard: one on the wire, one waiting.
  std::atomic<int> cancelled{0};
  std::atomic<int> finished{0};
  absl::Notification all_done;
  for (int i = 0; i < kRequests; ++i) {
    backend->Complete(Request("slow", absl::Seconds(30)),
                      [&](absl::StatusOr<BackendResponse> response) {
                        cancelled += response.status().code() ==
                                     absl::StatusCode::kUnavailable;
                        if (++finished == kRequests) all_done.Notify();
                      });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  backend->CancelAll(absl::UnavailableError("shutting down"));
  EXPECT_TRUE(all_done.WaitForNotificationWithTimeout(absl::Milliseconds(300)));
  EXPECT_EQ(cancelled.load(), kRequests);
}

// Hosted by an HTTP I/O thread, a call a handler makes is answered on that
// thread; calls from other threads still go through it; and when the host
// stops, the loop goes back to its own thread with a call in flight.
TEST_F(OpenAIBackendTest, HostedOnAnHttpIoThreadAnswersThereAndHandsBack) {
  OpenAIBackend backend("fake", Config(), "");
  std::mutex mu;
  std::thread::id handler_thread;
  std::thread::id answer_thread;
  bool handler_saw_its_loop = false;
  http::Routes routes;
  routes.Add(
      http::Verb::get, "/ask", [&](http::Request, http::Responder responder) {
        {
          std::lock_guard lock(mu);
          handler_thread = std::this_thread::get_id();
          handler_saw_its_loop = backend.runs_on_this_thread();
        }
        auto held = std::make_shared<http::Responder>(std::move(responder));
        backend.Complete(
            Request("with-usage"),
            [&, held](absl::StatusOr<BackendResponse> answer) {
              {
                std::lock_guard lock(mu);
                answer_thread = std::this_thread::get_id();
              }
              http::Response response(boost::beast::http::status::ok, 11);
              response.body() =
                  answer.ok() ? answer->text : answer.status().ToString();
              std::move(*held).Send(std::move(response));
            });
      });
  http::HttpServerOptions options;
  options.io_threads = 1;
  options.guests = backend.loop_guests();
  auto server = http::HttpServer::Start(std::move(options), std::move(routes));
  ASSERT_TRUE(server.ok()) << server.status();
  httplib::Client client("127.0.0.1", (*server)->port());
  for (int i = 0; i < 3; ++i) {
    auto response = client.Get("/ask");
    ASSERT_TRUE(response);
    EXPECT_EQ(response->body, "Hello there.");
  }
  {
    std::lock_guard lock(mu);
    EXPECT_TRUE(handler_saw_its_loop);
    EXPECT_EQ(answer_thread, handler_thread);
  }
  EXPECT_FALSE(backend.runs_on_this_thread());
  EXPECT_TRUE(Call(backend, Request("with-usage")).ok());
  // A slow call in flight while the host stops is answered all the same.
  absl::Notification done;
  absl::StatusOr<BackendResponse> slow;
  backend.Complete(Request("slow-ok"),
                   [&](absl::StatusOr<BackendResponse> answer) {
                     slow = std::move(answer);
                     done.Notify();
                   });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  server->reset();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_TRUE(slow.ok()) << slow.status();
  EXPECT_TRUE(Call(backend, Request("with-usage")).ok());
}

}  // namespace
}  // namespace arbiter
