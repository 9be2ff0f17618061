// The simulator streaming: in-process (SimBackend, one timer thread for
// every stream) and over HTTP (sim-server's SSE, read by the openai
// backend): pacing, the same text as a unary answer for the same seed,
// cancelling, and many streams without a thread each.

#include <dirent.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/sse.h"
#include "gateway/backends/openai_backend.h"
#include "gateway/backends/sim_backend.h"
#include "gateway/config.h"
#include "gateway/sim/sim_server.h"
#include "gateway/sim/simulator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "retrieval/tokenizer.h"

namespace arbiter {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

constexpr char kQuestions[] = R"(
{"id": "q1", "task": "faq", "question": "How do I reset my password?", "answer": "Settings > Security > Reset password"}
{"id": "q2", "task": "faq", "question": "Where are my exports?", "answer": "the Exports tab"}
{"id": "q3", "task": "faq", "question": "Can I change my email?", "answer": "Profile > Email"}
)";

std::shared_ptr<const sim::Simulator> MakeSimulator(double ttft, double spt,
                                                    int output_tokens = 20,
                                                    double accuracy = 0.5) {
  v1::SimBackend config;
  config.set_seed(3);
  config.set_time_to_first_token_seconds(ttft);
  config.set_seconds_per_token(spt);
  config.set_output_tokens(output_tokens);
  v1::SimModel* model = config.add_models();
  model->set_name("m");
  model->set_accuracy(accuracy);
  auto questions = sim::ParseQuestionSet(kQuestions);
  EXPECT_TRUE(questions.ok()) << questions.status();
  auto simulator = sim::Simulator::Create(config, *std::move(questions));
  EXPECT_TRUE(simulator.ok()) << simulator.status();
  return std::shared_ptr<const sim::Simulator>(*std::move(simulator));
}

BackendRequest Ask(bool stream, std::optional<int64_t> seed = std::nullopt,
                   const std::string& question = "How do I reset my password?",
                   absl::Duration timeout = absl::Seconds(30)) {
  BackendRequest request;
  request.model = "m";
  request.messages = {{"user", question}};
  request.stream = stream;
  request.seed = seed;
  request.timeout = timeout;
  return request;
}

// Everything a call told its observer, with the time of each delta.
class Recorder final : public StreamObserver {
 public:
  void OnDelta(BackendDelta delta) override {
    std::lock_guard lock(mu_);
    if (ended_.HasBeenNotified()) late_delta_ = true;
    times_.push_back(absl::Now());
    deltas_.push_back(std::move(delta.text));
    if (!first_delta_.HasBeenNotified()) first_delta_.Notify();
  }
  void OnEnd(absl::Status status, BackendResponse usage) override {
    std::lock_guard lock(mu_);
    ++ends_;
    status_ = std::move(status);
    usage_ = std::move(usage);
    end_time_ = absl::Now();
    if (!ended_.HasBeenNotified()) ended_.Notify();
  }

