// One request pipeline behind every front: the same table of requests sent
// through gRPC Infer, gRPC InferStream and the OpenAI-compatible HTTP front
// (unary and SSE) of a real `arbiter serve` must end the same way (status,
// route, kind, text, cost, citations), and a client that goes away
// mid-stream cancels the backend call, its partial cost billed as
// cancelled.

#include <httplib.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "gateway/openai/errors.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/subprocess.h"

namespace arbiter {
namespace {

using ::arbiter::testing::RunCommand;
using ::arbiter::testing::ServingGateway;
using ::arbiter::testing::StartServe;
using ::testing::HasSubstr;

// How a request ended, whichever front carried it.
struct Ending {
  grpc::StatusCode code = grpc::StatusCode::OK;
  int http_status = 200;  // HTTP fronts only.
  std::string message;
  std::string request_id;
  std::string route;
  std::string kind;
  std::string text;
  std::string finish_reason;
  double cost_usd = 0;
  int citations = 0;
  int64_t output_tokens = 0;
  int deltas = 0;
};

std::string Describe(const Ending& e) {
  return absl::StrCat("code ", e.code, " \"", e.message, "\" route ", e.route,
                      " kind ", e.kind, " cost ", e.cost_usd, " citations ",
                      e.citations, " text \"", e.text, "\"");
}

// A config: the quickstart (with its experiment on troubleshooting) and a
// simulated model `seconds_per_token` slow.
std::string WriteConfig(const std::string& tag, double seconds_per_token) {
  std::ifstream in(ARBITER_SOURCE_DIR "/quickstart/arbiter.yaml");
  std::stringstream quickstart;
  quickstart << in.rdbuf();
  const std::string path =
      (std::filesystem::temp_directory_path() /
       absl::StrCat("arbiter-fronts-", tag, "-", getpid(), ".yaml"))
          .string();
  std::ofstream(path) << absl::StrReplaceAll(
      quickstart.str(),
      {{"seconds_per_token: 0.002",
        absl::StrCat("seconds_per_token: ", seconds_per_token)},
       {"state:\n  path: data/arbiter-state.db", "state:\n  path: \"\""},
       {"dataset: questions.jsonl",
        "dataset: " ARBITER_SOURCE_DIR "/quickstart/questions.jsonl"},
       {"corpus_dir: corpus",
        "corpus_dir: " ARBITER_SOURCE_DIR "/quickstart/corpus"}});
  return path;
}

class FrontsTest : public ::testing::Test {
 protected:
  void Serve(double seconds_per_token) {
    config_ = WriteConfig(
        ::testing::UnitTest::GetInstance()->current_test_info()->name(),
        seconds_per_token);
    auto gateway = StartServe(ARBITER_BINARY, {"--config", config_});
    ASSERT_TRUE(gateway.ok()) << gateway.status();
    gateway_ = std::make_unique<ServingGateway>(*std::move(gateway));
    stub_ = v1::Gateway::NewStub(grpc::CreateChannel(
        gateway_->target(), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    stub_.reset();
    gateway_.reset();
    if (!config_.empty()) std::filesystem::remove(config_);
  }

  Ending Unary(const v1::InferRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(30));
    v1::InferResponse response;
    const grpc::Status status = stub_->Infer(&context, request, &response);
    Ending ending;
    ending.code = status.error_code();
    ending.message = status.error_message();
    if (!status.ok()) return ending;
    ending.request_id = response.request_id();
    ending.route = response.route();
    ending.kind = response.route_kind();
    ending.text = response.text();
    ending.finish_reason = response.finish_reason();
    ending.cost_usd = response.cost_usd();
    ending.citations = response.citations_size();
    ending.output_tokens = response.usage().output_tokens();
    ending.deltas = 1;
    return ending;
  }

  // `after_first_delta`, when set, runs once the first delta has arrived.
  Ending Stream(
      const v1::InferRequest& request,
      std::function<void(grpc::ClientContext&)> after_first_delta = nullptr) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(30));
    auto reader = stub_->InferStream(&context, request);
    Ending ending;
    v1::InferChunk chunk;
    int starts = 0;
    int ends = 0;
    while (reader->Read(&chunk)) {
      switch (chunk.chunk_case()) {
        case v1::InferChunk::kStart:
          ++starts;
          EXPECT_EQ(ending.deltas, 0) << "start after a delta";
          ending.request_id = chunk.start().request_id();
          ending.route = chunk.start().route();
          ending.kind = chunk.start().route_kind();
          break;
        case v1::InferChunk::kDelta:
          EXPECT_EQ(starts, 1) << "a delta before the start";
          ending.text += chunk.delta().text();
          if (++ending.deltas == 1 && after_first_delta) {
            after_first_delta(context);
          }
          break;
        case v1::InferChunk::kEnd:
          ++ends;
          EXPECT_EQ(chunk.end().route(), ending.route);
          EXPECT_EQ(chunk.end().request_id(), ending.request_id);
          EXPECT_TRUE(chunk.end().text().empty());
          ending.finish_reason = chunk.end().finish_reason();
          ending.cost_usd = chunk.end().cost_usd();
          ending.citations = chunk.end().citations_size();
          ending.output_tokens = chunk.end().usage().output_tokens();
          break;
        default:
          ADD_FAILURE() << "an empty chunk";
      }
    }
    const grpc::Status status = reader->Finish();
    ending.code = status.error_code();
    ending.message = status.error_message();
    if (status.ok()) {
      EXPECT_EQ(starts, 1);
      EXPECT_EQ(ends, 1);
    }
    return ending;
  }

