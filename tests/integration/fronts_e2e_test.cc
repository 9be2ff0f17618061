// One request pipeline behind every front: the same table of requests sent
// through gRPC Infer and gRPC InferStream of a real `arbiter serve` must end
// the same way (status, route, kind, text, cost, citations), and a client
// that goes away mid-stream cancels the backend call, its partial cost
// billed as cancelled.

#include <httplib.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
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

// How a request ended, whichever front carried it.
struct Ending {
  grpc::StatusCode code = grpc::StatusCode::OK;
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
                               absl::StrCat("seconds_per_token: ",
                                            seconds_per_token)},
                              {"state:\n  path: data/arbiter-state.db",
                               "state:\n  path: \"\""},
                              {"dataset: questions.jsonl",
                               "dataset: " ARBITER_SOURCE_DIR
                               "/quickstart/questions.jsonl"},
                              {"corpus_dir: corpus",
                               "corpus_dir: " ARBITER_SOURCE_DIR
                               "/quickstart/corpus"}});
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
  Ending Stream(const v1::InferRequest& request,
                std::function<void(grpc::ClientContext&)> after_first_delta =
                    nullptr) {
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

  // The value of the first series of `metric` whose labels hold every one
  // of `labels` ("route=\"rag\""...), 0 when none.
  double Metric(const std::string& metric,
                const std::vector<std::string>& labels) {
    httplib::Client client("127.0.0.1", gateway_->metrics_port);
    auto result = client.Get("/metrics");
    if (!result || result->status != 200) return -1;
    for (absl::string_view line : absl::StrSplit(result->body, '\n')) {
      if (!absl::StartsWith(line, metric + "{")) continue;
      bool all = true;
      for (const std::string& label : labels) {
        all = all && absl::StrContains(line, label);
      }
      double value = 0;
      if (all && absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) {
        return value;
      }
    }
    return 0;
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
  cases.push_back({"pinned rag with citations",
                   Ask("How do I reset my password?", "rag")});
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
    const Ending streamed = Stream(c.request);
    EXPECT_EQ(streamed.code, unary.code)
        << Describe(unary) << " vs " << Describe(streamed);
    EXPECT_EQ(streamed.message, unary.message);
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
    EXPECT_EQ(streamed.finish_reason, unary.finish_reason);
    EXPECT_DOUBLE_EQ(streamed.cost_usd, unary.cost_usd);
    EXPECT_EQ(streamed.citations, unary.citations);
    if (c.request.route() == "rag") EXPECT_GT(unary.citations, 0);
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
