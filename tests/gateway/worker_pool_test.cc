#include "gateway/worker_pool.h"

#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbiter {
namespace {

using ::testing::HasSubstr;

// Holds workers until opened.
class Gate {
 public:
  void Wait() {
    std::unique_lock lock(mu_);
    opened_cv_.wait(lock, [&] { return open_; });
  }
  void Open() {
    std::lock_guard lock(mu_);
    open_ = true;
    opened_cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable opened_cv_;
  bool open_ = false;
};

WorkerPool::Options Sized(int threads, int queue) {
  WorkerPool::Options options;
  options.name = "test";
  options.threads = threads;
  options.queue_capacity = queue;
  return options;
}

TEST(WorkerPoolTest, RunsEveryTaskOnAWorkerThread) {
  WorkerPool pool(Sized(4, 1000));
  const std::thread::id caller = std::this_thread::get_id();
  std::atomic<int> ran{0};
  std::atomic<int> on_caller{0};
  std::vector<std::promise<void>> done(200);
  for (auto& promise : done) {
    pool.Submit([&, promise = &promise](absl::Status admitted) {
      EXPECT_TRUE(admitted.ok()) << admitted;
      if (std::this_thread::get_id() == caller) ++on_caller;
      ++ran;
      promise->set_value();
    });
  }
  for (auto& promise : done) promise.get_future().wait();
  EXPECT_EQ(ran, 200);
  EXPECT_EQ(on_caller, 0);
  EXPECT_EQ(pool.rejected(), 0);
}

TEST(WorkerPoolTest, FullQueueAnswersResourceExhaustedAtOnce) {
  std::atomic<int> rejections_seen{0};
  WorkerPool::Options options = Sized(1, 1);
  options.on_rejected = [&] { ++rejections_seen; };
  WorkerPool pool(std::move(options));
  Gate gate;
  std::promise<void> started;
  pool.Submit([&](absl::Status) {
    started.set_value();
    gate.Wait();
  });
  started.get_future().wait();  // The one thread is busy...
  std::atomic<bool> queued_ran{false};
  pool.Submit([&](absl::Status admitted) {  // ...one task may wait...
    EXPECT_TRUE(admitted.ok());
    queued_ran = true;
  });
  absl::Status refused;
  bool called_inline = false;
  const absl::Time before = absl::Now();
  pool.Submit([&](absl::Status admitted) {  // ...and no more.
    refused = admitted;
    called_inline = true;
  });
  EXPECT_TRUE(called_inline) << "a refusal is answered at once";
  EXPECT_LT(absl::Now() - before, absl::Milliseconds(50));
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.message(), HasSubstr("the test pool is busy"));
  EXPECT_EQ(pool.rejected(), 1);
  EXPECT_EQ(rejections_seen, 1);
  EXPECT_EQ(pool.queued(), 1u);
  gate.Open();
  while (!queued_ran) std::this_thread::yield();
}

TEST(WorkerPoolTest, AQueuedTaskPastItsDeadlineGetsDeadlineExceeded) {
  WorkerPool pool(Sized(1, 10));
  Gate gate;
  std::promise<void> started;
  pool.Submit([&](absl::Status) {
    started.set_value();
    gate.Wait();
  });
  started.get_future().wait();  // The one thread stays busy.
  std::promise<absl::Status> late;
  std::promise<absl::Status> patient;
  const absl::Time before = absl::Now();
  absl::Duration waited;
  pool.Submit(
      [&](absl::Status admitted) {
        waited = absl::Now() - before;
        late.set_value(admitted);
      },
      before + absl::Milliseconds(50));
  pool.Submit([&](absl::Status admitted) { patient.set_value(admitted); },
              before + absl::Seconds(60));
  const absl::Status expired = late.get_future().get();
  EXPECT_EQ(expired.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(expired.message(),
              HasSubstr("deadline passed while it waited for the test pool"));
  EXPECT_GE(waited, absl::Milliseconds(49));
  EXPECT_LT(waited, absl::Milliseconds(500));  // Not when the thread frees.
  EXPECT_EQ(pool.queued(), 1u);  // Taken out of the queue; the other stays.
  gate.Open();
  EXPECT_TRUE(patient.get_future().get().ok());
}

TEST(WorkerPoolTest, ZeroQueueRunsOnlyWhatIdleThreadsCanTake) {
  WorkerPool pool(Sized(2, 0));
  Gate gate;
  std::atomic<int> started{0};
  std::atomic<int> refused{0};
  for (int i = 0; i < 5; ++i) {
    pool.Submit([&](absl::Status admitted) {
      if (!admitted.ok()) {
        ++refused;
        return;
      }
      ++started;
      gate.Wait();
    });
  }
  EXPECT_EQ(refused, 3);
  gate.Open();
}

TEST(WorkerPoolTest, ATaskThatThrowsLeavesTheWorkerServing) {
  WorkerPool pool(Sized(1, 10));
  pool.Submit([](absl::Status) { throw std::runtime_error("boom"); });
  pool.Submit([](absl::Status) { throw 42; });
  std::promise<absl::Status> next;
  pool.Submit([&](absl::Status admitted) { next.set_value(admitted); });
  EXPECT_TRUE(next.get_future().get().ok());
}

TEST(WorkerPoolTest, TasksStillQueuedAtDestructionGetUnavailable) {
  Gate gate;
  std::vector<absl::Status> outcomes;
  std::mutex outcomes_mu;
  std::promise<void> started;
  std::thread opener;
  {
    WorkerPool pool(Sized(1, 10));
    pool.Submit([&](absl::Status) {
      started.set_value();
      gate.Wait();
    });
    started.get_future().wait();
    for (int i = 0; i < 3; ++i) {
      pool.Submit([&](absl::Status admitted) {
        std::lock_guard lock(outcomes_mu);
        outcomes.push_back(admitted);
      });
    }
    opener = std::thread([&] {
      absl::SleepFor(absl::Milliseconds(20));
      gate.Open();
    });
  }  // Waits for the running task, fails the queued ones.
  opener.join();
  ASSERT_EQ(outcomes.size(), 3u);
  for (const absl::Status& status : outcomes) {
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  }
}

TEST(WorkerPoolTest, ReportsItsLoadInOrder) {
  std::mutex mu;
  std::vector<std::pair<size_t, size_t>> loads;
  WorkerPool::Options options = Sized(1, 5);
  options.on_load = [&](size_t queued, size_t busy) {
    std::lock_guard lock(mu);
    loads.emplace_back(queued, busy);
  };
  Gate gate;
  std::promise<void> started;
  std::promise<void> finished;
  {
    WorkerPool pool(std::move(options));
    pool.Submit([&](absl::Status) {
      started.set_value();
      gate.Wait();
    });
    started.get_future().wait();
    pool.Submit([&](absl::Status) { finished.set_value(); });
    {
      std::lock_guard lock(mu);
      EXPECT_EQ(loads.back(), std::make_pair(size_t{1}, size_t{1}));
    }
    gate.Open();
    finished.get_future().wait();
  }
  std::lock_guard lock(mu);
  EXPECT_EQ(loads.back(), std::make_pair(size_t{0}, size_t{0}));
}

}  // namespace
}  // namespace arbiter
