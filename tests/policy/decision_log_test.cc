#include "policy/decision_log.h"

#include <cmath>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace arbiter::policy {
namespace {

std::string Id(int i) { return absl::StrCat("arb1_request-", i); }

std::vector<float> UnitVector(int dim, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> v(dim);
  float norm = 0;
  for (float& x : v) {
    x = normal(rng);
    norm += x * x;
  }
  for (float& x : v) x /= std::sqrt(norm);
  return v;
}

TEST(DecisionLogTest, FeedbackFindsTheRecordOnce) {
  DecisionLog log({});
  log.Record("a");
  auto embedding = log.TakeFeedback("a");
  ASSERT_TRUE(embedding.ok()) << embedding.status();
  EXPECT_TRUE(embedding->empty());
  EXPECT_EQ(log.TakeFeedback("a").status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST(DecisionLogTest, UnknownIdIsNotFound) {
  DecisionLog log({});
  log.Record("a");
  auto embedding = log.TakeFeedback("missing");
  EXPECT_EQ(embedding.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(embedding.status().message().find("missing"), std::string::npos);
}

TEST(DecisionLogTest, MessageQuotesAtMost128BytesOfTheId) {
  DecisionLog log({});
  const std::string huge(100'000, 'x');
  auto embedding = log.TakeFeedback(huge);
  EXPECT_EQ(embedding.status().code(), absl::StatusCode::kNotFound);
  EXPECT_LT(embedding.status().message().size(), 300u);
}

TEST(DecisionLogTest, ZeroBytesKeepsNothing) {
  DecisionLog log({.max_bytes = 0});
  log.Record("a");
  EXPECT_EQ(log.size(), 0u);
  EXPECT_EQ(log.bytes(), 0u);
  EXPECT_EQ(log.TakeFeedback("a").status().code(), absl::StatusCode::kNotFound);
}

TEST(DecisionLogTest, EmbeddingComesBackWithinQuantisationError) {
  constexpr int kDim = 512;
  DecisionLog log({.embedding_dim = kDim});
  std::mt19937 rng(7);
  const std::vector<float> embedding = UnitVector(kDim, rng);
  log.Record("a", embedding);
  log.Record("other-size", std::vector<float>(kDim / 2, 0.1f));
  auto back = log.TakeFeedback("a");
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), embedding.size());
  float max_abs = 0;
  for (float x : embedding) max_abs = std::max(max_abs, std::fabs(x));
  double dot = 0;
  for (int i = 0; i < kDim; ++i) {
    // Half a step of the 8-bit code, at most.
    EXPECT_NEAR((*back)[i], embedding[i], max_abs / 254 + 1e-7) << i;
    dot += (*back)[i] * embedding[i];
  }
  EXPECT_NEAR(dot, 1.0, 1e-3);
  // A vector of the wrong size is not kept, but the request is.
  auto other = log.TakeFeedback("other-size");
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_TRUE(other->empty());
}

// The accounting: filled far past its budget, the log stays within it,
// holds most of what the budget buys, and forgets the oldest requests
// first while the newest are all still there.
TEST(DecisionLogTest, StaysWithinItsBytesAndForgetsTheOldestFirst) {
  constexpr size_t kBudget = 1 << 20;
  DecisionLog log({.max_bytes = kBudget});
  constexpr int kRequests = 200'000;
  size_t most = 0;
  for (int i = 0; i < kRequests; ++i) {
    log.Record(Id(i));
    most = std::max(most, log.bytes());
  }
  EXPECT_LE(most, kBudget);
  const size_t kept = log.size();
  EXPECT_LT(kept, static_cast<size_t>(kRequests));
  // 16-byte slots, up to three quarters full, in eight generations of
  // which the newest is filling: 21 to 25 bytes a request.
  const double per_request = static_cast<double>(log.bytes()) / kept;
  EXPECT_GE(per_request, 16 / 0.75);
  EXPECT_LE(per_request, 16 / 0.75 * 8 / 7 + 1);
  // Generations hold consecutive requests: exactly the newest are kept.
  const int oldest_kept = kRequests - static_cast<int>(kept);
  for (int i = oldest_kept; i < kRequests; ++i) {
    ASSERT_TRUE(log.TakeFeedback(Id(i)).ok()) << i;
  }
  for (int i = 0; i < oldest_kept; ++i) {
    ASSERT_EQ(log.TakeFeedback(Id(i)).status().code(),
              absl::StatusCode::kNotFound)
        << i;
  }
}

TEST(DecisionLogTest, EmbeddingsCountTowardsTheBudget) {
  constexpr size_t kBudget = 4 << 20;
  constexpr int kDim = 512;
  DecisionLog log({.max_bytes = kBudget, .embedding_dim = kDim});
  std::mt19937 rng(1);
  const std::vector<float> embedding = UnitVector(kDim, rng);
  size_t most = 0;
  for (int i = 0; i < 50'000; ++i) {
    log.Record(Id(i), embedding);
    most = std::max(most, log.bytes());
  }
  EXPECT_LE(most, kBudget);
  // 516 bytes of codes and scale and a share of a 16-byte slot each.
  const double per_request = static_cast<double>(log.bytes()) / log.size();
  EXPECT_GT(per_request, 516 + 16);
  EXPECT_LT(per_request, 516 * 8.0 / 7 + 32);
  auto newest = log.TakeFeedback(Id(49'999));
  ASSERT_TRUE(newest.ok()) << newest.status();
  EXPECT_EQ(newest->size(), static_cast<size_t>(kDim));
}

// Records and feedback from several threads while generations turn over
// (ThreadSanitizer runs this in the concurrency tests). A thread held up
// while others fill the log may find its request forgotten already; it
// never finds a wrong embedding, nor takes the same feedback twice.
TEST(DecisionLogTest, RecordsAndFeedbackFromManyThreads) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 20'000;
  constexpr size_t kBudget = 256 << 10;
  DecisionLog log({.max_bytes = kBudget, .embedding_dim = 16});
  std::vector<std::thread> threads;
  std::vector<int> taken(kThreads, 0);
  std::vector<int> wrong(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::vector<float> embedding(16, 0.25f);
      for (int i = 0; i < kPerThread; ++i) {
        const std::string id = Id(t * kPerThread + i);
        log.Record(id, i % 2 == 0 ? embedding : std::vector<float>{});
        auto first = log.TakeFeedback(id);
        if (first.ok()) {
          ++taken[t];
          if (first->size() != (i % 2 == 0 ? 16u : 0u)) ++wrong[t];
          // Never credited twice (forgotten meanwhile is possible).
          if (log.TakeFeedback(id).ok()) ++wrong[t];
        } else if (!absl::IsNotFound(first.status())) {
          ++wrong[t];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(wrong[t], 0);
    EXPECT_GT(taken[t], kPerThread * 9 / 10);
  }
  EXPECT_LE(log.bytes(), kBudget);
  EXPECT_LT(log.size(), static_cast<size_t>(kThreads * kPerThread));
}

}  // namespace
}  // namespace arbiter::policy
