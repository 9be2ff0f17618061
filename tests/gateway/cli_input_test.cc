// The files the command line reads (replay's outcome log, index add's JSON
// Lines): a wrong type names the line and the field, never aborts.

#include <string>

#include "gateway/cli/commands.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbiter::cli {
namespace {

using ::testing::HasSubstr;

TEST(OutcomeLogTest, ReadsCorrectAndScoredOutcomes) {
  auto log = ParseOutcomeLog(
      R"({"id": 7, "task": "easy", "prompt": "q", "outcomes": {"small": )"
      R"({"correct": true, "input_tokens": 10, "output_tokens": 2, )"
      R"("latency_ms": 80}, "large": {"score": 0.5}}})"
      "\n\n");
  ASSERT_TRUE(log.ok()) << log.status();
  ASSERT_EQ(log->size(), 1);
  const policy::LoggedRequest& request = log->front();
  EXPECT_EQ(request.id, "7");
  EXPECT_EQ(request.task, "easy");
  EXPECT_EQ(request.outcomes.at("small").score, 1);
  EXPECT_EQ(request.outcomes.at("small").input_tokens, 10);
  EXPECT_DOUBLE_EQ(request.outcomes.at("small").latency_seconds, 0.08);
  EXPECT_EQ(request.outcomes.at("large").score, 0.5);
}

TEST(OutcomeLogTest, OutcomesOfTheWrongTypeNameTheLineAndField) {
  const std::string good =
      R"({"id": "r1", "outcomes": {"small": {"correct": true}}})";
  for (
      const auto& [line, message] :
      std::vector<std::pair<std::string, std::string>>{
          {R"({"id": "r2", "outcomes": ["small"]})",
           "line 2: outcomes: expected an object, got an array"},
          {R"({"id": "r2", "outcomes": "small"})",
           "line 2: outcomes: expected an object, got a string"},
          {R"({"id": "r2"})", "line 2: outcomes: missing (expected an object)"},
          {R"({"outcomes": {"small": true}})",
           "line 2: outcomes.small: expected an object, got a boolean"},
          {R"({"outcomes": {"small": {"correct": true, "input_tokens": "many"}}})",
           "line 2: outcomes.small.input_tokens: expected an integer, got a "
           "string"},
          {R"({"outcomes": {"small": {"correct": "yes"}}})",
           "line 2: outcomes.small.correct: expected a boolean, got a "
           "string"},
          {R"({"outcomes": {"small": {"latency_ms": 3}}})",
           "line 2: outcomes.small: needs \"correct\""},
          {R"({"task": 3, "outcomes": {"small": {"correct": true}}})",
           "line 2: task: expected a string, got a number"},
          {R"({"id": [1], "outcomes": {"small": {"correct": true}}})",
           "line 2: id: expected a string, got an array"},
          {R"([1, 2])", "line 2: expected a JSON object, got an array"},
          {R"({"outcomes": )", "line 2: not valid JSON"},
      }) {
    auto log = ParseOutcomeLog(good + "\n" + line + "\n");
    ASSERT_FALSE(log.ok()) << line;
    EXPECT_EQ(log.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(log.status().message(), HasSubstr(message)) << line;
  }
}

TEST(IndexDocumentsTest, JsonLinesGiveOneDocumentEach) {
  auto documents = DocumentsOfFile(
      "kb/docs.jsonl",
      R"({"id": "a", "title": "A", "text": "alpha", "metadata": {"lang": "en"}})"
      "\n"
      R"({"id": 2, "text": "beta"})"
      "\n");
  ASSERT_TRUE(documents.ok()) << documents.status();
  ASSERT_EQ(documents->size(), 2);
  EXPECT_EQ((*documents)[0].title(), "A");
  EXPECT_EQ((*documents)[0].metadata_json(), R"({"lang":"en"})");
  EXPECT_EQ((*documents)[0].source(), "kb/docs.jsonl");
  EXPECT_EQ((*documents)[1].id(), "2");
  EXPECT_EQ((*documents)[1].title(), "2");  // The id when there is no title.
}

TEST(IndexDocumentsTest, AFieldOfTheWrongTypeNamesFileLineAndField) {
  for (const auto& [line, message] :
       std::vector<std::pair<std::string, std::string>>{
           {R"({"id": "b", "text": 42})",
            "kb/docs.jsonl: line 2: text: expected a string, got a number"},
           {R"({"id": "b", "text": "ok", "title": ["x"]})",
            "kb/docs.jsonl: line 2: title: expected a string, got an array"},
           {R"({"text": "no id"})",
            "kb/docs.jsonl: line 2: id: missing (expected a string)"},
           {R"("just text")",
            "kb/docs.jsonl: line 2: expected a JSON object, got a string"},
       }) {
    auto documents = DocumentsOfFile(
        "kb/docs.jsonl",
        std::string(R"({"id": "a", "text": "alpha"})") + "\n" + line + "\n");
    ASSERT_FALSE(documents.ok()) << line;
    EXPECT_THAT(documents.status().message(), HasSubstr(message)) << line;
  }
}

TEST(IndexDocumentsTest, MarkdownIsOneDocumentAndOtherFilesNone) {
  auto markdown = DocumentsOfFile("kb/reset.md", "# Reset\n\nClick reset.\n");
  ASSERT_TRUE(markdown.ok());
  ASSERT_EQ(markdown->size(), 1);
  EXPECT_EQ(markdown->front().source(), "kb/reset.md");
  auto image = DocumentsOfFile("kb/logo.png", "\x89PNG");
  ASSERT_TRUE(image.ok());
  EXPECT_TRUE(image->empty());
}

}  // namespace
}  // namespace arbiter::cli
