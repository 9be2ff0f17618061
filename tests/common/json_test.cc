#include "common/json.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbiter::json {
namespace {

using ::testing::HasSubstr;

TEST(JsonParseTest, SaysWhereTheTextStopsBeingJson) {
  auto parsed = Parse(R"({"a": 1,)");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(parsed.status().message(), HasSubstr("at byte"));
}

TEST(JsonParseTest, RefusesTextNestedDeeperThanTheLimitBeforeParsing) {
  // 100,000 levels would crash a copy or a dump of the parsed value.
  const std::string deep =
      std::string(100'000, '[') + std::string(100'000, ']');
  auto parsed = Parse(deep);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(parsed.status().message(), HasSubstr("nested deeper than 256"));
  EXPECT_THAT(parsed.status().message(), HasSubstr("at byte 256"));
  const std::string at_limit =
      std::string(kMaxDepth, '[') + std::string(kMaxDepth, ']');
  EXPECT_TRUE(Parse(at_limit).ok());
  // Brackets inside strings, escaped quotes included, are text.
  const std::string in_strings =
      absl::StrCat("{\"a\": \"", std::string(1000, '['), "\\\"[[[\"}");
  EXPECT_TRUE(Parse(in_strings).ok()) << Parse(in_strings).status();
}

TEST(JsonParseTest, NeverQuotesTheText) {
  auto parsed = Parse("{\"secret-token\": nope}");
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(parsed.status().message(),
              ::testing::Not(HasSubstr("secret-token")));
}

TEST(JsonParseTest, RepairingUtf8ParsesWhatStrictParsingRefuses) {
  auto parsed = ParseRepairingUtf8("{\"a\": \"caf\xe9\"}");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ((*parsed)["a"], "caf\xef\xbf\xbd");
}

TEST(JsonParseTest, RejectsInvalidUtf8WithoutThrowing) {
  EXPECT_FALSE(Parse("{\"a\": \"caf\xe9\"}").ok());
  EXPECT_FALSE(Parse("").ok());
  EXPECT_TRUE(Parse("{\"a\": \"caf\xc3\xa9\"}").ok());
}

TEST(JsonDumpTest, ReplacesInvalidUtf8InsteadOfThrowing) {
  nlohmann::json value = {{"text", std::string("caf\xe9")}};
  EXPECT_EQ(Dump(value), "{\"text\":\"caf\xef\xbf\xbd\"}");
}

TEST(JsonViewTest, TypedGettersNameThePathAndTheTypes) {
  auto doc = Parse(
      R"({"choices": [{"message": {"content": null}}],
          "usage": {"prompt_tokens": "12", "completion_tokens": 3.0}})");
  ASSERT_TRUE(doc.ok());
  View root(*doc);
  auto content = root["choices"][0]["message"]["content"].String();
  ASSERT_FALSE(content.ok());
  EXPECT_EQ(content.status().message(),
            "choices[0].message.content: expected a string, got null");
  auto prompt = root["usage"]["prompt_tokens"].Int();
  EXPECT_EQ(prompt.status().message(),
            "usage.prompt_tokens: expected an integer, got a string");
  EXPECT_EQ(*root["usage"]["completion_tokens"].Int(), 3);
  auto missing = root["choices"][5]["message"].String();
  EXPECT_EQ(missing.status().message(),
            "choices[5].message: missing (expected a string)");
  EXPECT_EQ(root["choices"].size(), 1u);
  EXPECT_FALSE(root["usage"]["prompt_tokens"]["deeper"].exists());
}

TEST(JsonViewTest, OptionalGettersAcceptMissingAndNullButNotWrongTypes) {
  auto doc = Parse(R"({"a": null, "b": true, "c": [1]})");
  ASSERT_TRUE(doc.ok());
  View root(*doc);
  EXPECT_EQ(*root["a"].OptionalBool(), std::nullopt);
  EXPECT_EQ(*root["missing"].OptionalString(), std::nullopt);
  EXPECT_EQ(*root["b"].OptionalBool(), true);
  EXPECT_FALSE(root["c"].OptionalNumber().ok());
  EXPECT_TRUE(root["c"].RequireArray().ok());
  EXPECT_FALSE(root["c"].RequireObject().ok());
}

TEST(JsonViewTest, IntegersMustBeIntegralAndFit) {
  auto doc = Parse(R"([1.5, 18446744073709551615, -3, 1e300])");
  ASSERT_TRUE(doc.ok());
  View root(*doc);
  EXPECT_FALSE(root[0].Int().ok());
  EXPECT_FALSE(root[1].Int().ok());
  EXPECT_EQ(*root[2].Int(), -3);
  EXPECT_FALSE(root[3].Int().ok());
  EXPECT_DOUBLE_EQ(*root[3].Number(), 1e300);
}

TEST(JsonViewTest, TheRootIsCalledTheDocument) {
  auto doc = Parse("[]");
  ASSERT_TRUE(doc.ok());
  const absl::Status status = View(*doc).RequireObject();
  EXPECT_EQ(status.message(), "the document: expected an object, got an array");
}

}  // namespace
}  // namespace arbiter::json
