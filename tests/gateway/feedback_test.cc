// Feedback through a gateway built in-process from the quickstart config
// (its sim backend answers without a network).

#include <atomic>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gateway/config.h"
#include "gateway/gateway_host.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"

namespace arbiter {
namespace {

class FeedbackTest : public ::testing::Test {
 protected:
  void Start(int decision_log_max_mb) {
    auto loaded = LoadEmbeddedConfig();
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    loaded->config.mutable_state()->clear_path();  // In memory: no files.
    loaded->config.mutable_server()->set_decision_log_max_mb(
        decision_log_max_mb);
    auto host = GatewayHost::Create(*std::move(loaded), registry_, nullptr);
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = *std::move(host);
    gateway_ = host_->Current();
  }

  // A question for the prompted route on task faq.
  static v1::InferRequest PasswordQuestion() {
    v1::InferRequest request;
    v1::ChatMessage* message = request.add_messages();
    message->set_role(v1::ROLE_USER);
    message->set_content("How do I reset my password?");
    request.set_route("prompted");
    request.set_task("faq");
    return request;
  }

  // The id of a request answered by the prompted route on task faq.
  std::string Serve() {
    const v1::InferRequest request = PasswordQuestion();
    v1::InferResponse response;
    std::promise<absl::Status> done;
    InferWhole(gateway_->pipeline(), request, absl::Now() + absl::Seconds(30),
               &response, [&](absl::Status status) { done.set_value(status); });
    const absl::Status status = done.get_future().get();
    EXPECT_TRUE(status.ok()) << status;
    return response.request_id();
  }

  absl::StatusOr<v1::FeedbackResponse> Feedback(const std::string& id) {
    v1::FeedbackRequest request;
    request.set_request_id(id);
    request.set_correct(true);
    return gateway_->feedback().Record(request);
  }

  // Judged answers of (prompted, faq) once the statistics show `want`.
  int64_t FeedbackCount(int64_t want) {
    int64_t count = -1;
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (absl::Now() < deadline) {
      auto stats = gateway_->admin().GetRouteStats({});
      if (!stats.ok()) return -1;
      for (const v1::RouteTaskStats& cell : stats->stats()) {
        if (cell.route() == "prompted" && cell.task() == "faq") {
          count = cell.feedback_count();
        }
      }
      if (count == want) break;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return count;
  }

  // The id of a stream on (prompted, faq) cancelled before it answered,
  // once it has ended.
  std::string ServeCancelled() {
    struct Sink final : InferSink {
      std::string id;
      std::promise<absl::Status> ended;
      void OnStart(const v1::InferResponse& head) override {
        id = head.request_id();
      }
      void OnDelta(BackendDelta) override {}
      void OnEnd(const absl::Status& status, v1::InferResponse&) override {
        ended.set_value(status);
      }
    };
    const v1::InferRequest request = PasswordQuestion();
    auto sink = std::make_shared<Sink>();
    auto ended = sink->ended.get_future();
    InferOptions options;
    options.stream = true;
    auto handle = gateway_->pipeline().Infer(request, options, sink);
    handle->Cancel();  // The sim's first token is 50 ms away.
    EXPECT_EQ(ended.get().code(), absl::StatusCode::kCancelled);
    return sink->id;
  }

  prometheus::Registry registry_;
  std::unique_ptr<GatewayHost> host_;
  std::shared_ptr<Gateway> gateway_;
};

TEST_F(FeedbackTest, FeedbackOnARequestThatEndedWithoutAnAnswerIsRefused) {
  Start(64);
  const std::string id = ServeCancelled();
  ASSERT_FALSE(id.empty());
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto refused = Feedback(id);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(refused.status().message()),
                ::testing::HasSubstr("ended without an answer"));
  }
  // An answered request's feedback still counts.
  EXPECT_TRUE(Feedback(Serve()).ok());
  EXPECT_EQ(FeedbackCount(1), 1);
}

TEST_F(FeedbackTest, SecondFeedbackIsRefusedWhileTheLogHoldsTheRequest) {
  Start(64);
  const std::string id = Serve();
  auto first = Feedback(id);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->route(), "prompted");
  EXPECT_EQ(first->task(), "faq");
  EXPECT_EQ(Feedback(id).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(FeedbackCount(1), 1);
}

// What happens to a request the log has forgotten (or another replica
// served): the id alone says where the credit goes, and it goes once.
TEST_F(FeedbackTest, FeedbackIsCreditedOnceFromTheIdWhenTheLogHoldsNothing) {
  Start(0);
  const std::string id = Serve();
  auto feedback = Feedback(id);
  ASSERT_TRUE(feedback.ok()) << feedback.status();
  EXPECT_EQ(feedback->route(), "prompted");
  EXPECT_EQ(feedback->task(), "faq");
  EXPECT_EQ(Feedback(id).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(FeedbackCount(1), 1);
}

TEST_F(FeedbackTest, TenThousandConcurrentFeedbacksOnOneIdCountOnce) {
  Start(0);
  const std::string id = Serve();
  std::atomic<int> accepted{0}, refused{0}, other{0};
  std::vector<std::thread> senders;
  for (int t = 0; t < 8; ++t) {
    senders.emplace_back([&] {
      for (int i = 0; i < 1250; ++i) {
        auto feedback = Feedback(id);
        if (feedback.ok()) {
          ++accepted;
        } else if (absl::IsAlreadyExists(feedback.status())) {
          ++refused;
        } else {
          ++other;
        }
      }
    });
  }
  for (std::thread& sender : senders) sender.join();
  EXPECT_EQ(accepted, 1);
  EXPECT_EQ(refused, 9999);
  EXPECT_EQ(other, 0);
  EXPECT_EQ(FeedbackCount(1), 1);
}

}  // namespace
}  // namespace arbiter