  // The request as an OpenAI client sends it: route or arbiter/auto as the
  // model, arbiter's inputs as headers.
  static std::pair<std::string, httplib::Headers> AsOpenAI(
      const v1::InferRequest& request, bool stream) {
    nlohmann::json body;
    body["model"] = request.route().empty() ? "arbiter/auto" : request.route();
    body["messages"] = nlohmann::json::array();
    for (const v1::ChatMessage& message : request.messages()) {
      const char* role = message.role() == v1::ROLE_SYSTEM      ? "system"
                         : message.role() == v1::ROLE_ASSISTANT ? "assistant"
                         : message.role() == v1::ROLE_TOOL      ? "tool"
                                                                : "user";
      nlohmann::json wire = {{"role", role}, {"content", message.content()}};
      if (!message.tool_calls_json().empty()) {
        wire["tool_calls"] = nlohmann::json::parse(message.tool_calls_json());
        wire["content"] = nullptr;
      }
      if (!message.tool_call_id().empty()) {
        wire["tool_call_id"] = message.tool_call_id();
      }
      body["messages"].push_back(std::move(wire));
    }
    if (request.limits().has_temperature()) {
      body["temperature"] = request.limits().temperature();
    }
    if (!request.unit_id().empty()) body["user"] = request.unit_id();
    if (stream) body["stream"] = true;
    httplib::Headers headers;
    if (!request.task().empty())
      headers.emplace("x-arbiter-task", request.task());
    if (request.constraints().max_cost_usd() > 0) {
      headers.emplace("x-arbiter-max-cost-usd",
                      absl::StrCat(request.constraints().max_cost_usd()));
    }
    return {body.dump(), headers};
  }

  static Ending FromError(int status, const std::string& body) {
    Ending ending;
    ending.http_status = status;
    ending.code = grpc::StatusCode::UNKNOWN;
    auto parsed = nlohmann::json::parse(body, nullptr, false);
    if (parsed.is_object() && parsed.contains("error")) {
      ending.message = parsed["error"].value("message", "");
    }
    return ending;
  }

