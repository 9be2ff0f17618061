// The `openai` backend's streaming against a loopback server whose every
// byte the test writes: deltas as they arrive, usage read or counted,
// cancelling on the wire and in the queue, pass-through fields both ways,
// and streams broken in every way that matters.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gateway/backends/openai_backend.h"
#include "gateway/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "retrieval/tokenizer.h"

namespace arbiter {
namespace {

using nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

// One connection of the fake server: the request it read, and raw writes.
class Exchange final {
 public:
  Exchange(int fd, std::string body) : fd_(fd), body_(std::move(body)) {}

  [[nodiscard]] const std::string& body() const { return body_; }

  void Write(absl::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return;  // The client went away.
      bytes.remove_prefix(static_cast<size_t>(n));
    }
  }
  void StartChunked(absl::string_view content_type, int status = 200) {
    Write(absl::StrFormat(
        "HTTP/1.1 %d X\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n",
        status, content_type));
  }
  void Chunk(absl::string_view data) {
    Write(absl::StrFormat("%x\r\n", data.size()));
    Write(data);
    Write("\r\n");
  }
  void EndChunked() { Write("0\r\n\r\n"); }
  void Whole(absl::string_view content_type, absl::string_view body,
             int status = 200) {
    Write(absl::StrFormat(
        "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
        "Connection: close\r\n\r\n",
        status, content_type, body.size()));
    Write(body);
  }
  // True when the client closes the connection within `timeout`.
  bool WaitForClose(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      pollfd watched{fd_, POLLIN, 0};
      const int ready = ::poll(&watched, 1, 10);
      if (ready <= 0) continue;
      char byte;
      if (::recv(fd_, &byte, 1, 0) <= 0) return true;
    }
    return false;
  }

 private:
  const int fd_;
  const std::string body_;
};

// A loopback HTTP server that reads each request (headers and a
// Content-Length body), hands it to the test's script to answer byte by
// byte, and closes the connection.
class FakeServer final {
 public:
  using Script = std::function<void(Exchange&)>;

  explicit FakeServer(Script script) : script_(std::move(script)) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        ::listen(listener_, 64) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address),
                      &length) != 0) {
      throw std::runtime_error("fake server: cannot listen");
    }
    port_ = ntohs(address.sin_port);
    acceptor_ = std::thread([this] { Accept(); });
  }

  ~FakeServer() {
    ::shutdown(listener_, SHUT_RDWR);  // Wakes accept().
    acceptor_.join();
    ::close(listener_);
    std::lock_guard lock(mu_);
    for (std::thread& thread : connections_) thread.join();
  }

  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] int requests() {
    std::lock_guard lock(mu_);
    return static_cast<int>(bodies_.size());
  }
  [[nodiscard]] std::string last_body() {
    std::lock_guard lock(mu_);
    return bodies_.empty() ? "" : bodies_.back();
  }

 private:
  void Accept() {
    for (;;) {
      const int fd = ::accept(listener_, nullptr, nullptr);
      if (fd < 0) return;
      std::lock_guard lock(mu_);
      connections_.emplace_back([this, fd] { Serve(fd); });
    }
  }

  void Serve(int fd) {
    std::string request;
    char buffer[64 << 10];
    size_t header_end = std::string::npos;
    size_t content_length = 0;
    for (;;) {
      if (header_end != std::string::npos &&
          request.size() >= header_end + 4 + content_length) {
        break;
      }
      const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
      if (n <= 0) {
        ::close(fd);
        return;
      }
      request.append(buffer, static_cast<size_t>(n));
      if (header_end == std::string::npos) {
        header_end = request.find("\r\n\r\n");
        if (header_end == std::string::npos) continue;
        const std::string headers =
            absl::AsciiStrToLower(request.substr(0, header_end));
        const size_t at = headers.find("content-length:");
        if (at != std::string::npos) {
          const size_t end = headers.find("\r\n", at);
          (void)absl::SimpleAtoi(absl::StripAsciiWhitespace(
                                     headers.substr(at + 15, end - at - 15)),
                                 &content_length);
        }
      }
    }
    Exchange exchange(fd, request.substr(header_end + 4, content_length));
    {
      std::lock_guard lock(mu_);
      bodies_.push_back(exchange.body());
    }
    script_(exchange);
    ::shutdown(fd, SHUT_WR);
    exchange.WaitForClose(absl::Seconds(1));
    ::close(fd);
  }

  const Script script_;
  int listener_ = -1;
  int port_ = 0;
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> connections_;
  std::vector<std::string> bodies_;
};

