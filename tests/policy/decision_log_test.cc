#include "policy/decision_log.h"

#include "gtest/gtest.h"

namespace arbiter::policy {
namespace {

TEST(DecisionLogTest, FeedbackFindsTheRecordOnce) {
  DecisionLog log(10);
  policy::DecisionRecord record_in;
  record_in.route = 2;
  record_in.task = 1;
  record_in.propensity = 0.25;
  record_in.cost_usd = 0.003;
  log.Record("a", record_in);
  auto record = log.TakeFeedback("a");
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record->route, 2);
  EXPECT_EQ(record->task, 1);
  EXPECT_DOUBLE_EQ(record->propensity, 0.25);
  EXPECT_EQ(log.TakeFeedback("a").status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST(DecisionLogTest, UnknownIdIsNotFound) {
  DecisionLog log(10);
  auto record = log.TakeFeedback("missing");
  EXPECT_EQ(record.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(record.status().message().find("missing"), std::string::npos);
}

TEST(DecisionLogTest, EvictsOldestAtCapacity) {
  DecisionLog log(2);
  log.Record("a", {});
  log.Record("b", {});
  log.Record("c", {});
  EXPECT_EQ(log.size(), 2u);
  EXPECT_EQ(log.TakeFeedback("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(log.TakeFeedback("b").ok());
  EXPECT_TRUE(log.TakeFeedback("c").ok());
}

}  // namespace
}  // namespace arbiter::policy
