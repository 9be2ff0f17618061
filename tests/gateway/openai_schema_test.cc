// The OpenAI wire schema of the HTTP front: requests read field by field,
// errors naming the field and its param, answers and stream chunks shaped
// as the official clients read them.

#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/utf8.h"
#include "gateway/openai/chat_request.h"
#include "gateway/openai/chat_response.h"
#include "gateway/openai/endpoints.h"
#include "gateway/openai/errors.h"
#include "gateway/openai/request_body.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace arbiter::openai {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using Json = nlohmann::json;
using Headers = std::vector<std::pair<absl::string_view, absl::string_view>>;

// The smallest valid request with `changes` merged in (null removes).
std::string Body(const Json& changes = Json::object()) {
  Json body = {{"model", "arbiter/auto"},
               {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  body.merge_patch(changes);
  return body.dump();
}

// A body whose one message is `message`.
std::string WithMessage(const Json& message) {
  return Json{{"model", "arbiter/auto"}, {"messages", {message}}}.dump();
}

absl::StatusOr<ChatCompletion> Chat(const std::string& body,
                                    const Headers& headers = {}) {
  return ParseChatCompletionRequest(body, headers);
}

// The failure names `param` in its message and carries it as the param.
void ExpectFieldError(const absl::Status& status, absl::string_view param,
                      absl::string_view says) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(ParamOf(status), std::string(param)) << status;
  EXPECT_THAT(std::string(status.message()),
              StartsWith(absl::StrCat(param, ": ")));
  EXPECT_THAT(std::string(status.message()), HasSubstr(std::string(says)));
  EXPECT_EQ(ErrorFor(status).status, 400);
}

Json Parsed(absl::string_view text) {
  Json value = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(value.is_discarded()) << text;
  return value;
}

// ---------------------------------------------------------------- requests

TEST(ChatRequestTest, AutoModelLetsThePolicyChoose) {
  auto chat = Chat(Body());
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_TRUE(chat->auto_route);
  EXPECT_EQ(chat->model, "arbiter/auto");
  EXPECT_EQ(chat->request.route(), "");
  EXPECT_EQ(chat->route_param, "");
  EXPECT_FALSE(chat->stream);
  EXPECT_FALSE(chat->include_usage);
  ASSERT_EQ(chat->request.messages_size(), 1);
  EXPECT_EQ(chat->request.messages(0).role(), v1::ROLE_USER);
  EXPECT_EQ(chat->request.messages(0).content(), "hi");
  EXPECT_EQ(chat->request.passthrough_json(), "");
  EXPECT_FALSE(chat->request.limits().has_temperature());
  EXPECT_EQ(chat->request.limits().max_output_tokens(), 0);
}

TEST(ChatRequestTest, RouteNameAsModelPinsThatRoute) {
  auto chat = Chat(Body({{"model", "fast"}}));
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_FALSE(chat->auto_route);
  EXPECT_EQ(chat->request.route(), "fast");
  EXPECT_EQ(chat->route_param, "model");
}

TEST(ChatRequestTest, ArbiterRoutePinsWhenTheModelIsAuto) {
  auto chat = Chat(Body({{"arbiter", {{"route", "rag"}}}}));
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_TRUE(chat->auto_route);
  EXPECT_EQ(chat->request.route(), "rag");
  EXPECT_EQ(chat->route_param, "arbiter.route");
}

TEST(ChatRequestTest, ArbiterRouteMustAgreeWithAPinningModel) {
  EXPECT_TRUE(
      Chat(Body({{"model", "rag"}, {"arbiter", {{"route", "rag"}}}})).ok());
  ExpectFieldError(
      Chat(Body({{"model", "fast"}, {"arbiter", {{"route", "rag"}}}})).status(),
      "arbiter.route", "conflicts with model \"fast\"");
}

TEST(ChatRequestTest, MapsRolesDeveloperBeingSystem) {
  auto chat = Chat(Json{{"model", "arbiter/auto"},
                        {"messages",
                         {{{"role", "system"}, {"content", "s"}},
                          {{"role", "developer"}, {"content", "d"}},
                          {{"role", "assistant"}, {"content", "a"}},
                          {{"role", "user"}, {"content", "u"}}}}}
                       .dump());
  ASSERT_TRUE(chat.ok()) << chat.status();
  std::vector<v1::Role> roles;
  for (const auto& m : chat->request.messages()) roles.push_back(m.role());
  EXPECT_THAT(roles, ElementsAre(v1::ROLE_SYSTEM, v1::ROLE_SYSTEM,
                                 v1::ROLE_ASSISTANT, v1::ROLE_USER));
}

TEST(ChatRequestTest, CarriesAToolCallingTurnAndItsResults) {
  const Json calls = {
      {{"id", "call_1"},
       {"type", "function"},
       {"function", {{"name", "lookup"}, {"arguments", "{\"q\":\"x\"}"}}}}};
  auto chat = Chat(Json{{"model", "arbiter/auto"},
                        {"messages",
                         {{{"role", "user"}, {"content", "look it up"}},
                          {{"role", "assistant"},
                           {"content", nullptr},
                           {"refusal", nullptr},
                           {"tool_calls", calls}},
                          {{"role", "tool"},
                           {"tool_call_id", "call_1"},
                           {"name", "lookup"},
                           {"content", "42"}}}}}
                       .dump());
  ASSERT_TRUE(chat.ok()) << chat.status();
  const auto& messages = chat->request.messages();
  ASSERT_EQ(messages.size(), 3);
  EXPECT_EQ(messages[1].role(), v1::ROLE_ASSISTANT);
  EXPECT_EQ(messages[1].content(), "");
  EXPECT_EQ(Parsed(messages[1].tool_calls_json()), calls);
  EXPECT_EQ(messages[2].role(), v1::ROLE_TOOL);
  EXPECT_EQ(messages[2].tool_call_id(), "call_1");
  EXPECT_EQ(messages[2].name(), "lookup");
  EXPECT_EQ(messages[2].content(), "42");
}

TEST(ChatRequestTest, JoinsTextPartsWithNewlines) {
  auto chat = Chat(WithMessage({{"role", "user"},
                                {"content",
                                 {{{"type", "text"}, {"text", "first"}},
                                  {{"type", "text"}, {"text", "second"}}}}}));
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->request.messages(0).content(), "first\nsecond");
}

TEST(ChatRequestTest, AcceptsAnEchoedAssistantMessage) {
  // Apps push choices[0].message back into messages as they got it.
  auto chat = Chat(Json{{"model", "arbiter/auto"},
                        {"messages",
                         {{{"role", "user"}, {"content", "q"}},
                          {{"role", "assistant"},
                           {"content", "a"},
                           {"refusal", nullptr},
                           {"tool_calls", nullptr}},
                          {{"role", "user"}, {"content", "more"}}}}}
                       .dump());
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->request.messages_size(), 3);
}

TEST(ChatRequestTest, CopiesLimits) {
  auto chat = Chat(Body({{"max_tokens", 64},
                         {"temperature", 0},
                         {"top_p", 1},
                         {"stop", {"\n\n", "END"}},
                         {"seed", -7}}));
  ASSERT_TRUE(chat.ok()) << chat.status();
  const v1::GenerationLimits& limits = chat->request.limits();
  EXPECT_EQ(limits.max_output_tokens(), 64);
  ASSERT_TRUE(limits.has_temperature());  // Zero is zero, not "unset".
  EXPECT_EQ(limits.temperature(), 0);
  EXPECT_EQ(limits.top_p(), 1);
  EXPECT_THAT(limits.stop(), ElementsAre("\n\n", "END"));
  ASSERT_TRUE(limits.has_seed());
  EXPECT_EQ(limits.seed(), -7);
}

TEST(ChatRequestTest, StopMayBeOneString) {
  auto chat = Chat(Body({{"stop", "###"}}));
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_THAT(chat->request.limits().stop(), ElementsAre("###"));
}

TEST(ChatRequestTest, MaxCompletionTokensAndMaxTokensMayAgree) {
  auto chat = Chat(Body({{"max_completion_tokens", 30}}));
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->request.limits().max_output_tokens(), 30);
  chat = Chat(Body({{"max_completion_tokens", 30}, {"max_tokens", 30}}));
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->request.limits().max_output_tokens(), 30);
}

TEST(ChatRequestTest, NullIsTheSameAsAbsent) {
  Json with_nulls = Parsed(Body());
  for (const char* field :
       {"temperature", "top_p", "stop", "seed", "max_tokens", "n", "user",
        "stream", "stream_options", "metadata", "arbiter", "tools",
        "logprobs"}) {
    with_nulls[field] = nullptr;
  }
  auto chat = Chat(with_nulls.dump());
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_FALSE(chat->request.limits().has_temperature());
  EXPECT_FALSE(chat->request.limits().has_seed());
  EXPECT_EQ(chat->request.passthrough_json(), "");
  EXPECT_EQ(chat->request.unit_id(), "");
}

