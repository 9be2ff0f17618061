// Reloads every 60 ms while requests (about 150 ms each, so most span a
// reload) and feedback flow through a gateway built
// in-process from the quickstart config: every answer and every feedback is
// counted exactly once, whichever generation it started on.

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

absl::StatusOr<LoadedConfig> Quickstart(double input_price) {
  auto loaded = LoadEmbeddedConfig();
  if (!loaded.ok()) return loaded.status();
  loaded->config.mutable_state()->clear_path();  // In memory: no files.
  // A new price each time, so that each reload is a new generation.
  loaded->config.mutable_routes(0)->mutable_pricing()->set_input_usd_per_mtok(
      input_price);
  return loaded;
}

TEST(ReloadUnderLoadTest, NothingIsLostOrCountedTwiceAcrossReloads) {
  std::atomic<int> reloads{0};
  auto first = Quickstart(1);
  ASSERT_TRUE(first.ok()) << first.status();
  prometheus::Registry registry;
  auto host = GatewayHost::Create(*std::move(first), registry,
                                  [&] { return Quickstart(2 + reloads); });
  ASSERT_TRUE(host.ok()) << host.status();

  std::atomic<bool> stop{false};
  std::atomic<int> answered{0};
  std::atomic<int> judged{0};
  std::atomic<int> repeats_refused{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 6; ++c) {
    clients.emplace_back([&, c] {
      const char* routes[] = {"prompted", "fine-tuned", "rag"};
      for (int i = 0; !stop; ++i) {
        v1::InferRequest request;
        v1::ChatMessage* message = request.add_messages();
        message->set_role(v1::ROLE_USER);
        message->set_content("How do I reset my password?");
        request.set_route(routes[(c + i) % 3]);
        request.set_task("faq");
        v1::InferResponse response;
        std::promise<absl::Status> done;
        {
          // Held only for the call, as a front holds it.
          std::shared_ptr<Gateway> gateway = (*host)->Current();
          InferWhole(gateway->pipeline(), request,
                     absl::Now() + absl::Seconds(30), &response,
                     [&](absl::Status status) { done.set_value(status); });
        }
        const absl::Status status = done.get_future().get();
        ASSERT_TRUE(status.ok()) << status;
        ++answered;
        if (i % 2 == 1) continue;  // Half go unjudged.
        v1::FeedbackRequest feedback;
        feedback.set_request_id(response.request_id());
        feedback.set_correct(true);
        if ((*host)->Current()->feedback().Record(feedback).ok()) ++judged;
        if ((*host)->Current()->feedback().Record(feedback).status().code() ==
            absl::StatusCode::kAlreadyExists) {
          ++repeats_refused;
        }
      }
    });
  }
  for (int r = 0; r < 20; ++r) {
    absl::SleepFor(absl::Milliseconds(60));
    ++reloads;
    auto report = (*host)->Reload();
    EXPECT_TRUE(report.ok()) << report.status();
  }
  stop = true;
  for (std::thread& client : clients) client.join();

  EXPECT_GT(answered, 50) << "requests overlapped the reloads";
  EXPECT_EQ(judged, repeats_refused);
  auto stats = (*host)->Current()->admin().GetRouteStats({});
  ASSERT_TRUE(stats.ok()) << stats.status();
  int64_t completions = 0;
  int64_t feedback = 0;
  for (const v1::RouteTaskStats& cell : stats->stats()) {
    completions += cell.requests() - cell.errors();
    feedback += cell.feedback_count();
  }
  EXPECT_EQ(completions, answered);
  EXPECT_EQ(feedback, judged);
  auto economics = (*host)->Current()->admin().GetEconomics({});
  ASSERT_TRUE(economics.ok()) << economics.status();
  int64_t billed = 0;
  for (const v1::RouteEconomics& route : economics->routes()) {
    billed += route.requests();
  }
  EXPECT_EQ(billed, answered) << "and every cost is in the economics";
}

}  // namespace
}  // namespace arbiter
