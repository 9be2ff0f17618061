// How ShardedBackend spreads calls, with shards that only count what they
// are given; openai_backend_test runs real sharded OpenAI backends.

#include "gateway/backends/sharded_backend.h"

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbiter {
namespace {

using ::testing::ElementsAre;

class CountingShard final : public RoomReportingBackend {
 public:
  explicit CountingShard(int room) : room_(room) {}

  std::shared_ptr<CallHandle> Stream(BackendRequest request,
                                     std::shared_ptr<StreamObserver>) override {
    std::lock_guard lock(mu_);
    models_.push_back(request.model);
    return std::make_shared<UncancellableCall>();
  }
  void CancelAll(const absl::Status& why) override {
    std::lock_guard lock(mu_);
    cancelled_with_ = why;
  }
  absl::string_view name() const override { return "shard"; }
  int room() const override { return room_; }
  bool runs_on_this_thread() const override {
    std::lock_guard lock(mu_);
    return loop_thread_ == std::this_thread::get_id();
  }

  void set_room(int room) { room_ = room; }
  void set_loop_thread(std::thread::id id) {
    std::lock_guard lock(mu_);
    loop_thread_ = id;
  }
  size_t calls() const {
    std::lock_guard lock(mu_);
    return models_.size();
  }
  absl::Status cancelled_with() const {
    std::lock_guard lock(mu_);
    return cancelled_with_;
  }

 private:
  std::atomic<int> room_;
  mutable std::mutex mu_;
  std::vector<std::string> models_;
  absl::Status cancelled_with_;
  std::thread::id loop_thread_;
};

struct Shards {
  explicit Shards(std::vector<int> rooms) {
    std::vector<std::unique_ptr<RoomReportingBackend>> owned;
    for (int room : rooms) {
      auto shard = std::make_unique<CountingShard>(room);
      shards.push_back(shard.get());
      owned.push_back(std::move(shard));
    }
    backend = std::make_unique<ShardedBackend>(std::move(owned));
  }

  void Send(int count) {
    for (int i = 0; i < count; ++i) {
      BackendRequest request;
      request.model = std::to_string(i);
      backend->Stream(std::move(request), nullptr);
    }
  }

  std::vector<size_t> Counts() const {
    std::vector<size_t> counts;
    for (const CountingShard* shard : shards) {
      counts.push_back(shard->calls());
    }
    return counts;
  }

  std::vector<CountingShard*> shards;
  std::unique_ptr<ShardedBackend> backend;
};

TEST(ShardedBackendTest, SpreadsCallsEvenlyOverShardsWithEqualRoom) {
  Shards shards({10, 10, 10});
  shards.Send(300);
  EXPECT_THAT(shards.Counts(), ElementsAre(100, 100, 100));
}

TEST(ShardedBackendTest, CallsFromManyThreadsAreSpreadEvenly) {
  Shards shards({10, 10, 10, 10});
  std::vector<std::thread> senders;
  for (int i = 0; i < 4; ++i) {
    senders.emplace_back([&shards] { shards.Send(1000); });
  }
  for (std::thread& sender : senders) sender.join();
  EXPECT_THAT(shards.Counts(), ElementsAre(1000, 1000, 1000, 1000));
}

TEST(ShardedBackendTest, SendsEachCallToTheShardWithTheMostRoom) {
  Shards shards({1, 5, 3});
  shards.Send(20);
  EXPECT_THAT(shards.Counts(), ElementsAre(0, 20, 0));
  shards.shards[2]->set_room(9);
  shards.Send(5);
  EXPECT_THAT(shards.Counts(), ElementsAre(0, 20, 5));
}

TEST(ShardedBackendTest, AFullShardIsPassedOverWhileAnotherHasRoom) {
  Shards shards({0, 0, 1, 0});
  shards.Send(8);
  EXPECT_THAT(shards.Counts(), ElementsAre(0, 0, 8, 0));
}

TEST(ShardedBackendTest, WhenAllAreFullACallStillGoesToAShardToBeRefused) {
  // The shard refuses it on its own thread, as an unsharded backend would.
  Shards shards({0, -2});
  shards.Send(4);
  EXPECT_THAT(shards.Counts(), ElementsAre(4, 0));
}

TEST(ShardedBackendTest, CancelAllReachesEveryShard) {
  Shards shards({1, 1, 1});
  shards.backend->CancelAll(absl::UnavailableError("shutting down"));
  for (const CountingShard* shard : shards.shards) {
    EXPECT_EQ(shard->cancelled_with(), absl::UnavailableError("shutting down"));
  }
}

TEST(ShardedBackendTest, KeepsTheShardsName) {
  Shards shards({1});
  EXPECT_EQ(shards.backend->name(), "shard");
}

TEST(ShardedBackendTest, ACallOnAShardsOwnThreadStaysThereWhileItHasRoom) {
  Shards shards({5, 1, 5});
  shards.shards[1]->set_loop_thread(std::this_thread::get_id());
  shards.Send(3);
  EXPECT_THAT(shards.Counts(), ElementsAre(0, 3, 0));
  // Full, it sends them where there is room.
  shards.shards[1]->set_room(0);
  shards.Send(2);
  EXPECT_THAT(shards.Counts(), ElementsAre(1, 3, 1));
  // Another thread's calls go by room alone.
  shards.shards[1]->set_room(1);
  std::thread([&] { shards.Send(2); }).join();
  EXPECT_EQ(shards.shards[1]->calls(), 3u);
}

}  // namespace
}  // namespace arbiter