std::string Event(const json& data) {
  return absl::StrCat("data: ", data.dump(), "\n\n");
}
constexpr char kDone[] = "data: [DONE]\n\n";

// A chat.completion.chunk with `delta` in its one choice.
json Chunk(json delta, json finish_reason = nullptr) {
  return {{"id", "chatcmpl-1"},
          {"object", "chat.completion.chunk"},
          {"created", 1},
          {"model", "m"},
          {"system_fingerprint", "fp_7"},
          {"choices",
           json::array({{{"index", 0},
                         {"delta", std::move(delta)},
                         {"finish_reason", std::move(finish_reason)}}})}};
}
json Content(const std::string& text) { return Chunk({{"content", text}}); }
json Role() { return Chunk({{"role", "assistant"}, {"content", ""}}); }
json UsageChunk(int prompt, int completion) {
  return {{"id", "chatcmpl-1"},
          {"object", "chat.completion.chunk"},
          {"choices", json::array()},
          {"usage",
           {{"prompt_tokens", prompt},
            {"completion_tokens", completion},
            {"total_tokens", prompt + completion}}}};
}

// Everything a call told its observer.
class Recorder final : public StreamObserver {
 public:
  void OnDelta(BackendDelta delta) override {
    std::lock_guard lock(mu_);
    if (ended_.HasBeenNotified()) late_delta_ = true;
    deltas_.push_back(std::move(delta));
    if (!first_delta_.HasBeenNotified()) first_delta_.Notify();
  }
  void OnEnd(absl::Status status, BackendResponse usage) override {
    std::lock_guard lock(mu_);
    ++ends_;
    status_ = std::move(status);
    usage_ = std::move(usage);
    end_thread_ = std::this_thread::get_id();
    if (!ended_.HasBeenNotified()) ended_.Notify();
  }

  bool WaitForFirstDelta(absl::Duration timeout = absl::Seconds(5)) {
    return first_delta_.WaitForNotificationWithTimeout(timeout);
  }
  bool WaitForEnd(absl::Duration timeout = absl::Seconds(5)) {
    return ended_.WaitForNotificationWithTimeout(timeout);
  }
  bool ended() const { return ended_.HasBeenNotified(); }
  absl::Status status() {
    std::lock_guard lock(mu_);
    return status_;
  }
  BackendResponse usage() {
    std::lock_guard lock(mu_);
    return usage_;
  }
  std::vector<BackendDelta> deltas() {
    std::lock_guard lock(mu_);
    return deltas_;
  }
  std::string text() {
    std::lock_guard lock(mu_);
    std::string text;
    for (const BackendDelta& delta : deltas_)
      absl::StrAppend(&text, delta.text);
    return text;
  }
  int ends() {
    std::lock_guard lock(mu_);
    return ends_;
  }
  std::thread::id end_thread() {
    std::lock_guard lock(mu_);
    return end_thread_;
  }
  bool late_delta() {
    std::lock_guard lock(mu_);
    return late_delta_;
  }