TEST(ChatRequestTest, StreamAndIncludeUsage) {
  auto chat = Chat(Body({{"stream", true}}));
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_TRUE(chat->stream);
  EXPECT_FALSE(chat->include_usage);
  chat = Chat(
      Body({{"stream", true}, {"stream_options", {{"include_usage", true}}}}));
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_TRUE(chat->include_usage);
}

TEST(ChatRequestTest, CopiesMetadataAndTakesUserAsTheUnitId) {
  auto chat = Chat(Body({{"metadata", {{"team", "billing"}, {"ticket", "42"}}},
                         {"user", "user-7"}}));
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->request.metadata().at("team"), "billing");
  EXPECT_EQ(chat->request.metadata().at("ticket"), "42");
  EXPECT_EQ(chat->request.unit_id(), "user-7");
}

TEST(ChatRequestTest, PassesThroughTheListedFieldsUnchanged) {
  const Json fields = {
      {"tools",
       {{{"type", "function"},
         {"function",
          {{"name", "lookup"},
           {"parameters",
            {{"type", "object"},
             {"properties", {{"q", {{"type", "string"}}}}}}}}}}}},
      {"tool_choice", "auto"},
      {"parallel_tool_calls", false},
      {"functions", Json::array()},
      {"function_call", {{"name", "lookup"}}},
      {"response_format", {{"type", "json_object"}}},
      {"logprobs", true},
      {"top_logprobs", 3},
      {"presence_penalty", 0.5},
      {"frequency_penalty", -0.5},
      {"logit_bias", {{"50256", -100}}},
      {"service_tier", "default"},
      {"reasoning_effort", "low"},
      {"top_k", 40},
      {"min_p", 0.05},
      {"repetition_penalty", 1.1}};
  // Every listed field is covered here.
  ASSERT_EQ(fields.size(), std::size(kPassThrough));
  auto chat = Chat(Body(fields));
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(Parsed(chat->request.passthrough_json()), fields);
}

TEST(ChatRequestTest, ReadsArbiterHeadersCaseInsensitively) {
  auto chat = Chat(Body(), {{"X-Arbiter-Task", "support.refund"},
                            {"x-arbiter-unit-id", " tenant-3 "},
                            {"X-ARBITER-MAX-COST-USD", "0.002"},
                            {"x-arbiter-min-accuracy", "0.9"},
                            {"Authorization", "Bearer x"},
                            {"Content-Type", "application/json"}});
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->request.task(), "support.refund");
  EXPECT_EQ(chat->request.unit_id(), "tenant-3");
  EXPECT_DOUBLE_EQ(chat->request.constraints().max_cost_usd(), 0.002);
  EXPECT_DOUBLE_EQ(chat->request.constraints().min_accuracy(), 0.9);
}

TEST(ChatRequestTest, TheBodysArbiterObjectOverridesHeaders) {
  auto chat = Chat(Body({{"arbiter",
                          {{"task", "faq"},
                           {"unit_id", "u-body"},
                           {"max_cost_usd", 0.01},
                           {"min_accuracy", 0.5}}},
                         {"user", "u-user"}}),
                   {{"x-arbiter-task", "support.refund"},
                    {"x-arbiter-unit-id", "u-header"},
                    {"x-arbiter-max-cost-usd", "0.002"},
                    {"x-arbiter-min-accuracy", "0.9"}});
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->request.task(), "faq");
  EXPECT_EQ(chat->request.unit_id(), "u-body");
  EXPECT_DOUBLE_EQ(chat->request.constraints().max_cost_usd(), 0.01);
  EXPECT_DOUBLE_EQ(chat->request.constraints().min_accuracy(), 0.5);
}

TEST(ChatRequestTest, AllowFallbackComesFromTheHeaderOrTheBody) {
  auto header = Chat(Body(), {{"X-Arbiter-Allow-Fallback", "true"}});
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_TRUE(header->request.allow_fallback());
  auto body = Chat(Body({{"arbiter", {{"allow_fallback", false}}}}),
                   {{"x-arbiter-allow-fallback", "true"}});
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_FALSE(body->request.allow_fallback());
  ExpectFieldError(Chat(Body(), {{"x-arbiter-allow-fallback", "yes"}}).status(),
                   "x-arbiter-allow-fallback",
                   "expected true or false, got \"yes\"");
  ExpectFieldError(
      Chat(Body({{"arbiter", {{"allow_fallback", "yes"}}}})).status(),
      "arbiter.allow_fallback", "expected a boolean");
}

TEST(ChatRequestTest, TimeoutComesFromTheHeaderOrTheBody) {
  auto none = Chat(Body());
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->timeout.has_value());
  auto header = Chat(Body(), {{"X-Arbiter-Timeout-Ms", "250"}});
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->timeout, absl::Milliseconds(250));
  auto body = Chat(Body({{"arbiter", {{"timeout_ms", 1500}}}}),
                   {{"x-arbiter-timeout-ms", "250"}});
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(body->timeout, absl::Milliseconds(1500));
  ExpectFieldError(Chat(Body(), {{"x-arbiter-timeout-ms", "soon"}}).status(),
                   "x-arbiter-timeout-ms", "expected a number");
  ExpectFieldError(Chat(Body(), {{"x-arbiter-timeout-ms", "0"}}).status(),
                   "x-arbiter-timeout-ms", "must be in (0, 86400000]");
  ExpectFieldError(Chat(Body({{"arbiter", {{"timeout_ms", -5}}}})).status(),
                   "arbiter.timeout_ms",
                   "must be in (0, 86400000] milliseconds, got -5");
}

TEST(ChatRequestTest, ArbiterUnitIdWinsOverUser) {
  auto chat =
      Chat(Body({{"user", "u-user"}}), {{"x-arbiter-unit-id", "u-header"}});
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->request.unit_id(), "u-header");
}

TEST(ChatRequestTest, EmptyHeaderValuesSayNothing) {
  auto chat = Chat(Body(), {{"x-arbiter-task", ""}});
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->request.task(), "");
}

TEST(ChatRequestTest, RefusesBadArbiterHeadersNamingThem) {
  struct Case {
    Headers headers;
    absl::string_view param;
    absl::string_view says;
  };
  const Case cases[] = {
      {{{"x-arbiter-tsak", "faq"}}, "x-arbiter-tsak", "unknown header"},
      {{{"x-arbiter-task", "a"}, {"X-Arbiter-Task", "b"}},
       "x-arbiter-task",
       "sent more than once"},
      {{{"x-arbiter-max-cost-usd", "cheap"}},
       "x-arbiter-max-cost-usd",
       "expected a number, got \"cheap\""},
      {{{"x-arbiter-max-cost-usd", "inf"}},
       "x-arbiter-max-cost-usd",
       "expected a number"},
      {{{"x-arbiter-max-cost-usd", "-1"}}, "x-arbiter-max-cost-usd", ">= 0"},
      {{{"x-arbiter-min-accuracy", "1.5"}},
       "x-arbiter-min-accuracy",
       "must be in [0, 1]"},
      {{{"x-arbiter-task", "caf\xe9"}}, "x-arbiter-task", "invalid UTF-8"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.param);
    ExpectFieldError(Chat(Body(), c.headers).status(), c.param, c.says);
  }
}

// One table for every field error: the body, the param it must name, and
// words of the message.
struct FieldErrorCase {
  const char* name;
  std::string body;
  const char* param;
  const char* says;
};