  bool WaitForFirstDelta(absl::Duration timeout = absl::Seconds(10)) {
    return first_delta_.WaitForNotificationWithTimeout(timeout);
  }
  bool WaitForEnd(absl::Duration timeout = absl::Seconds(10)) {
    return ended_.WaitForNotificationWithTimeout(timeout);
  }
  absl::Status status() {
    std::lock_guard lock(mu_);
    return status_;
  }
  BackendResponse usage() {
    std::lock_guard lock(mu_);
    return usage_;
  }
  std::vector<std::string> deltas() {
    std::lock_guard lock(mu_);
    return deltas_;
  }
  std::vector<absl::Time> times() {
    std::lock_guard lock(mu_);
    return times_;
  }
  absl::Time end_time() {
    std::lock_guard lock(mu_);
    return end_time_;
  }
  std::string text() {
    std::lock_guard lock(mu_);
    std::string text;
    for (const std::string& delta : deltas_) absl::StrAppend(&text, delta);
    return text;
  }
  int ends() {
    std::lock_guard lock(mu_);
    return ends_;
  }
  bool late_delta() {
    std::lock_guard lock(mu_);
    return late_delta_;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> deltas_;
  std::vector<absl::Time> times_;
  absl::Status status_;
  BackendResponse usage_;
  absl::Time end_time_;
  int ends_ = 0;
  bool late_delta_ = false;
  absl::Notification first_delta_;
  absl::Notification ended_;
};

std::shared_ptr<Recorder> Streamed(Backend& backend, BackendRequest request) {
  auto recorder = std::make_shared<Recorder>();
  backend.Stream(std::move(request), recorder);
  EXPECT_TRUE(recorder->WaitForEnd(absl::Seconds(30)));
  return recorder;
}

absl::StatusOr<BackendResponse> Complete(Backend& backend,
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

int ThreadCount() {
  int threads = 0;
  if (DIR* tasks = opendir("/proc/self/task")) {
    while (dirent* entry = readdir(tasks)) threads += entry->d_name[0] != '.';
    closedir(tasks);
  }
  return threads;
}

TEST(SimStreamTest, FirstDeltaAfterTimeToFirstTokenThenOnePerTokenTime) {
  constexpr double kTtft = 0.2;
  constexpr double kPerToken = 0.02;
  SimBackend backend("sim", MakeSimulator(kTtft, kPerToken));
  const absl::Time start = absl::Now();
  auto recorder = Streamed(backend, Ask(/*stream=*/true));
  ASSERT_TRUE(recorder->status().ok()) << recorder->status();
  const std::vector<std::string> deltas = recorder->deltas();
  const std::vector<absl::Time> times = recorder->times();
  ASSERT_GT(deltas.size(), 5u);
  // Delta i goes out once the tokens before it have been generated.
  int64_t tokens_before = 0;
  for (size_t i = 0; i < deltas.size(); ++i) {
    EXPECT_GE(times[i] - start,
              absl::Seconds(kTtft + kPerToken * tokens_before) -
                  absl::Milliseconds(1))
        << "delta " << i;
    tokens_before += retrieval::CountTokens(deltas[i]);
  }
  EXPECT_EQ(tokens_before, recorder->usage().output_tokens);
  EXPECT_GE(recorder->usage().output_tokens, 20);  // Padded to 20 or more.
  // It ends when the unary answer would come.
  EXPECT_GE(
      recorder->end_time() - start,
      absl::Seconds(kTtft + kPerToken * tokens_before) - absl::Milliseconds(1));
  EXPECT_EQ(recorder->usage().finish_reason, "stop");
}

TEST(SimStreamTest, StreamedTextIsTheUnaryTextForTheSameSeed) {
  SimBackend backend("sim", MakeSimulator(0, 0.001));
  std::set<std::string> texts;
  for (int64_t seed = 0; seed < 12; ++seed) {
    for (const char* question :
         {"How do I reset my password?", "Where are my exports?"}) {
      auto unary = Complete(backend, Ask(false, seed, question));
      ASSERT_TRUE(unary.ok()) << unary.status();
      auto streamed = Streamed(backend, Ask(true, seed, question));
      ASSERT_TRUE(streamed->status().ok()) << streamed->status();
      EXPECT_EQ(streamed->text(), unary->text) << "seed " << seed;
      EXPECT_EQ(streamed->usage().output_tokens, unary->output_tokens);
      EXPECT_EQ(streamed->usage().input_tokens, unary->input_tokens);
      // The same seed again, the same answer.
      auto again = Complete(backend, Ask(false, seed, question));
      EXPECT_EQ(again->text, unary->text);
      texts.insert(unary->text);
    }
  }
  // At accuracy 0.5 the seeds do not all choose alike.
  EXPECT_GT(texts.size(), 2u);
}

TEST(SimStreamTest, SendsAFewWordsPerDeltaWhenTokensAreFast) {
  SimBackend fast("sim", MakeSimulator(0, 0.001, /*output_tokens=*/200));
  auto recorder = Streamed(fast, Ask(true));
  ASSERT_TRUE(recorder->status().ok()) << recorder->status();
  const std::vector<std::string> deltas = recorder->deltas();
  // 200 tokens of 1 ms: about one delta per 10 ms, each of >= 10 tokens.
  EXPECT_LE(deltas.size(), 21u);
  EXPECT_GE(deltas.size(), 10u);
  for (size_t i = 0; i + 1 < deltas.size(); ++i) {
    EXPECT_GE(retrieval::CountTokens(deltas[i]), 10) << deltas[i];
  }
  SimBackend instant("sim", MakeSimulator(0, 0));
  auto at_once = Streamed(instant, Ask(true));
  EXPECT_EQ(at_once->deltas().size(), 1u);
}

TEST(SimStreamTest, CancelEndsAtOnceWithTheTokensSoFar) {
  SimBackend backend("sim", MakeSimulator(0.02, 0.05, /*output_tokens=*/40));
  auto recorder = std::make_shared<Recorder>();
  std::shared_ptr<CallHandle> call = backend.Stream(Ask(true), recorder);
  ASSERT_TRUE(recorder->WaitForFirstDelta());
  absl::SleepFor(absl::Milliseconds(120));  // A few more deltas.
  const absl::Time cancelled = absl::Now();
  call->Cancel();
  ASSERT_TRUE(recorder->WaitForEnd(absl::Seconds(1)));
  EXPECT_LT(recorder->end_time() - cancelled, absl::Milliseconds(50));
  EXPECT_EQ(recorder->status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(recorder->status().message(), HasSubstr("backend \"sim\""));
  const BackendResponse usage = recorder->usage();
  EXPECT_EQ(usage.output_tokens, retrieval::CountTokens(recorder->text()));
  EXPECT_GT(usage.output_tokens, 0);
  EXPECT_LT(usage.output_tokens, 40);
  EXPECT_GT(usage.input_tokens, 0);
  absl::SleepFor(absl::Milliseconds(150));
  EXPECT_FALSE(recorder->late_delta());
  call->Cancel();  // Harmless after the end.
  EXPECT_EQ(recorder->ends(), 1);
}

TEST(SimStreamTest, AStreamPastItsTimeoutEndsWithTheTokensSoFar) {
  SimBackend backend("sim", MakeSimulator(0.02, 0.05, /*output_tokens=*/40));
  const absl::Time start = absl::Now();
  auto recorder =
      Streamed(backend, Ask(true, std::nullopt, "How do I reset my password?",
                            absl::Milliseconds(300)));
  EXPECT_EQ(recorder->status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(recorder->end_time() - start, absl::Milliseconds(299));
  EXPECT_LT(recorder->end_time() - start, absl::Milliseconds(400));
  EXPECT_GT(recorder->usage().output_tokens, 0);
  EXPECT_EQ(recorder->usage().output_tokens,
            retrieval::CountTokens(recorder->text()));
}

TEST(SimStreamTest, RefusesPassthroughNamingTheFirstField) {
  SimBackend backend("sim", MakeSimulator(0, 0));
  BackendRequest tools = Ask(true);
  tools.passthrough_json = R"({"tools":[],"response_format":{}})";
  auto refused = Streamed(backend, std::move(tools));
  EXPECT_EQ(refused->status(),
            absl::InvalidArgumentError(
                "backend \"sim\" is a simulator and cannot honour \"tools\""));
  EXPECT_TRUE(refused->deltas().empty());
  BackendRequest format = Ask(false);
  format.passthrough_json = R"({"response_format":{},"tools":[]})";
  EXPECT_THAT(Streamed(backend, std::move(format))->status().message(),
              HasSubstr("cannot honour \"response_format\""));
  BackendRequest garbage = Ask(false);
  garbage.passthrough_json = "{nope";
  EXPECT_EQ(Streamed(backend, std::move(garbage))->status().code(),
            absl::StatusCode::kInvalidArgument);
  BackendRequest none = Ask(false);
  none.passthrough_json = "{}";
  EXPECT_TRUE(Streamed(backend, std::move(none))->status().ok());
}

TEST(SimStreamTest, CancelAllEndsEveryStream) {
  SimBackend backend("sim", MakeSimulator(5, 0.05));
  std::vector<std::shared_ptr<Recorder>> recorders;
  for (int i = 0; i < 100; ++i) {
    recorders.push_back(std::make_shared<Recorder>());
    backend.Stream(Ask(i % 2 == 0), recorders.back());
  }
  backend.CancelAll(absl::UnavailableError("shutting down"));
  for (auto& recorder : recorders) {
    ASSERT_TRUE(recorder->WaitForEnd(absl::Seconds(1)));
    EXPECT_EQ(recorder->status(), absl::UnavailableError("shutting down"));
  }
}

// 10,000 concurrent streams are timers on the one timer thread.
TEST(SimStreamTest, HoldsTenThousandStreamsWithoutAThreadEach) {
  constexpr int kStreams = 10'000;
  SimBackend backend("sim", MakeSimulator(0.5, 0.05, /*output_tokens=*/10));
  const int threads_before = ThreadCount();
  std::vector<std::shared_ptr<Recorder>> recorders;
  recorders.reserve(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    recorders.push_back(std::make_shared<Recorder>());
    backend.Stream(Ask(true, i), recorders.back());
  }
  EXPECT_LE(ThreadCount(), threads_before);
  for (auto& recorder : recorders) {
    ASSERT_TRUE(recorder->WaitForEnd(absl::Seconds(30)));
    ASSERT_TRUE(recorder->status().ok()) << recorder->status();
    EXPECT_GT(recorder->deltas().size(), 1u);
  }
}

// sim-server over real HTTP.
class SimServerStreamTest : public ::testing::Test {
 protected:
  static constexpr double kTtft = 0.1;

  void SetUp() override {
    auto server =
        sim::SimServer::Start(MakeSimulator(kTtft, 0.005), "127.0.0.1", 0);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  // The events of one streamed answer, and its headers' content type.
  std::vector<std::string> StreamEvents(const json& body,
                                        std::string* content_type) {
    httplib::Client client("127.0.0.1", server_->port());
    client.set_read_timeout(10);
    std::vector<std::string> events;
    sse::Parser parser(1 << 20);
    httplib::Request request;
    request.method = "POST";
    request.path = "/v1/chat/completions";
    request.body = body.dump();
    request.set_header("Content-Type", "application/json");
    request.content_receiver = [&](const char* data, size_t size, uint64_t,
                                   uint64_t) {
      return parser
          .Feed(absl::string_view(data, size),
                [&](absl::string_view event) {
                  events.emplace_back(event);
                  return absl::OkStatus();
                })
          .ok();
    };
    auto result = client.send(request);
    EXPECT_TRUE(result);
    if (result) {
      EXPECT_EQ(result->status, 200);
      *content_type = result->get_header_value("Content-Type");
    }
    return events;
  }

  std::string UnaryText(json body) {
    body.erase("stream");
    body.erase("stream_options");
    httplib::Client client("127.0.0.1", server_->port());
    auto result =
        client.Post("/v1/chat/completions", body.dump(), "application/json");
    EXPECT_TRUE(result);
    if (!result) return "";
    EXPECT_EQ(result->status, 200) << result->body;
    return json::parse(result->body)["choices"][0]["message"]["content"];
  }

  v1::OpenAIBackend BackendConfig(int max_connections = 8) {
    v1::OpenAIBackend config;
    config.set_base_url(
        absl::StrCat("http://127.0.0.1:", server_->port(), "/v1"));
    config.set_max_connections(max_connections);
    ApplyOpenAIBackendDefaults(config);
    return config;
  }

  std::unique_ptr<sim::SimServer> server_;
};

TEST_F(SimServerStreamTest, StreamsAsOpenAIFramesIt) {
  const json body = {
      {"model", "m"},
      {"messages", {{{"role", "user"}, {"content", "Where are my exports?"}}}},
      {"stream", true},
      {"stream_options", {{"include_usage", true}}},
      {"seed", 7}};
  std::string content_type;
  const std::vector<std::string> events = StreamEvents(body, &content_type);
  EXPECT_EQ(content_type, "text/event-stream");
  ASSERT_GE(events.size(), 5u);
  EXPECT_EQ(events.back(), "[DONE]");
  const json usage_chunk = json::parse(events[events.size() - 2]);
  EXPECT_EQ(usage_chunk["choices"], json::array());
  EXPECT_GE(usage_chunk["usage"]["completion_tokens"], 20);
  EXPECT_GT(usage_chunk["usage"]["prompt_tokens"], 0);
  const json first = json::parse(events[0]);
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  const size_t content_chunks = events.size() - 2;
  for (size_t i = 0; i < content_chunks; ++i) {
    const json chunk = json::parse(events[i]);
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    EXPECT_EQ(chunk["id"], first["id"]);
    EXPECT_EQ(chunk["created"], first["created"]);
    EXPECT_EQ(chunk["model"], "m");
    ASSERT_EQ(chunk["choices"].size(), 1u);
    const json& choice = chunk["choices"][0];
    EXPECT_EQ(choice["index"], 0);
    if (i > 0) {
      EXPECT_FALSE(choice["delta"].contains("role"));
    }
    text += choice["delta"].value("content", "");
    if (i + 1 < content_chunks) {
      EXPECT_TRUE(choice["finish_reason"].is_null()) << i;
    } else {
      EXPECT_EQ(choice["finish_reason"], "stop");
    }
  }
  EXPECT_EQ(text, UnaryText(body));
  // Without include_usage, no usage chunk.
  json no_usage = body;
  no_usage.erase("stream_options");
  const std::vector<std::string> plain = StreamEvents(no_usage, &content_type);
  ASSERT_GE(plain.size(), 2u);
  EXPECT_EQ(plain.back(), "[DONE]");
  EXPECT_FALSE(json::parse(plain[plain.size() - 2]).contains("usage"));
}

TEST_F(SimServerStreamTest, TheOpenAIBackendStreamsItAsTheUnaryAnswer) {
  OpenAIBackend backend("sim-http", BackendConfig(), "");
  for (int64_t seed : {1, 2, 3, 4}) {
    const absl::Time start = absl::Now();
    auto streamed = Streamed(backend, Ask(true, seed));
    ASSERT_TRUE(streamed->status().ok()) << streamed->status();
    EXPECT_GE(streamed->times().at(0) - start,
              absl::Seconds(kTtft) - absl::Milliseconds(1));
    EXPECT_GT(streamed->deltas().size(), 1u);
    auto unary = Complete(backend, Ask(false, seed));
    ASSERT_TRUE(unary.ok()) << unary.status();
    EXPECT_EQ(streamed->text(), unary->text);
    const BackendResponse usage = streamed->usage();
    EXPECT_TRUE(usage.usage_reported);
    EXPECT_EQ(usage.output_tokens, unary->output_tokens);
    EXPECT_EQ(usage.input_tokens, unary->input_tokens);
    EXPECT_EQ(usage.finish_reason, "stop");
  }
}

TEST_F(SimServerStreamTest, HoldsManyStreamsWithoutAThreadEach) {
  constexpr int kStreams = 500;
  // Answers that take 2 s: every stream must be open at once.
  auto slow = sim::SimServer::Start(MakeSimulator(1.0, 0.05), "127.0.0.1", 0);
  ASSERT_TRUE(slow.ok()) << slow.status();
  v1::OpenAIBackend config = BackendConfig(kStreams);
  config.set_base_url(
      absl::StrCat("http://127.0.0.1:", (*slow)->port(), "/v1"));
  OpenAIBackend backend("sim-http", config, "");
  const int threads_before = ThreadCount();
  std::vector<std::shared_ptr<Recorder>> recorders;
  for (int i = 0; i < kStreams; ++i) {
    recorders.push_back(std::make_shared<Recorder>());
    backend.Stream(Ask(true, i), recorders.back());
  }
  for (auto& recorder : recorders) {
    ASSERT_TRUE(recorder->WaitForFirstDelta(absl::Seconds(20)));
  }
  // Every stream had its first delta before any ended.
  for (auto& recorder : recorders) EXPECT_EQ(recorder->ends(), 0);
  EXPECT_LE(ThreadCount(), threads_before + 2);
  for (auto& recorder : recorders) {
    ASSERT_TRUE(recorder->WaitForEnd(absl::Seconds(20)));
    EXPECT_TRUE(recorder->status().ok()) << recorder->status();
  }
}

TEST_F(SimServerStreamTest, ACancelledStreamLeavesTheServerServing) {
  OpenAIBackend backend("sim-http", BackendConfig(), "");
  auto recorder = std::make_shared<Recorder>();
  std::shared_ptr<CallHandle> call = backend.Stream(Ask(true), recorder);
  ASSERT_TRUE(recorder->WaitForFirstDelta());
  call->Cancel();
  ASSERT_TRUE(recorder->WaitForEnd());
  EXPECT_EQ(recorder->status().code(), absl::StatusCode::kCancelled);
  auto next = Streamed(backend, Ask(true));
  EXPECT_TRUE(next->status().ok()) << next->status();
}

}  // namespace
}  // namespace arbiter