  Ending HttpUnary(const v1::InferRequest& request) {
    httplib::Client client("127.0.0.1", gateway_->http_port);
    client.set_read_timeout(30);
    auto [body, headers] = AsOpenAI(request, false);
    auto result =
        client.Post("/v1/chat/completions", headers, body, "application/json");
    if (!result) return FromError(-1, "");
    if (result->status != 200) return FromError(result->status, result->body);
    Ending ending;
    auto answer = nlohmann::json::parse(result->body, nullptr, false);
    EXPECT_EQ(answer.value("object", ""), "chat.completion");
    const nlohmann::json& arbiter = answer["arbiter"];
    ending.request_id = arbiter.value("request_id", "");
    EXPECT_EQ(result->get_header_value("x-arbiter-request-id"),
              ending.request_id);
    ending.route = arbiter.value("route", "");
    EXPECT_EQ(result->get_header_value("x-arbiter-route"), ending.route);
    ending.kind = arbiter.value("kind", "");
    ending.cost_usd = arbiter.value("cost_usd", 0.0);
    ending.citations = static_cast<int>(arbiter["citations"].size());
    ending.text = answer["choices"][0]["message"].value("content", "");
    ending.finish_reason = answer["choices"][0].value("finish_reason", "");
    ending.output_tokens = answer["usage"].value("completion_tokens", 0);
    ending.deltas = 1;
    return ending;
  }

  Ending HttpStream(const v1::InferRequest& request) {
    httplib::Client client("127.0.0.1", gateway_->http_port);
    client.set_read_timeout(30);
    auto [body, headers] = AsOpenAI(request, true);
    std::string received;
    int status = 0;
    httplib::Request post;
    post.method = "POST";
    post.path = "/v1/chat/completions";
    post.headers = headers;
    post.body = body;
    post.set_header("Content-Type", "application/json");
    post.response_handler = [&](const httplib::Response& response) {
      status = response.status;
      return true;
    };
    post.content_receiver = [&](const char* data, size_t length, uint64_t,
                                uint64_t) {
      received.append(data, length);
      return true;
    };
    auto result = client.send(post);
    if (!result) return FromError(-1, "");
    if (status != 200) return FromError(status, received);
    Ending ending;
    bool done = false;
    int chunks = 0;
    for (absl::string_view event : absl::StrSplit(received, "\n\n")) {
      if (event.empty()) continue;
      EXPECT_TRUE(absl::ConsumePrefix(&event, "data: ")) << event;
      EXPECT_FALSE(done) << "an event after [DONE]";
      if (event == "[DONE]") {
        done = true;
        continue;
      }
      auto chunk = nlohmann::json::parse(event, nullptr, false);
      if (chunk.contains("error")) {
        return FromError(200, std::string(event));
      }
      EXPECT_EQ(chunk.value("object", ""), "chat.completion.chunk");
      const nlohmann::json& choice = chunk["choices"][0];
      if (chunks++ == 0) {
        const nlohmann::json& arbiter = chunk["arbiter"];
        ending.request_id = arbiter.value("request_id", "");
        ending.route = arbiter.value("route", "");
        ending.kind = arbiter.value("kind", "");
        EXPECT_EQ(choice["delta"].value("role", ""), "assistant");
        continue;
      }
      if (choice["delta"].contains("content") &&
          choice["delta"]["content"].is_string()) {
        ending.text += choice["delta"]["content"].get<std::string>();
        ++ending.deltas;
      }
      if (choice.contains("finish_reason") &&
          choice["finish_reason"].is_string()) {
        ending.finish_reason = choice["finish_reason"];
        ending.cost_usd = chunk["arbiter"].value("cost_usd", 0.0);
        ending.citations =
            static_cast<int>(chunk["arbiter"]["citations"].size());
      }
    }
    EXPECT_TRUE(done) << received;
    return ending;
  }

  // The sum of the series of `metric` whose labels hold every one of
  // `labels` ("route=\"rag\""...), 0 when none.
  double Metric(const std::string& metric,
                const std::vector<std::string>& labels) {
    httplib::Client client("127.0.0.1", gateway_->metrics_port);
    auto result = client.Get("/metrics");
    if (!result || result->status != 200) return -1;
    double sum = 0;
    for (absl::string_view line : absl::StrSplit(result->body, '\n')) {
      if (!absl::StartsWith(line, metric + "{")) continue;
      bool all = true;
      for (const std::string& label : labels) {
        all = all && absl::StrContains(line, label);
      }
      double value = 0;
      if (all && absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) {
        sum += value;
      }
    }
    return sum;
  }