std::vector<FieldErrorCase> FieldErrorCases() {
  Json no_model = Parsed(Body());
  no_model.erase("model");
  Json no_messages = Parsed(Body());
  no_messages.erase("messages");
  Json metadata17 = Json::object();
  for (int i = 0; i < 17; ++i) metadata17[absl::StrCat("k", i)] = "v";
  auto text = [](const char* t) { return Json{{"type", "text"}, {"text", t}}; };
  return {
      {"model missing", no_model.dump(), "model", "missing"},
      {"model a number", Body({{"model", 4}}), "model",
       "expected a string, got a number"},
      {"model empty", Body({{"model", ""}}), "model", "must not be empty"},
      {"messages missing", no_messages.dump(), "messages", "missing"},
      {"messages empty", Body({{"messages", Json::array()}}), "messages",
       "must not be empty"},
      {"messages a string", Body({{"messages", "hi"}}), "messages",
       "expected an array"},
      {"message a string", Body({{"messages", {"hi"}}}), "messages[0]",
       "expected an object"},
      {"role missing", WithMessage({{"content", "x"}}), "messages[0].role",
       "missing"},
      {"tool without a call id",
       WithMessage({{"role", "tool"}, {"content", "x"}}),
       "messages[0].tool_call_id", "required in a tool message"},
      {"role function", WithMessage({{"role", "function"}, {"content", "x"}}),
       "messages[0].role", "\"function\" messages (deprecated by OpenAI)"},
      {"role unknown", WithMessage({{"role", "robot"}, {"content", "x"}}),
       "messages[0].role",
       "must be system, developer, user, assistant or tool, got \"robot\""},
      {"content missing", WithMessage({{"role", "user"}}),
       "messages[0].content", "expected a string or an array of text parts"},
      {"content null", WithMessage({{"role", "user"}, {"content", nullptr}}),
       "messages[0].content", "got null"},
      {"content a number", WithMessage({{"role", "user"}, {"content", 5}}),
       "messages[0].content", "got a number"},
      {"image part",
       WithMessage({{"role", "user"},
                    {"content",
                     {text("look"),
                      {{"type", "image_url"},
                       {"image_url", {{"url", "http://x/y.png"}}}}}}}),
       "messages[0].content[1].type",
       "\"image_url\" parts are not supported: arbiter sends text only"},
      {"audio part",
       WithMessage(
           {{"role", "user"}, {"content", {{{"type", "input_audio"}}}}}),
       "messages[0].content[0].type", "\"input_audio\" parts"},
      {"part type missing",
       WithMessage({{"role", "user"}, {"content", {{{"text", "x"}}}}}),
       "messages[0].content[0].type", "missing"},
      {"part type unknown",
       WithMessage({{"role", "user"},
                    {"content", {{{"type", "video"}, {"text", "x"}}}}}),
       "messages[0].content[0].type", "must be \"text\", got \"video\""},
      {"part text a number",
       WithMessage(
           {{"role", "user"}, {"content", {{{"type", "text"}, {"text", 3}}}}}),
       "messages[0].content[0].text", "expected a string"},
      {"part unknown member",
       WithMessage(
           {{"role", "user"},
            {"content",
             {{{"type", "text"}, {"text", "x"}, {"cache_control", 1}}}}}),
       "messages[0].content[0].cache_control", "unknown field"},
      {"part a string", WithMessage({{"role", "user"}, {"content", {"x"}}}),
       "messages[0].content[0]", "expected an object"},
      {"message name a number",
       WithMessage({{"role", "user"}, {"content", "x"}, {"name", 3}}),
       "messages[0].name", "expected a string"},
      {"tool calls on a user message",
       WithMessage({{"role", "user"},
                    {"content", "x"},
                    {"tool_calls", {{{"id", "c1"}}}}}),
       "messages[0].tool_calls", "only an assistant message has them"},
      {"tool calls an object",
       WithMessage({{"role", "assistant"},
                    {"content", nullptr},
                    {"tool_calls", {{"id", "c1"}}}}),
       "messages[0].tool_calls", "expected an array"},
      {"tool call a string",
       WithMessage({{"role", "assistant"},
                    {"content", nullptr},
                    {"tool_calls", {"c1"}}}),
       "messages[0].tool_calls[0]", "expected an object"},
      {"tool call id",
       WithMessage(
           {{"role", "user"}, {"content", "x"}, {"tool_call_id", "c1"}}),
       "messages[0].tool_call_id", "only a tool message has one"},
      {"function call",
       WithMessage({{"role", "assistant"},
                    {"content", "x"},
                    {"function_call", {{"name", "f"}}}}),
       "messages[0].function_call", "not supported"},
      {"message unknown member",
       WithMessage({{"role", "user"}, {"content", "x"}, {"nmae", "a"}}),
       "messages[0].nmae", "unknown field"},
      {"max_tokens 0", Body({{"max_tokens", 0}}), "max_tokens",
       "must be >= 1, got 0"},
      {"max_tokens fractional", Body({{"max_tokens", 1.5}}), "max_tokens",
       "expected an integer"},
      {"max_tokens a string", Body({{"max_tokens", "10"}}), "max_tokens",
       "expected an integer, got a string"},
      {"max_tokens too big", Body({{"max_tokens", int64_t{1} << 31}}),
       "max_tokens", "must be at most 2147483647"},
      {"max_completion_tokens negative", Body({{"max_completion_tokens", -1}}),
       "max_completion_tokens", "must be >= 1"},
      {"both token limits, different",
       Body({{"max_tokens", 10}, {"max_completion_tokens", 20}}), "max_tokens",
       "conflicts with max_completion_tokens (10 vs 20)"},
      {"temperature high", Body({{"temperature", 2.5}}), "temperature",
       "must be in [0, 2], got 2.5"},
      {"temperature negative", Body({{"temperature", -0.1}}), "temperature",
       "must be in [0, 2]"},
      {"temperature a string", Body({{"temperature", "hot"}}), "temperature",
       "expected a number, got a string"},
      {"top_p 0", Body({{"top_p", 0}}), "top_p", "must be in (0, 1], got 0"},
      {"top_p high", Body({{"top_p", 1.5}}), "top_p", "must be in (0, 1]"},
      {"five stops", Body({{"stop", {"a", "b", "c", "d", "e"}}}), "stop",
       "at most 4 sequences, got 5"},
      {"stop a number in the list", Body({{"stop", {"a", 1}}}), "stop[1]",
       "expected a string, got a number"},
      {"stop empty", Body({{"stop", ""}}), "stop", "must not be empty"},
      {"stop an object", Body({{"stop", {{"a", 1}}}}), "stop",
       "expected a string or an array of strings, got an object"},
      {"seed fractional", Body({{"seed", 1.5}}), "seed", "expected an integer"},
      {"user a number", Body({{"user", 5}}), "user", "expected a string"},
      {"stream a string", Body({{"stream", "yes"}}), "stream",
       "expected a boolean, got a string"},
      {"stream_options without stream",
       Body({{"stream_options", {{"include_usage", true}}}}), "stream_options",
       "only allowed when stream is true"},
      {"include_usage a string",
       Body({{"stream", true}, {"stream_options", {{"include_usage", "y"}}}}),
       "stream_options.include_usage", "expected a boolean"},
      {"stream_options unknown member",
       Body({{"stream", true}, {"stream_options", {{"usage", true}}}}),
       "stream_options.usage", "unknown field"},
      {"stream_options a number",
       Body({{"stream", true}, {"stream_options", 1}}), "stream_options",
       "expected an object"},
      {"metadata 17 keys", Body({{"metadata", metadata17}}), "metadata",
       "at most 16 keys, got 17"},
      {"metadata value a number", Body({{"metadata", {{"team", 3}}}}),
       "metadata.team", "expected a string, got a number"},
      {"metadata key long", Body({{"metadata", {{std::string(65, 'k'), "v"}}}}),
       "metadata", "is over 64 bytes"},
      {"metadata value long",
       Body({{"metadata", {{"k", std::string(513, 'v')}}}}), "metadata.k",
       "is over 512 bytes (513)"},
      {"metadata an array", Body({{"metadata", {1, 2}}}), "metadata",
       "expected an object, got an array"},
      {"n 2", Body({{"n", 2}}), "n", "arbiter returns one choice"},
      {"n 0", Body({{"n", 0}}), "n", "must be 1, got 0"},
      {"arbiter a string", Body({{"arbiter", "x"}}), "arbiter",
       "expected an object"},
      {"arbiter unknown member", Body({{"arbiter", {{"tsak", "x"}}}}),
       "arbiter.tsak", "unknown field"},
      {"arbiter.task a number", Body({{"arbiter", {{"task", 1}}}}),
       "arbiter.task", "expected a string"},
      {"arbiter.max_cost_usd negative",
       Body({{"arbiter", {{"max_cost_usd", -1}}}}), "arbiter.max_cost_usd",
       "must be >= 0"},
      {"arbiter.min_accuracy high",
       Body({{"arbiter", {{"min_accuracy", 1.5}}}}), "arbiter.min_accuracy",
       "must be in [0, 1]"},
      {"unknown field", Body({{"temprature", 1}}), "temprature",
       "unknown field"},
      {"unsupported field", Body({{"audio", {{"voice", "alloy"}}}}), "audio",
       "not supported by arbiter"},
      {"tools an object", Body({{"tools", Json::object()}}), "tools",
       "expected an array, got an object"},
      {"logprobs a string", Body({{"logprobs", "yes"}}), "logprobs",
       "expected a boolean"},
      {"top_logprobs 25", Body({{"top_logprobs", 25}}), "top_logprobs",
       "must be in [0, 20], got 25"},
      {"presence_penalty 3", Body({{"presence_penalty", 3}}),
       "presence_penalty", "must be in [-2, 2]"},
      {"tool_choice a number", Body({{"tool_choice", 5}}), "tool_choice",
       "expected a string or an object"},
      {"response_format a string", Body({{"response_format", "json"}}),
       "response_format", "expected an object"},
      {"logit_bias an array", Body({{"logit_bias", Json::array()}}),
       "logit_bias", "expected an object"},
      {"top_k fractional", Body({{"top_k", 1.5}}), "top_k",
       "expected an integer"},
  };
}

