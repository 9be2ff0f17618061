#include "gateway/judged_ids.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace arbiter {
namespace {

std::string Mac(int i) {
  std::string mac(16, '\0');
  for (int b = 0; b < 4; ++b) mac[b] = static_cast<char>(i >> (8 * b));
  mac[15] = 'x';
  return mac;
}

TEST(JudgedIdsTest, AMacIsNewOnceAndOnlyItsFirst16BytesCount) {
  JudgedIds judged;
  const absl::Time t = absl::FromUnixSeconds(1'800'000'000);
  EXPECT_EQ(judged.Insert(Mac(1), t), Judging::kFirst);
  EXPECT_EQ(judged.Insert(Mac(1), t), Judging::kRepeat);
  EXPECT_EQ(judged.Insert(Mac(1) + "tail", t), Judging::kRepeat);
  EXPECT_EQ(judged.Insert(Mac(2), t), Judging::kFirst);
  EXPECT_EQ(judged.size(), 2u);
}

TEST(JudgedIdsTest, AnUnansweredRequestIsNeverJudged) {
  JudgedIds judged;
  const absl::Time t = absl::FromUnixSeconds(1'700'000'000);
  judged.MarkUnanswered(Mac(1), t);
  EXPECT_EQ(judged.Insert(Mac(1), t), Judging::kUnanswered);
  EXPECT_EQ(judged.Insert(Mac(1), t), Judging::kUnanswered);
  // One judged before it ended stays judged.
  EXPECT_EQ(judged.Insert(Mac(2), t), Judging::kFirst);
  judged.MarkUnanswered(Mac(2), t);
  EXPECT_EQ(judged.Insert(Mac(2), t), Judging::kRepeat);
  // Forgotten with the rest once out of the window.
  judged.ForgetIssuedBefore(t + absl::Seconds(1));
  EXPECT_EQ(judged.size(), 0u);
}

TEST(JudgedIdsTest, ForgetsOnlyThoseIssuedBeforeTheCutoff) {
  JudgedIds judged;
  const absl::Time t = absl::FromUnixSeconds(1'800'000'000);
  judged.Insert(Mac(1), t - absl::Hours(200));
  judged.Insert(Mac(2), t - absl::Hours(1));
  judged.ForgetIssuedBefore(t - absl::Hours(168));
  EXPECT_EQ(judged.size(), 1u);
  EXPECT_EQ(judged.Insert(Mac(1), t), Judging::kFirst);
  EXPECT_EQ(judged.Insert(Mac(2), t), Judging::kRepeat);
}

TEST(JudgedIdsTest, ConcurrentInsertsOfTheSameMacsAdmitEachOnce) {
  JudgedIds judged;
  const absl::Time t = absl::FromUnixSeconds(1'800'000'000);
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int n = 0; n < 4; ++n) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        if (judged.Insert(Mac(i), t) == Judging::kFirst) ++admitted;
        if (i % 500 == 0) judged.ForgetIssuedBefore(t - absl::Hours(1));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(admitted, 2000);
  EXPECT_EQ(judged.size(), 2000u);
}

}  // namespace
}  // namespace arbiter
