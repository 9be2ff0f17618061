// The one-pass reader of plain chat completions against the DOM reader:
// for every answer, plain or not, well formed or not, both give the same
// result, so the fast path never changes what a backend's answer means.

#include "gateway/backends/openai_answer.h"

#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbiter {
namespace {

std::string Describe(const absl::StatusOr<BackendResponse>& parsed) {
  if (!parsed.ok()) return parsed.status().ToString();
  return absl::StrCat(
      "text=", parsed->text, " in=", parsed->input_tokens,
      " out=", parsed->output_tokens, " reported=", parsed->usage_reported,
      " finish=", parsed->finish_reason, " fields=", parsed->fields_json);
}

void ExpectSameAsDom(const std::string& text) {
  EXPECT_EQ(Describe(ParseChatAnswer(7, text)),
            Describe(ParseChatAnswerDom(7, text)))
      << text;
}

const std::vector<std::string>& Answers() {
  static const auto* answers = new std::vector<std::string>{
      // Plain, as most backends answer.
      R"({"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}})",
      R"({"choices":[{"message":{"content":"a"},"finish_reason":null}],"usage":null})",
      R"({"choices":[{"message":{"content":"a"}}]})",
      R"({"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":null,"completion_tokens":3}})",
      R"({"choices":[{"message":{"content":"a"}}],"system_fingerprint":"fp_1"})",
      R"({"choices":[{"message":{"content":"\u00e9\ud83d\ude00 \"q\""}}]})",
      R"({"choices":[{"message":{"content":"a"}},{"message":{"content":"b"}}]})",
      R"({"extra":{"deep":[1,2,{"x":[]}]},"choices":[{"message":{"content":"a","refusal":null}}]})",
      // What only the DOM path reads: tool calls, logprobs.
      R"({"choices":[{"message":{"content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}]})",
      R"({"choices":[{"message":{"content":"a"},"logprobs":{"content":[]}}]})",
      R"({"choices":[{"message":{"content":"a","function_call":{"name":"f"}}}]})",
      // Wrong, each in its own way.
      R"({"choices":[]})",
      R"({"choices":{}})",
      R"({"choices":[{"message":{"content":5}}]})",
      R"({"choices":[{"message":{}}]})",
      R"({"choices":[{"message":"hi"}]})",
      R"({"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":-1}})",
      R"({"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":1.5}})",
      R"({"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":"5"}})",
      R"({"choices":[{"message":{"content":"a"}}],"usage":{"completion_tokens":99999999999}})",
      R"({"choices":[{"message":{"content":"a"}}],"usage":[]})",
      R"({"choices":[{"message":{"content":"a"},"finish_reason":7}]})",
      R"({"choices":[{"message":{"content":"a","content":"b"}}]})",
      R"({"choices":[{"message":{"content":"a"}}],"choices":[]})",
      R"({"error":{"message":"overloaded"}})",
      R"([])",
      R"("just a string")",
      R"({"choices":[{"message":{"content":"a"}}]} trailing)",
      R"({"choices":[{"message":{"content":"a"}})",
      "",
  };
  return *answers;
}

TEST(OpenAIAnswerTest, TheOnePassReaderAgreesWithTheDomOnEveryShape) {
  for (const std::string& answer : Answers()) ExpectSameAsDom(answer);
}

TEST(OpenAIAnswerTest, APlainAnswerIsReadWhole) {
  auto parsed = ParseChatAnswer(7, Answers()[0]);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->text, "Hello there");
  EXPECT_EQ(parsed->input_tokens, 5);
  EXPECT_EQ(parsed->output_tokens, 2);
  EXPECT_TRUE(parsed->usage_reported);
  EXPECT_EQ(parsed->finish_reason, "stop");
  EXPECT_EQ(parsed->fields_json, "");
  // Without usage the prompt is the gateway's count and the answer counted.
  auto counted = ParseChatAnswer(7, Answers()[2]);
  ASSERT_TRUE(counted.ok()) << counted.status();
  EXPECT_EQ(counted->input_tokens, 7);
  EXPECT_FALSE(counted->usage_reported);
}

TEST(OpenAIAnswerTest, DeepNestingIsRefusedAsByTheDom) {
  const std::string deep =
      absl::StrCat(R"({"choices":[{"message":{"content":"a"}}],"x":)",
                   std::string(json::kMaxDepth + 5, '['),
                   std::string(json::kMaxDepth + 5, ']'), "}");
  ExpectSameAsDom(deep);
  EXPECT_FALSE(ParseChatAnswer(7, deep).ok());
}

// Random edits of the answers above: inserted, deleted and replaced bytes.
TEST(OpenAIAnswerTest, RandomMutationsReadTheSameBothWays) {
  std::mt19937 random(20261203);
  const std::string alphabet = R"({}[]:,"\0123456789.-eEtrufalsn )";
  for (int round = 0; round < 4000; ++round) {
    std::string text = Answers()[random() % Answers().size()];
    const int edits = 1 + static_cast<int>(random() % 3);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      const size_t at = random() % text.size();
      const char c = alphabet[random() % alphabet.size()];
      switch (random() % 3) {
        case 0:
          text.insert(text.begin() + at, c);
          break;
        case 1:
          text.erase(at, 1);
          break;
        default:
          text[at] = c;
      }
    }
    ExpectSameAsDom(text);
    if (::testing::Test::HasFailure()) break;
  }
}

}  // namespace
}  // namespace arbiter
