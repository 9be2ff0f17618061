#include "retrieval/eval.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbiter::retrieval {
namespace {

using ::testing::HasSubstr;

TEST(EvalTest, MetricsMatchHandComputedValues) {
  Qrels qrels = {{"q1", {{"d1", 1}, {"d2", 1}}},
                 {"q2", {{"d9", 2}}},
                 {"q3", {{"d5", 0}}}};  // No relevant document: skipped.
  std::map<std::string, std::vector<std::string>> runs = {
      {"q1", {"d3", "d1", "d1", "d2"}},  // The repeated d1 counts once.
      {"q2", {}}};
  RankingMetrics metrics = Evaluate(qrels, runs);
  EXPECT_EQ(metrics.queries, 2);
  // q1: DCG = 1/log2(3) + 1/log2(4); IDCG = 1 + 1/log2(3).
  double q1_ndcg = (1 / std::log2(3.0) + 0.5) / (1 + 1 / std::log2(3.0));
  EXPECT_NEAR(metrics.ndcg_at_10, q1_ndcg / 2, 1e-12);
  EXPECT_NEAR(metrics.recall_at_10, 0.5, 1e-12);
  EXPECT_NEAR(metrics.recall_at_100, 0.5, 1e-12);
  EXPECT_NEAR(metrics.mrr, 0.25, 1e-12);
}

TEST(EvalTest, PerfectRankingScoresOne) {
  Qrels qrels = {{"q", {{"a", 3}, {"b", 1}}}};
  RankingMetrics metrics = Evaluate(qrels, {{"q", {"a", "b", "c"}}});
  EXPECT_NEAR(metrics.ndcg_at_10, 1, 1e-12);
  EXPECT_NEAR(metrics.mrr, 1, 1e-12);
}

TEST(EvalTest, ParsesBeirAndTrecFormats) {
  auto queries = ParseBeirQueries(
      "{\"_id\": \"1\", \"text\": \"reset password\"}\n"
      "{\"_id\": 2, \"text\": \"invoices\"}\n");
  ASSERT_TRUE(queries.ok()) << queries.status();
  EXPECT_EQ(queries->at("1"), "reset password");
  EXPECT_EQ(queries->at("2"), "invoices");
  auto qrels =
      ParseBeirQrels("query-id\tcorpus-id\tscore\n1\tdoc-a\t1\n2\tdoc-b\t2\n");
  ASSERT_TRUE(qrels.ok()) << qrels.status();
  EXPECT_EQ(qrels->at("2").at("doc-b"), 2);
  auto topics = ParseTrecTopics(
      "<top>\n<num> Number: 301\n<title> International Organized Crime\n"
      "<desc> Description:\n...\n</top>\n");
  ASSERT_TRUE(topics.ok()) << topics.status();
  EXPECT_EQ(topics->at("301"), "International Organized Crime");
  auto trec = ParseTrecQrels("301 0 FBIS3-10082 1\n301 0 FBIS3-10169 0\n");
  ASSERT_TRUE(trec.ok());
  EXPECT_EQ(trec->at("301").at("FBIS3-10082"), 1);
  EXPECT_THAT(ParseBeirQrels("a\tb\t1\nbroken line\n").status().message(),
              HasSubstr("BEIR qrels line 2"));
  EXPECT_THAT(ParseBeirQueries("{\"text\": \"no id\"}").status().message(),
              HasSubstr("queries line 1"));
}

}  // namespace
}  // namespace arbiter::retrieval