TEST(ChatRequestTest, EveryFieldErrorNamesTheFieldAndItsParam) {
  for (const FieldErrorCase& c : FieldErrorCases()) {
    SCOPED_TRACE(c.name);
    auto chat = Chat(c.body);
    ASSERT_FALSE(chat.ok()) << c.body;
    ExpectFieldError(chat.status(), c.param, c.says);
    // And OpenAI's error object carries the same param.
    const HttpError error = ErrorFor(chat.status());
    EXPECT_EQ(Parsed(error.body)["error"]["param"], c.param);
  }
}

TEST(ChatRequestTest, AnUnknownFieldWithAHugeNameIsShownCut) {
  auto chat = Chat(Body({{std::string(100'000, 'x'), 1}}));
  ASSERT_FALSE(chat.ok());
  EXPECT_LT(chat.status().message().size(), 300u);
  EXPECT_EQ(ParamOf(chat.status()), std::string(64, 'x') + "...");
}

TEST(ChatRequestTest, BodyMustBeAJsonObject) {
  struct Case {
    std::string body;
    const char* says;
  };
  const Case cases[] = {
      {"", "the body: empty"},
      {"  \n", "the body: empty"},
      {"[1, 2]", "the body: expected a JSON object, got an array"},
      {"\"hi\"", "the body: expected a JSON object, got a string"},
      {"{\"model\": ", "not valid JSON at byte"},
      {"model=x&messages=y", "not valid JSON at byte"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body);
    auto chat = Chat(c.body);
    ASSERT_FALSE(chat.ok());
    EXPECT_EQ(chat.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(chat.status().message()), StartsWith(c.says));
    EXPECT_EQ(ParamOf(chat.status()), std::nullopt);
    EXPECT_EQ(ErrorFor(chat.status()).status, 400);
  }
}

TEST(ChatRequestTest, RefusesDeepNestingBeforeParsing) {
  // As deep as allowed, in a pass-through field: fine.
  std::string deep_ok = std::string(kMaxJsonDepth - 2, '[') + "1" +
                        std::string(kMaxJsonDepth - 2, ']');
  std::string body = Body();
  body.insert(body.size() - 1,
              absl::StrCat(",\"logit_bias\":{\"a\":", deep_ok, "}"));
  auto chat = Chat(body);
  // The type check reaches it (a JSON object whose value nests): parsed.
  ASSERT_TRUE(chat.ok()) << chat.status();

  // One level deeper, and a hostile million levels, are refused clearly.
  for (size_t depth : {size_t{kMaxJsonDepth}, size_t{1'000'000}}) {
    std::string deeper = Body();
    deeper.insert(deeper.size() - 1,
                  absl::StrCat(",\"tools\":", std::string(depth, '['),
                               std::string(depth, ']')));
    auto refused = Chat(deeper);
    ASSERT_FALSE(refused.ok());
    EXPECT_THAT(std::string(refused.status().message()),
                StartsWith("the body: nested deeper than 64 levels at byte"));
  }
  // Brackets inside strings are text.
  auto text = Chat(
      Body({{"messages",
             {{{"role", "user"}, {"content", std::string(10'000, '[')}}}}}));
  EXPECT_TRUE(text.ok()) << text.status();
}

TEST(ChatRequestTest, HugeBodiesParse) {
  // Size limits are the HTTP server's (413 before parsing); what arrives
  // parses whole.
  Json messages = Json::array();
  for (int i = 0; i < 5'000; ++i) {
    messages.push_back({{"role", i % 2 ? "assistant" : "user"},
                        {"content", std::string(200, 'a' + i % 26)}});
  }
  messages.push_back(
      {{"role", "user"}, {"content", std::string(4 << 20, 'q')}});
  auto chat = Chat(Body({{"messages", messages}}));
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->request.messages_size(), 5'001);
  EXPECT_EQ(chat->request.messages(5'000).content().size(), 4u << 20);
}

TEST(ChatRequestTest, InvalidUtf8NamesTheFieldItIsIn) {
  struct Case {
    std::string body;
    const char* param;
  };
  const Case cases[] = {
      {"{\"model\":\"arbiter/auto\",\"messages\":[{\"role\":\"user\","
       "\"content\":\"caf\xe9\"}]}",
       "messages[0].content"},
      {"{\"model\":\"arbiter/auto\",\"messages\":[{\"role\":\"user\","
       "\"content\":[{\"type\":\"text\",\"text\":\"ok\"},{\"type\":\"text\","
       "\"text\":\"a \\\"quoted\\\" \xff\"}]}]}",
       "messages[0].content[1].text"},
      {"{\"model\":\"fa\xc0st\",\"messages\":[]}", "model"},
      {"{\"model\":\"m\",\"stop\":[\"a\",\"b\",\"\xed\xa0\x80\"]}", "stop[2]"},
      {"{\"model\":\"m\",\"metadata\":{\"te\xe9m\":\"x\"}}",
       "metadata (a member name)"},
      {"{\"mod\xe9l\":\"m\"}", "a member name"},
      {"{\"model\":\"m\",\"tools\":[{\"a\":[1,{\"b\":\"\xf8\"}]}]}",
       "tools[0].a[1].b"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.param);
    auto chat = Chat(c.body);
    ASSERT_FALSE(chat.ok());
    EXPECT_EQ(chat.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ParamOf(chat.status()), std::string(c.param));
    EXPECT_THAT(std::string(chat.status().message()),
                StartsWith(absl::StrCat(c.param, ": invalid UTF-8 at byte ")));
    EXPECT_THAT(std::string(chat.status().message()), HasSubstr("of the body"));
    // The answer itself is UTF-8.
    EXPECT_TRUE(IsValidUtf8(ErrorFor(chat.status()).body));
  }
  auto outside = Chat("{\"model\":\"m\"\xff}");
  ASSERT_FALSE(outside.ok());
  EXPECT_THAT(std::string(outside.status().message()),
              HasSubstr("invalid UTF-8 outside a string"));
}

TEST(ChatRequestTest, RandomMutationsNeverCrashAndFailAsBadRequests) {
  const std::string valid =
      Body({{"messages",
             {{{"role", "system"}, {"content", "be brief"}},
              {{"role", "user"},
               {"content", {{{"type", "text"}, {"text", "héllo"}}}}}}},
            {"max_tokens", 16},
            {"temperature", 0.5},
            {"stop", {"\n"}},
            {"stream", true},
            {"stream_options", {{"include_usage", true}}},
            {"metadata", {{"k", "v"}}},
            {"tools", {{{"type", "function"}}}},
            {"arbiter", {{"task", "faq"}, {"max_cost_usd", 0.1}}}});
  ASSERT_TRUE(Chat(valid).ok());
  const std::string alphabet = "{}[]\":,\\ 0123456789.-eEtrufalsn\xff\xc3";
  std::mt19937 random(14);
  int accepted = 0;
  for (int round = 0; round < 20'000; ++round) {
    std::string body = valid;
    const int edits = 1 + static_cast<int>(random() % 4);
    for (int e = 0; e < edits && !body.empty(); ++e) {
      const size_t at = random() % body.size();
      switch (random() % 4) {
        case 0:
          body[at] = alphabet[random() % alphabet.size()];
          break;
        case 1:
          body.insert(at, 1, alphabet[random() % alphabet.size()]);
          break;
        case 2:
          body.erase(at, 1 + random() % 8);
          break;
        default:
          body.insert(at, body.substr(random() % body.size(), random() % 16));
          break;
      }
    }
    auto chat = Chat(body, {{"x-arbiter-task", body.substr(0, 3)}});
    if (chat.ok()) {
      ++accepted;
      continue;
    }
    ASSERT_EQ(chat.status().code(), absl::StatusCode::kInvalidArgument)
        << chat.status() << "\n"
        << body;
    const HttpError error = ErrorFor(chat.status());
    ASSERT_EQ(error.status, 400);
    ASSERT_TRUE(IsValidUtf8(error.body));
    ASSERT_FALSE(
        Parsed(error.body)["error"]["message"].get<std::string>().empty());
  }
  // The mutations are small enough that some bodies stay valid.
  EXPECT_GT(accepted, 0);
}

TEST(ChatRequestTest, UnknownModelIsOpenAIsModelNotFound) {
  auto chat = Chat(Body({{"model", "gpt-5"}}));
  ASSERT_TRUE(chat.ok());
  const std::vector<std::string> routes = {"fast", "rag"};
  const absl::Status status = UnknownModel(*chat, routes);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(),
            "model: unknown model \"gpt-5\" (served: arbiter/auto, fast, rag)");
  const HttpError error = ErrorFor(status);
  EXPECT_EQ(error.status, 404);
  const Json body = Parsed(error.body);
  EXPECT_EQ(body["error"]["param"], "model");
  EXPECT_EQ(body["error"]["code"], "model_not_found");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");

  chat = Chat(Body({{"arbiter", {{"route", "nope"}}}}));
  ASSERT_TRUE(chat.ok());
  const absl::Status route = UnknownModel(*chat, routes);
  EXPECT_EQ(ParamOf(route), "arbiter.route");
  EXPECT_THAT(std::string(route.message()),
              StartsWith("arbiter.route: unknown route"));
  EXPECT_EQ(Parsed(ErrorFor(route).body)["error"]["code"], "not_found");
}

// --------------------------------------------------------------- responses

// Checks `value` has each (JSON pointer, type) the official client's types
// declare; "null|string" allows either.
void ExpectShape(const Json& value,
                 std::vector<std::pair<std::string, std::string>> fields) {
  for (const auto& [pointer, types] : fields) {
    SCOPED_TRACE(pointer);
    const Json::json_pointer at(pointer);
    ASSERT_TRUE(value.contains(at)) << value.dump();
    const Json& field = value.at(at);
    bool matched = false;
    for (absl::string_view type : absl::StrSplit(types, '|')) {
      matched |= (type == "string" && field.is_string()) ||
                 (type == "integer" && field.is_number_integer()) ||
                 (type == "number" && field.is_number()) ||
                 (type == "boolean" && field.is_boolean()) ||
                 (type == "null" && field.is_null()) ||
                 (type == "object" && field.is_object()) ||
                 (type == "array" && field.is_array());
    }
    EXPECT_TRUE(matched) << field.dump() << " is not " << types;
  }
}

v1::InferResponse Answer() {
  v1::InferResponse response;
  response.set_request_id("arb2_abc-DEF_1");
  response.set_text("Reset it under Settings [1].");
  response.set_route("rag");
  response.set_route_kind("rag");
  response.set_backend("vllm");
  response.set_model("llama-3.1-8b");
  response.set_task("support.refund");
  response.mutable_usage()->set_input_tokens(120);
  response.mutable_usage()->set_output_tokens(9);
  response.set_cost_usd(0.000123);
  response.set_latency_seconds(0.25);
  response.mutable_decision()->set_policy("thompson");
  response.mutable_decision()->set_reason("best posterior");
  response.mutable_decision()->set_propensity(0.8);
  v1::Citation* citation = response.add_citations();
  citation->set_doc_id("kb-7");
  citation->set_chunk_id(31);
  citation->set_score(0.92);
  citation->set_marker("[1]");
  response.set_finish_reason("stop");
  return response;
}

CompletionHeader Header(bool stream = false, bool include_usage = false) {
  ChatCompletion chat;
  chat.model = "arbiter/auto";
  chat.stream = stream;
  chat.include_usage = include_usage;
  return MakeCompletionHeader(chat, Answer(), absl::FromUnixSeconds(1'700));
}

TEST(ChatResponseTest, HeaderIdsTheCompletionAndNamesTheModelThatAnswered) {
  const CompletionHeader header = Header();
  EXPECT_EQ(header.id, "chatcmpl-arb2_abc-DEF_1");
  EXPECT_EQ(header.created, 1'700);
  EXPECT_EQ(header.model, "llama-3.1-8b");
  ChatCompletion chat;
  chat.model = "fast";
  EXPECT_EQ(MakeCompletionHeader(chat, v1::InferResponse(), absl::Now()).model,
            "fast");
  // include_usage only means something for a stream.
  chat.include_usage = true;
  EXPECT_FALSE(MakeCompletionHeader(chat, v1::InferResponse(), absl::Now())
                   .include_usage);
}

TEST(ChatResponseTest, RendersAChatCompletionAsTheOfficialClientReadsIt) {
  const Json completion = Parsed(RenderChatCompletion(Answer(), Header()));
  ExpectShape(completion, {{"/id", "string"},
                           {"/object", "string"},
                           {"/created", "integer"},
                           {"/model", "string"},
                           {"/choices", "array"},
                           {"/choices/0/index", "integer"},
                           {"/choices/0/message/role", "string"},
                           {"/choices/0/message/content", "string|null"},
                           {"/choices/0/message/refusal", "string|null"},
                           {"/choices/0/logprobs", "object|null"},
                           {"/choices/0/finish_reason", "string"},
                           {"/usage/prompt_tokens", "integer"},
                           {"/usage/completion_tokens", "integer"},
                           {"/usage/total_tokens", "integer"}});
  EXPECT_EQ(completion["id"], "chatcmpl-arb2_abc-DEF_1");
  EXPECT_EQ(completion["object"], "chat.completion");
  EXPECT_EQ(completion["created"], 1'700);
  EXPECT_EQ(completion["model"], "llama-3.1-8b");
  ASSERT_EQ(completion["choices"].size(), 1u);
  EXPECT_EQ(completion["choices"][0]["index"], 0);
  EXPECT_EQ(completion["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(completion["choices"][0]["message"]["content"],
            "Reset it under Settings [1].");
  EXPECT_EQ(completion["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(completion["usage"], (Json{{"prompt_tokens", 120},
                                       {"completion_tokens", 9},
                                       {"total_tokens", 129}}));
  EXPECT_FALSE(completion.contains("system_fingerprint"));
  // As OpenAI writes it: id first.
  EXPECT_THAT(RenderChatCompletion(Answer(), Header()),
              StartsWith("{\"id\":\"chatcmpl-"));
}

TEST(ChatResponseTest, TheArbiterObjectSaysWhereItWentAndWhatItCost) {
  const Json arbiter =
      Parsed(RenderChatCompletion(Answer(), Header()))["arbiter"];
  ExpectShape(arbiter, {{"/request_id", "string"},
                        {"/route", "string"},
                        {"/kind", "string"},
                        {"/backend", "string"},
                        {"/model", "string"},
                        {"/task", "string"},
                        {"/cost_usd", "number"},
                        {"/latency_seconds", "number"},
                        {"/usage_estimated", "boolean"},
                        {"/decision/policy", "string"},
                        {"/decision/reason", "string"},
                        {"/decision/propensity", "number"},
                        {"/decision/experiment", "string|null"},
                        {"/decision/arm", "string|null"},
                        {"/citations/0/doc_id", "string"},
                        {"/citations/0/chunk_id", "integer"},
                        {"/citations/0/score", "number"},
                        {"/citations/0/marker", "string"}});
  EXPECT_EQ(arbiter["request_id"], "arb2_abc-DEF_1");
  EXPECT_EQ(arbiter["route"], "rag");
  EXPECT_EQ(arbiter["kind"], "rag");
  EXPECT_EQ(arbiter["backend"], "vllm");
  EXPECT_EQ(arbiter["task"], "support.refund");
  EXPECT_DOUBLE_EQ(arbiter["cost_usd"].get<double>(), 0.000123);
  EXPECT_EQ(arbiter["decision"]["experiment"], nullptr);
  EXPECT_EQ(arbiter["citations"][0]["marker"], "[1]");
  EXPECT_EQ(arbiter["usage_estimated"], false);
}

TEST(ChatResponseTest, AnEmptyFinishReasonIsStop) {
  v1::InferResponse response = Answer();
  response.clear_finish_reason();
  EXPECT_EQ(Parsed(RenderChatCompletion(
                response, Header()))["choices"][0]["finish_reason"],
            "stop");
}

TEST(ChatResponseTest, PassesBackTheBackendsFieldsWhereOpenAIPutsThem) {
  v1::InferResponse response = Answer();
  response.clear_text();
  response.set_finish_reason("tool_calls");
  const Json tool_calls = {
      {{"id", "call_1"},
       {"type", "function"},
       {"function", {{"name", "lookup"}, {"arguments", "{\"q\":\"x\"}"}}}}};
  const Json logprobs = {{"content", Json::array()}};
  response.set_passthrough_json(Json{
      {"message",
       {{"tool_calls", tool_calls},
        {"role", "tool"},
        {"content", "overridden?"}}},
      {"logprobs", logprobs},
      {"system_fingerprint", "fp_1"},
      {"service_tier", "default"}}.dump());
  const Json completion = Parsed(RenderChatCompletion(response, Header()));
  const Json& message = completion["choices"][0]["message"];
  EXPECT_EQ(message["tool_calls"], tool_calls);
  EXPECT_EQ(message["role"], "assistant");
  EXPECT_EQ(message["content"], nullptr);  // Tool calls and no text.
  EXPECT_EQ(completion["choices"][0]["logprobs"], logprobs);
  EXPECT_EQ(completion["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_EQ(completion["system_fingerprint"], "fp_1");
  EXPECT_EQ(completion["service_tier"], "default");

  // Flat members are message fields too.
  response.set_passthrough_json(R"({"tool_calls": [], "refusal": "no"})");
  const Json flat = Parsed(RenderChatCompletion(response, Header()));
  EXPECT_EQ(flat["choices"][0]["message"]["tool_calls"], Json::array());
  EXPECT_EQ(flat["choices"][0]["message"]["refusal"], "no");
}

TEST(ChatResponseTest, BrokenPassedBackFieldsCostOnlyThemselves) {
  for (const std::string& broken :
       {std::string("{\"tool_calls\": [1,"), std::string("[1, 2]"),
        std::string(200, '[') + std::string(200, ']')}) {
    v1::InferResponse response = Answer();
    response.set_passthrough_json(broken);
    const Json completion = Parsed(RenderChatCompletion(response, Header()));
    EXPECT_EQ(completion["choices"][0]["message"]["content"],
              "Reset it under Settings [1].");
    EXPECT_FALSE(completion["choices"][0]["message"].contains("tool_calls"));
  }
}

TEST(ChatResponseTest, TextThatIsNotUtf8ComesOutRepaired) {
  v1::InferResponse response = Answer();
  response.set_text("caf\xe9");
  const std::string body = RenderChatCompletion(response, Header());
  EXPECT_TRUE(IsValidUtf8(body));
  EXPECT_EQ(Parsed(body)["choices"][0]["message"]["content"],
            "caf\xef\xbf\xbd");
}

// The JSON of one SSE event, checking its framing: "data: ", one line, a
// blank line after.
Json Event(absl::string_view event) {
  EXPECT_THAT(std::string(event), StartsWith("data: "));
  EXPECT_TRUE(absl::EndsWith(event, "\n\n")) << event;
  const absl::string_view data = event.substr(6, event.size() - 8);
  EXPECT_EQ(data.find('\n'), absl::string_view::npos) << event;
  EXPECT_EQ(data.find('\r'), absl::string_view::npos) << event;
  return Parsed(data);
}

// The events of a stream's text, split at blank lines.
std::vector<std::string> Events(absl::string_view stream) {
  std::vector<std::string> events;
  while (!stream.empty()) {
    const size_t end = stream.find("\n\n");
    EXPECT_NE(end, absl::string_view::npos) << stream;
    if (end == absl::string_view::npos) break;
    events.emplace_back(stream.substr(0, end + 2));
    stream.remove_prefix(end + 2);
  }
  return events;
}

void ExpectChunkShape(const Json& chunk, const CompletionHeader& header) {
  EXPECT_EQ(chunk["id"], header.id);
  EXPECT_EQ(chunk["object"], "chat.completion.chunk");
  EXPECT_EQ(chunk["created"], header.created);
  EXPECT_EQ(chunk["model"], header.model);
  ASSERT_TRUE(chunk["choices"].is_array());
  if (header.include_usage) {
    EXPECT_TRUE(chunk.contains("usage"));
  } else {
    EXPECT_FALSE(chunk.contains("usage"));
  }
  if (chunk["choices"].empty()) return;
  ExpectShape(chunk, {{"/choices/0/index", "integer"},
                      {"/choices/0/delta", "object"},
                      {"/choices/0/logprobs", "object|null"},
                      {"/choices/0/finish_reason", "string|null"}});
}

TEST(ChatStreamTest, ChunksAreOpenAIsAndShareIdCreatedAndModel) {
  for (bool include_usage : {false, true}) {
    SCOPED_TRACE(include_usage);
    const CompletionHeader header = Header(true, include_usage);
    v1::InferResponse start = Answer();
    start.clear_text();
    start.clear_usage();
    start.clear_cost_usd();
    v1::TextDelta hello;
    hello.set_text("Hel");
    v1::TextDelta lo;
    lo.set_text("lo\n\nthere\r");
    v1::InferResponse end;
    end.set_request_id(start.request_id());
    end.mutable_usage()->set_input_tokens(120);
    end.mutable_usage()->set_output_tokens(3);
    end.mutable_usage()->set_estimated(true);
    end.set_cost_usd(0.0002);
    end.set_latency_seconds(0.4);
    end.set_finish_reason("length");
    *end.add_citations() = start.citations(0);

    std::string stream = RenderFirstChunk(start, header);
    stream += RenderDeltaChunk(hello, header);
    stream += RenderDeltaChunk(lo, header);
    stream += RenderStreamEnd(end, header);
    ASSERT_TRUE(absl::EndsWith(stream, kSseDone));
    std::vector<std::string> events = Events(stream);
    ASSERT_EQ(events.back(), kSseDone);
    events.pop_back();
    ASSERT_EQ(events.size(), include_usage ? 5u : 4u);

    std::string assembled;
    std::vector<Json> chunks;
    for (const std::string& event : events) {
      chunks.push_back(Event(event));
      ExpectChunkShape(chunks.back(), header);
      if (!chunks.back()["choices"].empty()) {
        const Json& delta = chunks.back()["choices"][0]["delta"];
        if (delta.contains("content")) {
          assembled += delta["content"].get<std::string>();
        }
      }
    }
    EXPECT_EQ(assembled, "Hello\n\nthere\r");

    const Json& first = chunks[0];
    EXPECT_EQ(
        first["choices"][0]["delta"],
        (Json{{"role", "assistant"}, {"content", ""}, {"refusal", nullptr}}));
    EXPECT_EQ(first["choices"][0]["finish_reason"], nullptr);
    EXPECT_EQ(first["arbiter"]["route"], "rag");
    EXPECT_EQ(first["arbiter"]["kind"], "rag");
    EXPECT_EQ(first["arbiter"]["request_id"], "arb2_abc-DEF_1");
    EXPECT_EQ(first["arbiter"]["decision"]["policy"], "thompson");
    EXPECT_EQ(first["arbiter"]["citations"].size(), 1u);
    EXPECT_FALSE(first["arbiter"].contains("cost_usd"));

    EXPECT_EQ(chunks[1]["choices"][0]["delta"], (Json{{"content", "Hel"}}));
    EXPECT_FALSE(chunks[1].contains("arbiter"));

    const Json& final_chunk = chunks[3];
    EXPECT_EQ(final_chunk["choices"][0]["delta"], Json::object());
    EXPECT_EQ(final_chunk["choices"][0]["finish_reason"], "length");
    EXPECT_DOUBLE_EQ(final_chunk["arbiter"]["cost_usd"].get<double>(), 0.0002);
    EXPECT_EQ(final_chunk["arbiter"]["usage_estimated"], true);
    EXPECT_EQ(final_chunk["arbiter"]["citations"][0]["doc_id"], "kb-7");
    if (include_usage) {
      EXPECT_EQ(final_chunk["usage"], nullptr);
      const Json& usage = chunks[4];
      EXPECT_EQ(usage["choices"], Json::array());
      EXPECT_EQ(usage["usage"], (Json{{"prompt_tokens", 120},
                                      {"completion_tokens", 3},
                                      {"total_tokens", 123}}));
    }
  }
}

TEST(ChatStreamTest, ToolCallDeltasCarryNoContent) {
  v1::TextDelta delta;
  delta.set_passthrough_json(
      R"({"tool_calls": [{"index": 0, "function": {"arguments": "{\"q"}}],)"
      R"( "logprobs": {"content": []}, "system_fingerprint": "fp_2"})");
  const Json chunk = Event(RenderDeltaChunk(delta, Header(true)));
  const Json& choice = chunk["choices"][0];
  EXPECT_FALSE(choice["delta"].contains("content"));
  EXPECT_EQ(choice["delta"]["tool_calls"][0]["index"], 0);
  EXPECT_EQ(choice["logprobs"], (Json{{"content", Json::array()}}));
  EXPECT_EQ(chunk["system_fingerprint"], "fp_2");
}

TEST(ChatStreamTest, UsageChunkIsSentOnlyWhenAskedFor) {
  const v1::InferResponse end = Answer();
  EXPECT_EQ(Events(RenderStreamEnd(end, Header(true, false))).size(), 2u);
  EXPECT_EQ(Events(RenderStreamEnd(end, Header(true, true))).size(), 3u);
}

TEST(ChatResponseTest, ArbiterHeadersNameRequestRouteAndCost) {
  using Pairs = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(ArbiterHeaders(Answer(), true),
            (Pairs{{"x-arbiter-request-id", "arb2_abc-DEF_1"},
                   {"x-arbiter-route", "rag"},
                   {"x-arbiter-cost-usd", "0.000123"}}));
  EXPECT_EQ(ArbiterHeaders(Answer(), false).size(), 2u);
}

// ------------------------------------------------------------------ errors

TEST(ErrorForTest, MapsEveryCodeToTheStatusAnOpenAIClientExpects) {
  struct Case {
    absl::Status status;
    int http;
    const char* type;
    std::optional<std::string> code;
  };
  const Case cases[] = {
      {absl::InvalidArgumentError("x"), 400, "invalid_request_error",
       std::nullopt},
      {absl::OutOfRangeError("x"), 400, "invalid_request_error", std::nullopt},
      {absl::FailedPreconditionError("no route is eligible"), 400,
       "invalid_request_error", "failed_precondition"},
      {absl::NotFoundError("x"), 404, "invalid_request_error", "not_found"},
      {absl::AlreadyExistsError("x"), 409, "invalid_request_error",
       "already_exists"},
      {absl::AbortedError("x"), 409, "invalid_request_error", "conflict"},
      {absl::UnauthenticatedError("x"), 401, "authentication_error",
       "invalid_api_key"},
      {absl::PermissionDeniedError("x"), 403, "permission_error",
       "permission_denied"},
      {absl::ResourceExhaustedError("x"), 429, "rate_limit_error",
       "rate_limit_exceeded"},
      {absl::CancelledError("x"), 499, "invalid_request_error",
       "client_closed_request"},
      {absl::DeadlineExceededError("x"), 504, "server_error",
       "backend_timeout"},
      {WithSource(absl::DeadlineExceededError("x"), ErrorSource::kClient), 408,
       "invalid_request_error", "request_timeout"},
      {absl::UnavailableError("backend \"vllm\": HTTP 503"), 502,
       "server_error", "backend_unavailable"},
      {WithSource(absl::UnavailableError("shutting down"),
                  ErrorSource::kBackend),
       502, "server_error", "backend_unavailable"},
      {WithSource(absl::UnavailableError("the gateway is shutting down"),
                  ErrorSource::kArbiter),
       503, "server_error", "service_unavailable"},
      {absl::UnimplementedError("x"), 501, "invalid_request_error",
       "unsupported"},
      {absl::InternalError("x"), 500, "server_error", std::nullopt},
      {absl::UnknownError("x"), 500, "server_error", std::nullopt},
      {absl::DataLossError("x"), 500, "server_error", std::nullopt},
      {absl::OkStatus(), 500, "server_error", std::nullopt},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.status.ToString());
    const HttpError error = ErrorFor(c.status);
    EXPECT_EQ(error.status, c.http);
    EXPECT_EQ(error.error.type, c.type);
    EXPECT_EQ(error.error.code, c.code);
    const Json body = Parsed(error.body);
    ASSERT_EQ(body.size(), 1u);
    ExpectShape(body, {{"/error/message", "string"},
                       {"/error/type", "string"},
                       {"/error/param", "string|null"},
                       {"/error/code", "string|null"}});
    EXPECT_FALSE(body["error"]["message"].get<std::string>().empty());
    if (!c.status.ok()) {
      EXPECT_EQ(body["error"]["message"], std::string(c.status.message()));
    }
  }
}

TEST(ErrorForTest, ConflictsTellTheClientsNotToRetry) {
  const HttpError error = ErrorFor(absl::AlreadyExistsError(
      "request_id: feedback for this request was already counted"));
  EXPECT_THAT(error.headers, ElementsAre(std::pair<std::string, std::string>(
                                 "x-should-retry", "false")));
  EXPECT_EQ(error.error.param, "request_id");
  EXPECT_TRUE(ErrorFor(absl::UnavailableError("x")).headers.empty());
}

TEST(ErrorForTest, ParamComesFromThePayloadOrTheMessagesFieldPath) {
  EXPECT_EQ(ParamOf(InvalidField("messages[2].content", "must not be empty")),
            "messages[2].content");
  EXPECT_EQ(ParamOf(WithParam(absl::InvalidArgumentError("something"), "seed")),
            "seed");
  // The pipeline's messages start with the field they blame.
  EXPECT_EQ(ParamOf(absl::InvalidArgumentError("route: unknown route \"x\"")),
            "route");
  EXPECT_EQ(ParamOf(absl::InvalidArgumentError(
                "limits.max_output_tokens: must be >= 0")),
            "limits.max_output_tokens");
  EXPECT_EQ(ParamOf(absl::NotFoundError("model: unknown model \"x\"")),
            "model");
  EXPECT_EQ(
      ErrorFor(absl::NotFoundError("model: unknown model \"x\"")).error.code,
      "model_not_found");
  // Not a field path, or not the client's fault: no param.
  EXPECT_EQ(ParamOf(absl::InvalidArgumentError("not valid JSON at byte 3: x")),
            std::nullopt);
  EXPECT_EQ(ParamOf(absl::InvalidArgumentError(
                "request: 2000000 bytes exceeds the limit of 1048576 "
                "(server.max_request_bytes)")),
            std::nullopt);
  EXPECT_EQ(ParamOf(absl::UnavailableError("backend: HTTP 503")), std::nullopt);
  EXPECT_EQ(ParamOf(absl::InvalidArgumentError("backend \"vllm\": refused")),
            std::nullopt);
}

TEST(ErrorForTest, SourceSays502Or503And504Or408) {
  EXPECT_EQ(SourceOf(absl::UnavailableError("x")), ErrorSource::kBackend);
  EXPECT_EQ(
      SourceOf(WithSource(absl::UnavailableError("x"), ErrorSource::kArbiter)),
      ErrorSource::kArbiter);
  EXPECT_TRUE(WithSource(absl::OkStatus(), ErrorSource::kArbiter).ok());
  EXPECT_EQ(ClientTimeout("the request body did not arrive within 30 s").status,
            408);
  const HttpError closed = ClientClosed();
  EXPECT_EQ(closed.status, 499);
  EXPECT_EQ(closed.error.code, "client_closed_request");
  const HttpError large = BodyTooLarge(1 << 20, "server.max_request_bytes");
  EXPECT_EQ(large.status, 413);
  EXPECT_EQ(Parsed(large.body)["error"]["message"],
            "the request body exceeds the limit of 1048576 bytes "
            "(server.max_request_bytes)");
  EXPECT_EQ(Parsed(large.body)["error"]["code"], "request_too_large");
}

TEST(ErrorForTest, MessagesThatAreNotUtf8ComeOutRepaired) {
  const HttpError error = ErrorFor(absl::InvalidArgumentError("bad \xff"));
  EXPECT_TRUE(IsValidUtf8(error.body));
}

TEST(ErrorForTest, StreamErrorIsOneSseEventTheClientsThrowOn) {
  const std::string event =
      RenderStreamError(absl::DeadlineExceededError("backend \"vllm\": no "
                                                    "answer within 30 s"));
  const Json data = Event(event);
  // The official clients throw an APIError when a chunk has "error".
  ASSERT_TRUE(data.contains("error"));
  EXPECT_EQ(data["error"]["message"],
            "backend \"vllm\": no answer within 30 s");
  EXPECT_EQ(data["error"]["type"], "server_error");
  EXPECT_EQ(data["error"]["code"], "backend_timeout");
}

// --------------------------------------------------------- other endpoints

TEST(ModelsListTest, ListsAutoFirstThenTheRoutes) {
  const std::vector<ModelEntry> routes = {
      {"fast", "arbiter"}, {"arbiter/auto", "x"}, {"rag", "arbiter"}};
  const Json list = Parsed(RenderModelsList(routes, 1'234));
  EXPECT_EQ(list["object"], "list");
  ASSERT_EQ(list["data"].size(), 3u);
  std::vector<std::string> ids;
  for (const Json& model : list["data"]) {
    ExpectShape(model, {{"/id", "string"},
                        {"/object", "string"},
                        {"/created", "integer"},
                        {"/owned_by", "string"}});
    EXPECT_EQ(model["object"], "model");
    EXPECT_EQ(model["created"], 1'234);
    ids.push_back(model["id"]);
  }
  EXPECT_THAT(ids, ElementsAre("arbiter/auto", "fast", "rag"));
  EXPECT_EQ(list["data"][0]["owned_by"], "arbiter");
}

TEST(EmbeddingsTest, ReadsOneOrManyInputs) {
  auto one = ParseEmbeddingsRequest(R"({"model": "corpus", "input": "hi"})");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->model, "corpus");
  EXPECT_THAT(one->inputs, ElementsAre("hi"));
  EXPECT_EQ(one->encoding, EmbeddingEncoding::kFloat);
  auto many = ParseEmbeddingsRequest(
      R"({"model": "corpus", "input": ["a", "b"], "encoding_format": "base64",
          "dimensions": 384, "user": "u1"})");
  ASSERT_TRUE(many.ok()) << many.status();
  EXPECT_THAT(many->inputs, ElementsAre("a", "b"));
  EXPECT_EQ(many->encoding, EmbeddingEncoding::kBase64);
  EXPECT_EQ(many->dimensions, 384);
  EXPECT_EQ(many->user, "u1");
  EXPECT_TRUE(CheckDimensions(*many, 384).ok());
  ExpectFieldError(CheckDimensions(*many, 512), "dimensions",
                   "makes 512-dimensional vectors, not 384");
  EXPECT_TRUE(CheckDimensions(*one, 512).ok());
}

TEST(EmbeddingsTest, RefusesWhatItCannotEmbedNamingTheField) {
  Json many = Json::array();
  for (size_t i = 0; i <= kMaxEmbeddingInputs; ++i) many.push_back("x");
  struct Case {
    std::string body;
    const char* param;
    const char* says;
  };
  const Case cases[] = {
      {R"({"input": "hi"})", "model", "missing"},
      {R"({"model": "m"})", "input", "missing"},
      {R"({"model": "m", "input": [1, 2, 3]})", "input",
       "token arrays are not supported"},
      {R"({"model": "m", "input": [[1, 2], [3]]})", "input",
       "token arrays are not supported"},
      {R"({"model": "m", "input": ""})", "input", "must not be empty"},
      {R"({"model": "m", "input": []})", "input", "must not be empty"},
      {R"({"model": "m", "input": ["a", 2]})", "input[1]",
       "expected a string, got a number"},
      {R"({"model": "m", "input": ["a", ""]})", "input[1]",
       "must not be empty"},
      {R"({"model": "m", "input": {"a": 1}})", "input",
       "expected a string or an array of strings"},
      {Json{{"model", "m"}, {"input", many}}.dump(), "input",
       "at most 2048 inputs, got 2049"},
      {R"({"model": "m", "input": "a", "encoding_format": "int8"})",
       "encoding_format", "must be \"float\" or \"base64\", got \"int8\""},
      {R"({"model": "m", "input": "a", "dimensions": 0})", "dimensions",
       "must be >= 1"},
      {R"({"model": "m", "input": "a", "dimension": 3})", "dimension",
       "unknown field"},
      {"{\"model\": \"m\", \"input\": \"caf\xe9\"}", "input", "invalid UTF-8"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body.substr(0, 80));
    ExpectFieldError(ParseEmbeddingsRequest(c.body).status(), c.param, c.says);
  }
}

TEST(EmbeddingsTest, RendersFloatsShortestAndBase64AsTheClientsDecode) {
  const std::vector<std::vector<float>> vectors = {{0.1f, -0.5f, 1.0f},
                                                   {0.25f, 3e-8f, 0.0f}};
  const std::string text =
      RenderEmbeddings(vectors, "corpus", 7, EmbeddingEncoding::kFloat);
  EXPECT_THAT(text, HasSubstr("[0.1,-0.5,1.0]"));
  const Json floats = Parsed(text);
  EXPECT_EQ(floats["object"], "list");
  EXPECT_EQ(floats["model"], "corpus");
  EXPECT_EQ(floats["usage"], (Json{{"prompt_tokens", 7}, {"total_tokens", 7}}));
  ASSERT_EQ(floats["data"].size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    ExpectShape(floats["data"][i], {{"/object", "string"},
                                    {"/index", "integer"},
                                    {"/embedding", "array"}});
    EXPECT_EQ(floats["data"][i]["object"], "embedding");
    EXPECT_EQ(floats["data"][i]["index"], i);
    for (size_t j = 0; j < 3; ++j) {
      EXPECT_EQ(
          static_cast<float>(floats["data"][i]["embedding"][j].get<double>()),
          vectors[i][j]);
    }
  }

  const Json base64 = Parsed(
      RenderEmbeddings(vectors, "corpus", 7, EmbeddingEncoding::kBase64));
  for (size_t i = 0; i < 2; ++i) {
    std::string bytes;
    ASSERT_TRUE(absl::Base64Unescape(
        base64["data"][i]["embedding"].get<std::string>(), &bytes));
    ASSERT_EQ(bytes.size(), 12u);
    for (size_t j = 0; j < 3; ++j) {
      // Little-endian float32, as Float32Array reads it on every client.
      uint32_t bits = 0;
      for (int b = 3; b >= 0; --b) {
        bits = bits << 8 | static_cast<unsigned char>(bytes[j * 4 + b]);
      }
      float value;
      std::memcpy(&value, &bits, sizeof(value));
      EXPECT_EQ(value, vectors[i][j]);
    }
  }
}

TEST(FeedbackTest, ReadsCorrectOrScore) {
  auto correct =
      ParseFeedbackRequest(R"({"request_id": "arb2_x", "correct": false})");
  ASSERT_TRUE(correct.ok()) << correct.status();
  EXPECT_EQ(correct->request_id(), "arb2_x");
  ASSERT_EQ(correct->outcome_case(), v1::FeedbackRequest::kCorrect);
  EXPECT_FALSE(correct->correct());
  auto score =
      ParseFeedbackRequest(R"({"request_id": "arb2_x", "score": 0.75})");
  ASSERT_TRUE(score.ok()) << score.status();
  ASSERT_EQ(score->outcome_case(), v1::FeedbackRequest::kScore);
  EXPECT_EQ(score->score(), 0.75);
}

TEST(FeedbackTest, RefusesBothNeitherAndBadFields) {
  struct Case {
    const char* body;
    const char* param;
    const char* says;
  };
  const Case cases[] = {
      {R"({"request_id": "r", "correct": true, "score": 1})", "score",
       "send correct or score, not both"},
      {R"({"request_id": "r"})", "correct", "missing: send correct"},
      {R"({"request_id": "r", "score": 1.5})", "score",
       "must be in [0, 1], got 1.5"},
      {R"({"request_id": "r", "correct": "yes"})", "correct",
       "expected a boolean"},
      {R"({"correct": true})", "request_id", "missing"},
      {R"({"request_id": "", "correct": true})", "request_id",
       "must not be empty"},
      {R"({"request_id": "r", "correct": true, "comment": "x"})", "comment",
       "unknown field"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body);
    ExpectFieldError(ParseFeedbackRequest(c.body).status(), c.param, c.says);
  }
  EXPECT_THAT(std::string(ParseFeedbackRequest("[]").status().message()),
              StartsWith("the body: expected a JSON object"));
}

TEST(FeedbackTest, RendersWhatTheFeedbackWasCountedFor) {
  v1::FeedbackResponse response;
  response.set_route("rag");
  response.set_task("faq");
  EXPECT_EQ(Parsed(RenderFeedbackResponse("arb2_x", response)),
            (Json{{"object", "feedback"},
                  {"request_id", "arb2_x"},
                  {"route", "rag"},
                  {"task", "faq"}}));
}

TEST(OtherEndpointsTest, RandomBodiesNeverCrash) {
  std::mt19937 random(41);
  const std::string seeds[] = {
      R"({"model": "m", "input": ["a", "b"], "encoding_format": "base64"})",
      R"({"request_id": "arb2_x", "score": 0.5})"};
  const std::string alphabet = "{}[]\":,\\ 0123456789.-eEtrufalsn\xff";
  for (int round = 0; round < 10'000; ++round) {
    std::string body = seeds[round % 2];
    for (int e = 0; e < 3; ++e) {
      const size_t at = random() % body.size();
      if (random() % 2) {
        body[at] = alphabet[random() % alphabet.size()];
      } else {
        body.erase(at, 1 + random() % 4);
        if (body.empty()) body = "{";
      }
    }
    auto embeddings = ParseEmbeddingsRequest(body);
    auto feedback = ParseFeedbackRequest(body);
    if (!embeddings.ok()) {
      ASSERT_EQ(embeddings.status().code(), absl::StatusCode::kInvalidArgument)
          << body;
    }
    if (!feedback.ok()) {
      ASSERT_EQ(feedback.status().code(), absl::StatusCode::kInvalidArgument)
          << body;
    }
  }
}

}  // namespace
}  // namespace arbiter::openai