  std::string config_;
  std::unique_ptr<ServingGateway> gateway_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
};

v1::InferRequest Ask(const std::string& question, const std::string& route,
                     const std::string& task = "") {
  v1::InferRequest request;
  v1::ChatMessage* message = request.add_messages();
  message->set_role(v1::ROLE_USER);
  message->set_content(question);
  request.set_route(route);
  request.set_task(task);
  return request;
}

struct Case {
  std::string name;
  v1::InferRequest request;
  // Whether the route and text are fixed (pinned, or a sticky arm).
  bool deterministic = true;
};

std::vector<Case> Cases() {
  std::vector<Case> cases;
  cases.push_back({"empty messages", v1::InferRequest()});
  {
    v1::InferRequest request = Ask("Hello", "prompted");
    request.mutable_messages(0)->set_role(v1::ROLE_ASSISTANT);
    cases.push_back({"last message not the user's", request});
  }
  {
    // A tool-calling turn and its result: the question is still the user's.
    v1::InferRequest request = Ask("How do I reset my password?", "prompted");
    v1::ChatMessage* call = request.add_messages();
    call->set_role(v1::ROLE_ASSISTANT);
    call->set_tool_calls_json(
        R"([{"id":"call_1","type":"function","function":{"name":"kb","arguments":"{}"}}])");
    v1::ChatMessage* result = request.add_messages();
    result->set_role(v1::ROLE_TOOL);
    result->set_tool_call_id("call_1");
    result->set_content("Settings > Account > Reset");
    cases.push_back({"a tool's result after the question", request});
  }
  {
    v1::InferRequest request;
    v1::ChatMessage* result = request.add_messages();
    result->set_role(v1::ROLE_TOOL);
    result->set_tool_call_id("call_1");
    result->set_content("42");
    request.set_route("prompted");
    cases.push_back({"a tool's result and no question", request});
  }
  cases.push_back({"unknown route", Ask("How do I reset my password?", "gpt")});
  cases.push_back(
      {"unknown task", Ask("How do I reset my password?", "", "weather")});
  {
    v1::InferRequest request = Ask("How do I reset my password?", "prompted");
    request.mutable_limits()->set_temperature(3);
    cases.push_back({"temperature out of range", request});
  }
  cases.push_back(
      {"pinned prompted", Ask("How do I reset my password?", "prompted")});
  cases.push_back(
      {"pinned fine-tuned", Ask("How do I reset my password?", "fine-tuned")});
  cases.push_back(
      {"pinned rag with citations", Ask("How do I reset my password?", "rag")});
  {
    v1::InferRequest request =
        Ask("Why does sync fail?", "", "troubleshooting");
    request.set_unit_id("user-17");  // Sticks to one arm.
    cases.push_back({"experiment arm", request});
  }
  cases.push_back(
      {"policy decides", Ask("How do I reset my password?", ""), false});
  {
    v1::InferRequest request = Ask("How do I reset my password?", "");
    request.mutable_constraints()->set_max_cost_usd(1e-12);
    cases.push_back({"no route within the cost limit", request});
  }
  return cases;
}

TEST_F(FrontsTest, EveryFrontEndsTheSameTableOfRequestsTheSameWay) {
  Serve(0.0002);
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.name);
    const Ending unary = Unary(c.request);
    if (c.name == "a tool's result after the question") {
      EXPECT_EQ(unary.code, grpc::StatusCode::OK) << Describe(unary);
    }
    if (c.name == "a tool's result and no question") {
      EXPECT_EQ(unary.code, grpc::StatusCode::INVALID_ARGUMENT);
      EXPECT_EQ(unary.message, "messages: there must be a user message");
    }
    for (const auto& [front, streamed] :
         {std::pair{"grpc stream", Stream(c.request)},
          std::pair{"http", HttpUnary(c.request)},
          std::pair{"http stream", HttpStream(c.request)}}) {
      SCOPED_TRACE(front);
      const bool http = absl::StartsWith(front, "http");
      if (!http) {
        EXPECT_EQ(streamed.code, unary.code)
            << Describe(unary) << " vs " << Describe(streamed);
        EXPECT_EQ(streamed.message, unary.message);
      } else if (unary.code != grpc::StatusCode::OK) {
        // The same failure in OpenAI's terms: an unknown route is an
        // unknown model (404), the rest keeps its message.
        if (c.name == "unknown route") {
          EXPECT_EQ(streamed.http_status, 404);
          EXPECT_THAT(streamed.message, HasSubstr("unknown model"));
        } else {
          const absl::Status same(static_cast<absl::StatusCode>(unary.code),
                                  unary.message);
          EXPECT_EQ(streamed.http_status, openai::ErrorFor(same).status);
          // Named in OpenAI's terms: "temperature", not "limits.temperature".
          const std::string field =
              unary.message.substr(0, unary.message.find(':'));
          EXPECT_THAT(streamed.message,
                      HasSubstr(field.substr(field.rfind('.') + 1)));
        }
      } else {
        EXPECT_EQ(streamed.http_status, 200) << streamed.message;
      }
      if (unary.code != grpc::StatusCode::OK) {
        EXPECT_FALSE(unary.message.empty());
        EXPECT_EQ(streamed.deltas, 0);
        continue;
      }
      EXPECT_FALSE(unary.request_id.empty());
      EXPECT_FALSE(streamed.request_id.empty());
      EXPECT_NE(unary.request_id, streamed.request_id);
      EXPECT_GT(unary.cost_usd, 0);
      EXPECT_GT(streamed.cost_usd, 0);
      EXPECT_THAT(unary.text, ::testing::StartsWith("[sim]"));
      if (!c.deterministic) continue;
      EXPECT_EQ(streamed.route, unary.route);
      EXPECT_EQ(streamed.kind, unary.kind);
      EXPECT_EQ(streamed.text, unary.text);
      // OpenAI's clients always get a finish reason ("stop" by default).
      if (!http || !unary.finish_reason.empty()) {
        EXPECT_EQ(streamed.finish_reason, unary.finish_reason);
      }
      EXPECT_DOUBLE_EQ(streamed.cost_usd, unary.cost_usd);
      EXPECT_EQ(streamed.citations, unary.citations);
      if (c.request.route() == "rag") EXPECT_GT(unary.citations, 0);
    }
  }
}