 private:
  std::mutex mu_;
  std::vector<BackendDelta> deltas_;
  absl::Status status_;
  BackendResponse usage_;
  int ends_ = 0;
  bool late_delta_ = false;
  std::thread::id end_thread_;
  absl::Notification first_delta_;
  absl::Notification ended_;
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

v1::OpenAIBackend Config(int port, int max_connections = 4) {
  v1::OpenAIBackend config;
  config.set_base_url(absl::StrCat("http://127.0.0.1:", port, "/v1"));
  config.set_max_connections(max_connections);
  ApplyOpenAIBackendDefaults(config);
  return config;
}

BackendRequest Request(bool stream = true,
                       absl::Duration timeout = absl::Seconds(10)) {
  BackendRequest request;
  request.model = "m";
  request.messages = {{"system", "Be brief."}, {"user", "Say hello."}};
  request.max_output_tokens = 16;
  request.stream = stream;
  request.timeout = timeout;
  return request;
}

// "Be brief." and "Say hello.", 4 tokens each, plus 4 of framing each.
constexpr int64_t kPromptTokens = 16;

TEST(OpenAIStreamTest, DeltasArriveWhileTheServerHoldsTheRest) {
  absl::Notification release;
  FakeServer server([&](Exchange& exchange) {
    exchange.StartChunked("text/event-stream");
    exchange.Chunk(Event(Role()) + Event(Content("Hel")));
    release.WaitForNotificationWithTimeout(absl::Seconds(10));
    exchange.Chunk(Event(Content("lo")) + Event(Chunk(json::object(), "stop")) +
                   Event(UsageChunk(11, 3)) + kDone);
    exchange.EndChunked();
  });
  OpenAIBackend backend("fake", Config(server.port()), "");
  auto recorder = std::make_shared<Recorder>();
  backend.Stream(Request(), recorder);
  ASSERT_TRUE(recorder->WaitForFirstDelta());
  EXPECT_FALSE(recorder->ended());
  EXPECT_EQ(recorder->deltas().at(0).text, "Hel");
  release.Notify();
  ASSERT_TRUE(recorder->WaitForEnd());
  ASSERT_TRUE(recorder->status().ok()) << recorder->status();
  EXPECT_EQ(recorder->text(), "Hello");
  const BackendResponse usage = recorder->usage();
  EXPECT_EQ(usage.input_tokens, 11);
  EXPECT_EQ(usage.output_tokens, 3);
  EXPECT_TRUE(usage.usage_reported);
  EXPECT_EQ(usage.finish_reason, "stop");
  EXPECT_THAT(usage.fields_json, HasSubstr(R"("system_fingerprint":"fp_7")"));
  EXPECT_EQ(recorder->ends(), 1);
  EXPECT_THAT(server.last_body(),
              AllOf(HasSubstr(R"("stream":true)"),
                    HasSubstr(R"("stream_options":{"include_usage":true})")));
}

TEST(OpenAIStreamTest, CountsTokensLocallyWhenTheStreamReportsNoUsage) {
  FakeServer server([&](Exchange& exchange) {
    exchange.StartChunked("text/event-stream; charset=utf-8");
    // A word split between deltas costs what it costs whole.
    for (const char* piece : {"Hel", "lo w", "or", "ld."}) {
      exchange.Chunk(Event(Content(piece)));
    }
    exchange.Chunk(kDone);
    exchange.EndChunked();
  });
  OpenAIBackend backend("fake", Config(server.port()), "");
  auto recorder = std::make_shared<Recorder>();
  backend.Stream(Request(), recorder);
  ASSERT_TRUE(recorder->WaitForEnd());
  ASSERT_TRUE(recorder->status().ok()) << recorder->status();
  EXPECT_EQ(recorder->text(), "Hello world.");
  EXPECT_EQ(recorder->deltas().size(), 4u);
  const BackendResponse usage = recorder->usage();
  EXPECT_FALSE(usage.usage_reported);
  EXPECT_EQ(usage.input_tokens, kPromptTokens);
  EXPECT_EQ(usage.output_tokens, retrieval::CountTokens("Hello world."));
  EXPECT_EQ(usage.output_tokens, 5);
}

TEST(OpenAIStreamTest, CancelMidStreamClosesTheConnectionAndBillsWhatCame) {
  absl::Notification closed;
  FakeServer server([&](Exchange& exchange) {
    exchange.StartChunked("text/event-stream");
    exchange.Chunk(Event(Role()) + Event(Content("Hello")));
    // Holds the rest until the client goes away.
    if (exchange.WaitForClose(absl::Seconds(10))) closed.Notify();
  });
  OpenAIBackend backend("fake", Config(server.port()), "");
  auto recorder = std::make_shared<Recorder>();
  std::shared_ptr<CallHandle> call = backend.Stream(Request(), recorder);
  ASSERT_TRUE(recorder->WaitForFirstDelta());
  const absl::Time cancelled = absl::Now();
  call->Cancel();
  call->Cancel();  // Idempotent.
  ASSERT_TRUE(recorder->WaitForEnd(absl::Seconds(2)));
  EXPECT_LT(absl::Now() - cancelled, absl::Milliseconds(500));
  EXPECT_EQ(recorder->status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(recorder->status().message(), HasSubstr("backend \"fake\""));
  const BackendResponse usage = recorder->usage();
  EXPECT_EQ(usage.input_tokens, kPromptTokens);
  EXPECT_EQ(usage.output_tokens, 2);  // "Hello".
  EXPECT_FALSE(usage.usage_reported);
  EXPECT_TRUE(closed.WaitForNotificationWithTimeout(absl::Seconds(2)))
      << "the server never saw the connection close";
  call->Cancel();  // Harmless after the end.
  EXPECT_EQ(recorder->ends(), 1);
}

TEST(OpenAIStreamTest, ACancelledQueuedRequestNeverReachesTheServer) {
  absl::Notification release;
  FakeServer server([&](Exchange& exchange) {
    exchange.StartChunked("text/event-stream");
    exchange.Chunk(Event(Content("Hi")));
    release.WaitForNotificationWithTimeout(absl::Seconds(10));
    exchange.Chunk(kDone);
    exchange.EndChunked();
  });
  OpenAIBackend backend("fake", Config(server.port(), /*max_connections=*/1),
                        "");
  auto first = std::make_shared<Recorder>();
  backend.Stream(Request(), first);
  ASSERT_TRUE(first->WaitForFirstDelta());
  auto queued = std::make_shared<Recorder>();
  std::shared_ptr<CallHandle> call = backend.Stream(Request(), queued);
  absl::SleepFor(absl::Milliseconds(50));
  call->Cancel();
  // Ends at once, while the connection is still busy.
  ASSERT_TRUE(queued->WaitForEnd(absl::Seconds(1)));
  EXPECT_EQ(queued->status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(queued->usage().input_tokens, 0);  // Nothing was sent.
  EXPECT_EQ(queued->usage().output_tokens, 0);
  EXPECT_TRUE(queued->deltas().empty());
  release.Notify();
  ASSERT_TRUE(first->WaitForEnd());
  EXPECT_TRUE(first->status().ok()) << first->status();
  // The connection was free again: had it been queued still, it would go.
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(server.requests(), 1);
}

TEST(OpenAIStreamTest, PassesFieldsThroughAndToolCallsAndLogprobsBack) {
  FakeServer server([&](Exchange& exchange) {
    exchange.StartChunked("text/event-stream");
    json call_start =
        Chunk({{"tool_calls",
                {{{"index", 0},
                  {"id", "call_1"},
                  {"type", "function"},
                  {"function", {{"name", "lookup"}, {"arguments", ""}}}}}}});
    json call_arguments =
        Chunk({{"tool_calls",
                {{{"index", 0}, {"function", {{"arguments", "{\"q\":1}"}}}}}}});
    call_arguments["choices"][0]["logprobs"] = {
        {"content", {{{"token", "x"}, {"logprob", -0.5}}}}};
    exchange.Chunk(Event(Chunk({{"role", "assistant"}, {"content", nullptr}})) +
                   Event(call_start) + Event(call_arguments) +
                   Event(Chunk(json::object(), "tool_calls")) + kDone);
    exchange.EndChunked();
  });
  OpenAIBackend backend("fake", Config(server.port()), "");
  BackendRequest request = Request();
  request.passthrough_json =
      R"({"tools":[{"type":"function","function":{"name":"lookup"}}],)"
      R"("tool_choice":"auto","logprobs":true})";
  auto recorder = std::make_shared<Recorder>();
  backend.Stream(std::move(request), recorder);
  ASSERT_TRUE(recorder->WaitForEnd());
  ASSERT_TRUE(recorder->status().ok()) << recorder->status();
  const json sent = json::parse(server.last_body());
  EXPECT_EQ(sent["tools"][0]["function"]["name"], "lookup");
  EXPECT_EQ(sent["tool_choice"], "auto");
  EXPECT_EQ(sent["logprobs"], true);
  EXPECT_EQ(sent["messages"].size(), 2u);
  const std::vector<BackendDelta> deltas = recorder->deltas();
  ASSERT_EQ(deltas.size(), 2u);
  const json first = json::parse(deltas[0].fields_json);
  EXPECT_EQ(first["tool_calls"][0]["id"], "call_1");
  EXPECT_FALSE(first.contains("role"));
  const json second = json::parse(deltas[1].fields_json);
  EXPECT_EQ(second["tool_calls"][0]["function"]["arguments"], "{\"q\":1}");
  EXPECT_EQ(second["logprobs"]["content"][0]["logprob"], -0.5);
  EXPECT_EQ(recorder->text(), "");
  EXPECT_EQ(recorder->usage().finish_reason, "tool_calls");
}

TEST(OpenAIStreamTest, AWholeAnswerIsOneDeltaThenItsToolCallsAtTheEnd) {
  const json answer = {
      {"id", "chatcmpl-2"},
      {"system_fingerprint", "fp_9"},
      {"choices",
       {{{"index", 0},
         {"message",
          {{"role", "assistant"},
           {"content", nullptr},
           {"tool_calls",
            {{{"id", "call_2"},
              {"type", "function"},
              {"function", {{"name", "lookup"}, {"arguments", "{}"}}}}}}}},
         {"logprobs", {{"content", json::array()}}},
         {"finish_reason", "tool_calls"}}}},
      {"usage", {{"prompt_tokens", 20}, {"completion_tokens", 7}}}};
  FakeServer server([&](Exchange& exchange) {
    exchange.Whole("application/json", answer.dump());
  });
  OpenAIBackend backend("fake", Config(server.port()), "");
  BackendRequest request = Request(/*stream=*/false);
  request.passthrough_json = R"({"tools":[],"logprobs":true})";
  auto recorder = std::make_shared<Recorder>();
  backend.Stream(std::move(request), recorder);
  ASSERT_TRUE(recorder->WaitForEnd());
  ASSERT_TRUE(recorder->status().ok()) << recorder->status();
  EXPECT_THAT(server.last_body(), HasSubstr(R"("stream":false)"));
  EXPECT_THAT(server.last_body(), Not(HasSubstr("stream_options")));
  ASSERT_EQ(recorder->deltas().size(), 1u);
  EXPECT_EQ(recorder->deltas()[0].text, "");
  const BackendResponse usage = recorder->usage();
  EXPECT_EQ(usage.finish_reason, "tool_calls");
  EXPECT_EQ(usage.input_tokens, 20);
  EXPECT_TRUE(usage.usage_reported);
  const json fields = json::parse(usage.fields_json);
  EXPECT_EQ(fields["tool_calls"][0]["id"], "call_2");
  EXPECT_TRUE(fields["logprobs"].contains("content"));
  EXPECT_EQ(fields["system_fingerprint"], "fp_9");
}

TEST(OpenAIStreamTest, SendsTopPStopAndSeedOnlyWhenSet) {
  FakeServer server([&](Exchange& exchange) {
    exchange.Whole("application/json",
                   R"({"choices":[{"message":{"content":"ok"}}]})");
  });
  OpenAIBackend backend("fake", Config(server.port()), "");
  BackendRequest request = Request(/*stream=*/false);
  request.top_p = 0.5;
  request.stop = {"\n\n", "END"};
  request.seed = 42;
  auto recorder = std::make_shared<Recorder>();
  backend.Stream(std::move(request), recorder);
  ASSERT_TRUE(recorder->WaitForEnd());
  const json sent = json::parse(server.last_body());
  EXPECT_EQ(sent["top_p"], 0.5);
  EXPECT_EQ(sent["stop"], json::array({"\n\n", "END"}));
  EXPECT_EQ(sent["seed"], 42);
  auto plain = std::make_shared<Recorder>();
  backend.Stream(Request(/*stream=*/false), plain);
  ASSERT_TRUE(plain->WaitForEnd());
  const json unset = json::parse(server.last_body());
  EXPECT_FALSE(unset.contains("top_p"));
  EXPECT_FALSE(unset.contains("stop"));
  EXPECT_FALSE(unset.contains("seed"));
}

TEST(OpenAIStreamTest, RefusesPassthroughThatSetsWhatArbiterSets) {
  FakeServer server([&](Exchange& exchange) {
    exchange.Whole("application/json",
                   R"({"choices":[{"message":{"content":"ok"}}]})");
  });
  OpenAIBackend backend("fake", Config(server.port()), "");
  struct Case {
    std::string passthrough;
    std::string message;
  };
  const std::vector<Case> cases = {
      {R"({"tools":[],"messages":[]})",
       R"(backend "fake": passthrough_json: "messages" is set by arbiter)"},
      {R"({"model":"other"})", R"("model" is set by arbiter)"},
      {R"({"stream":false})", R"("stream" is set by arbiter)"},
      {R"({"stream_options":{}})", R"("stream_options" is set by arbiter)"},
      {R"({"max_tokens":5})", R"("max_tokens" is set by arbiter)"},
      {R"({"seed":1})", R"("seed" is set by arbiter)"},
      {"[1]", "passthrough_json: expected an object, got an array"},
      {"{tools", "passthrough_json: not valid JSON"},
  };
  for (const Case& c : cases) {
    BackendRequest request = Request();
    request.passthrough_json = c.passthrough;
    auto recorder = std::make_shared<Recorder>();
    backend.Stream(std::move(request), recorder);
    ASSERT_TRUE(recorder->WaitForEnd()) << c.passthrough;
    EXPECT_EQ(recorder->status().code(), absl::StatusCode::kInvalidArgument)
        << c.passthrough;
    EXPECT_THAT(recorder->status().message(), HasSubstr(c.message))
        << c.passthrough;
    // Answered on the backend's thread, never inline.
    EXPECT_NE(recorder->end_thread(), std::this_thread::get_id());
  }
  EXPECT_EQ(server.requests(), 0);
}

// Streams broken in every way that matters: each fails clearly, naming the
// backend and what is wrong but not what the server sent, is counted, and
// the backend serves the next stream.
TEST(OpenAIStreamTest, MalformedStreamsFailClearlyAndTheBackendLivesOn) {
  struct Case {
    std::string name;
    std::string body;
    absl::StatusCode code;
    std::string message;
    BackendError reason;
  };
  const std::string cap_breaker =
      absl::StrCat("data: {\"x\":\"", std::string(1536 << 10, 'x'), "\"}\n\n");
  const std::vector<Case> cases = {
      {"no-done", Event(Role()) + Event(Content("Hi")),
       absl::StatusCode::kUnavailable,
       "malformed stream: it ended without data: [DONE]",
       BackendError::kMalformed},
      {"cut-inside-an-event",
       Event(Content("Hi")) + "data: {\"choices\":[{\"del",
       absl::StatusCode::kUnavailable, "(cut off inside an event)",
       BackendError::kMalformed},
      {"truncated-json",
       Event(Content("Hi")) + "data: {\"choices\":[{\"delta\":{\"con\n\n" +
           kDone,
       absl::StatusCode::kUnavailable,
       "malformed stream: event 2: not valid JSON", BackendError::kMalformed},
      {"not-utf8",
       "data: {\"choices\":[{\"delta\":{\"content\":\"caf\xe9\"}}]}\n\n" +
           std::string(kDone),
       absl::StatusCode::kUnavailable,
       "malformed stream: event 1: invalid UTF-8 at byte 36",
       BackendError::kMalformed},
      {"over-cap", Event(Content("Hi")) + cap_breaker + kDone,
       absl::StatusCode::kUnavailable,
       "malformed stream: an event is over 1048576 bytes",
       BackendError::kMalformed},
      {"wrong-type",
       R"(data: {"choices":[{"delta":{"content":42}}]})"
       "\n\n",
       absl::StatusCode::kUnavailable,
       "event 1: choices[0].delta.content: expected a string, got a number",
       BackendError::kMalformed},
      {"bad-usage",
       Event(Content("Hi")) +
           R"(data: {"choices":[],"usage":{"prompt_tokens":-3}})"
           "\n\n" +
           kDone,
       absl::StatusCode::kUnavailable,
       "event 2: usage.prompt_tokens: must be in [0, 1000000000]",
       BackendError::kMalformed},
      {"error-event",
       Event(Content("Hi")) + Event({{"error",
                                      {{"message", "upstream-secret-detail"},
                                       {"type", "server_error"},
                                       {"code", 500}}}}),
       absl::StatusCode::kUnavailable,
       "backend \"fake\": error event in the stream (code 500)",
       BackendError::kHttp5xx},
      {"error-event-4xx",
       Event({{"error", {{"message", "too long"}, {"code", 400}}}}),
       absl::StatusCode::kFailedPrecondition,
       "backend \"fake\" rejected the request: error event in the stream "
       "(code 400)",
       BackendError::kHttp4xx},
      {"error-event-no-code", Event({{"error", "boom"}}),
       absl::StatusCode::kUnavailable,
       "backend \"fake\": error event in the stream", BackendError::kHttp5xx},
  };
  std::mutex mu;
  std::string body;
  FakeServer server([&](Exchange& exchange) {
    std::string answer;
    {
      std::lock_guard lock(mu);
      answer = body;
    }
    exchange.StartChunked("text/event-stream");
    exchange.Chunk(answer);
    exchange.EndChunked();
  });
  ErrorTally errors;
  OpenAIBackend backend("fake", Config(server.port()), "", errors.Observer());
  std::map<BackendError, int> expected;
  for (const Case& c : cases) {
    {
      std::lock_guard lock(mu);
      body = c.body;
    }
    auto recorder = std::make_shared<Recorder>();
    backend.Stream(Request(), recorder);
    ASSERT_TRUE(recorder->WaitForEnd()) << c.name;
    EXPECT_EQ(recorder->status().code(), c.code) << c.name;
    EXPECT_THAT(recorder->status().message(),
                AllOf(HasSubstr("backend \"fake\""), HasSubstr(c.message),
                      Not(HasSubstr("secret"))))
        << c.name;
    EXPECT_FALSE(recorder->usage().usage_reported) << c.name;
    EXPECT_EQ(recorder->ends(), 1) << c.name;
    ++expected[c.reason];
  }
  for (const auto& [reason, count] : expected) {
    EXPECT_EQ(errors[reason], count) << BackendErrorName(reason);
  }
  {
    std::lock_guard lock(mu);
    body = Event(Content("fine")) + kDone;
  }
  auto recorder = std::make_shared<Recorder>();
  backend.Stream(Request(), recorder);
  ASSERT_TRUE(recorder->WaitForEnd());
  EXPECT_TRUE(recorder->status().ok()) << recorder->status();
  EXPECT_EQ(recorder->text(), "fine");
}

TEST(OpenAIStreamTest, AFailedStreamBillsTheTokensThatCame) {
  FakeServer server([&](Exchange& exchange) {
    exchange.StartChunked("text/event-stream");
    exchange.Chunk(Event(Content("Hello")) + Event(Content(" there")));
    exchange.EndChunked();  // No [DONE].
  });
  OpenAIBackend backend("fake", Config(server.port()), "");
  auto recorder = std::make_shared<Recorder>();
  backend.Stream(Request(), recorder);
  ASSERT_TRUE(recorder->WaitForEnd());
  EXPECT_EQ(recorder->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(recorder->text(), "Hello there");
  EXPECT_EQ(recorder->usage().input_tokens, kPromptTokens);
  EXPECT_EQ(recorder->usage().output_tokens, 4);
}

TEST(OpenAIStreamTest, CutsOffAStreamOverMaxResponseBytes) {
  FakeServer server([&](Exchange& exchange) {
    exchange.StartChunked("text/event-stream");
    const std::string event = Event(Content(std::string(100, 'x') + " "));
    for (int i = 0; i < 2000; ++i) exchange.Chunk(event);
    exchange.Chunk(kDone);
    exchange.EndChunked();
  });
  ErrorTally errors;
  v1::OpenAIBackend config = Config(server.port());
  config.set_max_response_bytes(64 << 10);
  OpenAIBackend backend("fake", config, "", errors.Observer());
  auto recorder = std::make_shared<Recorder>();
  backend.Stream(Request(), recorder);
  ASSERT_TRUE(recorder->WaitForEnd());
  EXPECT_EQ(recorder->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(recorder->status().message(),
              HasSubstr("larger than max_response_bytes (65536 bytes)"));
  EXPECT_EQ(errors[BackendError::kTooLarge], 1);
  EXPECT_GT(recorder->usage().output_tokens, 0);
  EXPECT_LT(recorder->text().size(), 64u << 10);
}

TEST(OpenAIStreamTest, AStreamPastItsTimeoutEndsWithTheTokensSoFar) {
  FakeServer server([&](Exchange& exchange) {
    exchange.StartChunked("text/event-stream");
    exchange.Chunk(Event(Content("Hello")));
    exchange.WaitForClose(absl::Seconds(5));
  });
  OpenAIBackend backend("fake", Config(server.port()), "");
  auto recorder = std::make_shared<Recorder>();
  const absl::Time start = absl::Now();
  backend.Stream(Request(/*stream=*/true, absl::Milliseconds(300)), recorder);
  ASSERT_TRUE(recorder->WaitForEnd());
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(300 + 100));
  EXPECT_EQ(recorder->status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(recorder->text(), "Hello");
  EXPECT_EQ(recorder->usage().output_tokens, 2);
}

TEST(OpenAIStreamTest, ReadsWholeAnAnswerThatDoesNotStream) {
  FakeServer server([&](Exchange& exchange) {
    exchange.Whole("application/json",
                   R"({"choices":[{"message":{"content":"Hello there."},)"
                   R"("finish_reason":"stop"}]})");
  });
  OpenAIBackend backend("fake", Config(server.port()), "");
  auto recorder = std::make_shared<Recorder>();
  backend.Stream(Request(), recorder);
  ASSERT_TRUE(recorder->WaitForEnd());
  ASSERT_TRUE(recorder->status().ok()) << recorder->status();
  EXPECT_EQ(recorder->text(), "Hello there.");
  EXPECT_EQ(recorder->usage().finish_reason, "stop");
  EXPECT_EQ(recorder->usage().output_tokens, 5);
}

TEST(OpenAIStreamTest, AnHttpErrorOfAStreamIsTheUsualError) {
  FakeServer server([&](Exchange& exchange) {
    exchange.StartChunked("text/event-stream", 503);
    exchange.Chunk(Event({{"error", "overloaded"}}));
    exchange.EndChunked();
  });
  ErrorTally errors;
  OpenAIBackend backend("fake", Config(server.port()), "", errors.Observer());
  auto recorder = std::make_shared<Recorder>();
  backend.Stream(Request(), recorder);
  ASSERT_TRUE(recorder->WaitForEnd());
  EXPECT_EQ(recorder->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(recorder->status().message(), "backend \"fake\": HTTP 503");
  // The pipeline reads why from the status, to fall back or not.
  EXPECT_EQ(BackendErrorOf(recorder->status()), BackendError::kHttp5xx);
  EXPECT_EQ(recorder->usage().input_tokens, 0);  // Refused: nothing billed.
  EXPECT_EQ(errors[BackendError::kHttp5xx], 1);
}

// An observer that throws on every delta: the stream goes on, and its end
// is heard once.
class ThrowingObserver final : public StreamObserver {
 public:
  void OnDelta(BackendDelta) override {
    ++deltas;
    throw std::runtime_error("observer bug");
  }
  void OnEnd(absl::Status status, BackendResponse) override {
    ++ends;
    ok = status.ok();
    ended.Notify();
  }
  std::atomic<int> deltas{0};
  std::atomic<int> ends{0};
  std::atomic<bool> ok{false};
  absl::Notification ended;
};

TEST(OpenAIStreamTest, AnObserverThatThrowsStillHearsTheStreamAndItsEnd) {
  FakeServer server([&](Exchange& exchange) {
    exchange.StartChunked("text/event-stream");
    exchange.Chunk(Event(Content("a")) + Event(Content("b")) + kDone);
    exchange.EndChunked();
  });
  OpenAIBackend backend("fake", Config(server.port()), "");
  auto observer = std::make_shared<ThrowingObserver>();
  backend.Stream(Request(), observer);
  ASSERT_TRUE(observer->ended.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_EQ(observer->deltas.load(), 2);
  EXPECT_EQ(observer->ends.load(), 1);
  EXPECT_TRUE(observer->ok.load());
}

TEST(TokenCounterTest, CountsPiecesAsTheirJoinedText) {
  for (const std::vector<std::string>& pieces :
       std::vector<std::vector<std::string>>{
           {"Hel", "lo w", "or", "ld."},
           {"pass", "word", "?"},
           {"caf\xC3", "\xA9 au", " lait"},
           {"", " ", "a", "", "bcdefgh", "ij  k"}}) {
    retrieval::TokenCounter counter;
    std::string joined;
    for (const std::string& piece : pieces) {
      counter.Add(piece);
      joined += piece;
    }
    EXPECT_EQ(counter.count(), retrieval::CountTokens(joined)) << joined;
  }
}

}  // namespace
}  // namespace arbiter