TEST_F(FrontsTest, StreamDeliversDeltasAsTheyAreGenerated) {
  Serve(0.01);  // 48 tokens: about half a second after the first.
  const absl::Time start = absl::Now();
  absl::Time first = absl::InfiniteFuture();
  const Ending ending =
      Stream(Ask("How do I reset my password?", "prompted"),
             [&](grpc::ClientContext&) { first = absl::Now(); });
  const absl::Time last = absl::Now();
  ASSERT_EQ(ending.code, grpc::StatusCode::OK) << ending.message;
  EXPECT_GT(ending.deltas, 4);
  // The first delta came well before the answer was whole.
  EXPECT_LT(first - start, absl::Milliseconds(300));
  EXPECT_GT(last - first, absl::Milliseconds(250));
}

TEST_F(FrontsTest, ClientCancellingAStreamCancelsTheBackendAndBillsWhatCame) {
  Serve(0.05);  // 48 tokens: 2.4 s when nobody cancels.
  const absl::Time start = absl::Now();
  const Ending ending =
      Stream(Ask("How do I reset my password?", "prompted"),
             [](grpc::ClientContext& context) { context.TryCancel(); });
  EXPECT_EQ(ending.code, grpc::StatusCode::CANCELLED) << ending.message;
  EXPECT_LT(absl::Now() - start, absl::Seconds(1.5));
  // The gateway saw it: counted cancelled (not an error), partial cost kept.
  const std::vector<std::string> labels = {"route=\"prompted\"",
                                           "outcome=\"cancelled\""};
  double cancelled = 0;
  for (absl::Time until = absl::Now() + absl::Seconds(5);
       absl::Now() < until && cancelled < 1;
       absl::SleepFor(absl::Milliseconds(20))) {
    cancelled = Metric("arbiter_requests_total", labels);
  }
  EXPECT_EQ(cancelled, 1);
  EXPECT_GT(Metric("arbiter_cancelled_cost_usd_total", labels), 0);
  EXPECT_EQ(Metric("arbiter_requests_total",
                   {"route=\"prompted\"", "outcome=\"error\""}),
            0);
}

}  // namespace
}  // namespace arbiter

namespace arbiter {
namespace {

constexpr char kStreamBody[] =
    R"({"model": "rag", "stream": true, "stream_options": {"include_usage": )"
    R"(true}, "messages": [{"role": "user", "content": "How do I reset my )"
    R"(password?"}]})";

TEST_F(FrontsTest, CurlSeesServerSentEventsFramedAsOpenAISendsThem) {
  Serve(0.0002);
  // Written to files: the exact bytes, blank lines included.
  const std::string base = (std::filesystem::temp_directory_path() /
                            absl::StrCat("arbiter-curl-", getpid()))
                               .string();
  const testing::CommandResult curl = RunCommand(
      "/usr/bin/curl",
      {"-sSN", "-D", base + ".head", "-o", base + ".body", "--max-time", "20",
       "-H", "content-type: application/json", "-d", kStreamBody,
       absl::StrCat("http://127.0.0.1:", gateway_->http_port,
                    "/v1/chat/completions")});
  ASSERT_EQ(curl.exit_code, 0) << curl.output;
  auto slurp = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    std::filesystem::remove(path);
    return bytes.str();
  };
  const std::string head = absl::AsciiStrToLower(slurp(base + ".head"));
  const std::string body = slurp(base + ".body");
  EXPECT_THAT(head, HasSubstr("http/1.1 200"));
  EXPECT_THAT(head, HasSubstr("content-type: text/event-stream"));
  EXPECT_THAT(head, HasSubstr("transfer-encoding: chunked"));
  EXPECT_THAT(head, HasSubstr("x-arbiter-route: rag"));
  EXPECT_THAT(head, HasSubstr("x-arbiter-request-id: arb2_"));
  ASSERT_TRUE(absl::EndsWith(body, "data: [DONE]\n\n")) << body;
  std::vector<std::string> events =
      absl::StrSplit(body.substr(0, body.size() - 2), "\n\n");
  ASSERT_GE(events.size(), 4u) << body;
  std::string id;
  int usage_chunks = 0;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    SCOPED_TRACE(events[i]);
    ASSERT_TRUE(absl::StartsWith(events[i], "data: {"));
    EXPECT_EQ(events[i].find('\n'), std::string::npos) << "one line per event";
    auto chunk = nlohmann::json::parse(events[i].substr(6), nullptr, false);
    ASSERT_TRUE(chunk.is_object());
    EXPECT_EQ(chunk.value("object", ""), "chat.completion.chunk");
    if (i == 0) id = chunk.value("id", "");
    EXPECT_EQ(chunk.value("id", ""), id) << "one id for the whole stream";
    if (chunk["choices"].empty()) {
      ++usage_chunks;
      EXPECT_GT(chunk["usage"].value("completion_tokens", 0), 0);
      EXPECT_EQ(i + 2, events.size()) << "usage comes last";
    }
  }
  EXPECT_EQ(usage_chunks, 1);
  EXPECT_EQ(events.back(), "data: [DONE]");
}

TEST_F(FrontsTest, AnHttpClientThatHangsUpCancelsItsUnaryRequest) {
  Serve(0.05);  // 2.4 s to answer.
  const std::vector<std::string> labels = {"route=\"prompted\"",
                                           "outcome=\"cancelled\""};
  const testing::CommandResult curl = RunCommand(
      "/usr/bin/curl",
      {"-sS", "--max-time", "0.5", "-H", "content-type: application/json", "-d",
       R"({"model": "prompted", "messages": [{"role": "user", "content": )"
       R"("How do I reset my password?"}]})",
       absl::StrCat("http://127.0.0.1:", gateway_->http_port,
                    "/v1/chat/completions")});
  EXPECT_EQ(curl.exit_code, 28) << curl.output;  // curl's timeout.
  double cancelled = 0;
  for (absl::Time until = absl::Now() + absl::Seconds(1.5);
       absl::Now() < until && cancelled < 1;
       absl::SleepFor(absl::Milliseconds(20))) {
    cancelled = Metric("arbiter_requests_total", labels);
  }
  // Well before the backend would have answered.
  EXPECT_EQ(cancelled, 1);
}

}  // namespace
}  // namespace arbiter
