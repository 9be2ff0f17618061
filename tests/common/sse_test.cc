#include "common/sse.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbiter::sse {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A stream as servers send it, with everything the format allows: a BOM,
// comments (keep-alives), event/id/retry fields, unknown fields, CRLF, LF
// and CR line ends, a data line with no space after the colon, a field with
// no colon, multi-line data, an event with no data, and an empty data line.
constexpr char kRecorded[] =
    "\xEF\xBB\xBF: keep-alive\r\n"
    "\r\n"
    "id: 1\r\n"
    "event: message\r\n"
    "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\r\n"
    "\r\n"
    "data:{\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n"
    "\n"
    "retry: 1000\r"
    "data: first line\r"
    "data:  two spaces\r"
    "data\r"
    "\r"
    "mystery: ignored\n"
    ": only a comment\n"
    "\n"
    "data:\n"
    "\n"
    "data: caf\xC3\xA9\r\n"
    "data: au lait\r\n"
    "\r\n"
    "data: [DONE]\n"
    "\n";

const std::vector<std::string> kExpected = {
    R"({"choices":[{"delta":{"role":"assistant"}}]})",
    R"({"choices":[{"delta":{"content":"Hel"}}]})",
    "first line\n two spaces\n",
    "",
    "caf\xC3\xA9\nau lait",
    "[DONE]",
};

// Feeds `chunks` in order to a fresh parser; the events and the status.
struct Parsed {
  std::vector<std::string> events;
  absl::Status status;
  bool in_event = false;
};
Parsed Parse(const std::vector<absl::string_view>& chunks,
             size_t max_event_bytes = 1 << 20) {
  Parser parser(max_event_bytes);
  Parsed parsed;
  for (absl::string_view chunk : chunks) {
    parsed.status = parser.Feed(chunk, [&](absl::string_view data) {
      parsed.events.emplace_back(data);
      return absl::OkStatus();
    });
    if (!parsed.status.ok()) break;
  }
  parsed.in_event = parser.in_event();
  return parsed;
}

TEST(SseParserTest, ReadsEveryKindOfLineOfARecordedStream) {
  Parsed parsed = Parse({kRecorded});
  ASSERT_TRUE(parsed.status.ok()) << parsed.status;
  EXPECT_EQ(parsed.events, kExpected);
  EXPECT_FALSE(parsed.in_event);
}

TEST(SseParserTest, GivesTheSameEventsFedByteByByte) {
  const absl::string_view stream = kRecorded;
  std::vector<absl::string_view> bytes;
  for (size_t i = 0; i < stream.size(); ++i)
    bytes.push_back(stream.substr(i, 1));
  Parsed parsed = Parse(bytes);
  ASSERT_TRUE(parsed.status.ok()) << parsed.status;
  EXPECT_EQ(parsed.events, kExpected);
}

TEST(SseParserTest, GivesTheSameEventsForEveryTwoWaySplit) {
  const absl::string_view stream = kRecorded;
  for (size_t at = 0; at <= stream.size(); ++at) {
    Parsed parsed = Parse({stream.substr(0, at), stream.substr(at)});
    ASSERT_TRUE(parsed.status.ok()) << "split at " << at;
    EXPECT_EQ(parsed.events, kExpected) << "split at " << at;
  }
}

TEST(SseParserTest, EmptyChunksChangeNothing) {
  const absl::string_view stream = "data: a\r";
  Parsed parsed = Parse({stream, "", "", "\n", "", "\r\n"});
  ASSERT_TRUE(parsed.status.ok());
  // CR, then (after empty chunks) the LF of the same CRLF, then a blank line.
  EXPECT_THAT(parsed.events, ElementsAre("a"));
}

TEST(SseParserTest, AStreamCutInsideAnEventSaysSo) {
  Parsed line = Parse({"data: {\"choices\":[{\"del"});
  EXPECT_TRUE(line.events.empty());
  EXPECT_TRUE(line.in_event);
  Parsed unterminated = Parse({"data: [DONE]\n"});
  EXPECT_TRUE(unterminated.events.empty());  // No blank line: not an event.
  EXPECT_TRUE(unterminated.in_event);
  Parsed whole = Parse({"data: x\n\n: bye\n"});
  EXPECT_THAT(whole.events, ElementsAre("x"));
  EXPECT_FALSE(whole.in_event);
}

TEST(SseParserTest, AnEventOverTheCapFailsAndStaysFailed) {
  Parser parser(/*max_event_bytes=*/64);
  std::vector<std::string> events;
  auto collect = [&](absl::string_view data) {
    events.emplace_back(data);
    return absl::OkStatus();
  };
  ASSERT_TRUE(parser.Feed("data: small\n\n", collect).ok());
  // Many short data lines add up: the cap is on the event, not the line.
  absl::Status status;
  for (int i = 0; i < 20 && status.ok(); ++i) {
    status = parser.Feed("data: 0123456789\n", collect);
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(status.message(), HasSubstr("an event is over 64 bytes"));
  EXPECT_EQ(parser.Feed("\n\ndata: later\n\n", collect), status);
  EXPECT_THAT(events, ElementsAre("small"));
  // One line with no end counts as it grows.
  Parser one_line(64);
  absl::Status long_line;
  for (int i = 0; i < 20 && long_line.ok(); ++i) {
    long_line = one_line.Feed("0123456789", collect);
  }
  EXPECT_EQ(long_line.code(), absl::StatusCode::kResourceExhausted);
}

TEST(SseParserTest, AHandlerErrorStopsTheStream) {
  Parser parser(1 << 20);
  int calls = 0;
  absl::Status status =
      parser.Feed("data: 1\n\ndata: 2\n\ndata: 3\n\n", [&](absl::string_view) {
        ++calls;
        return calls == 2 ? absl::InvalidArgumentError("bad event")
                          : absl::OkStatus();
      });
  EXPECT_EQ(status, absl::InvalidArgumentError("bad event"));
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(parser.events(), 2u);
}

TEST(SseParserTest, KeepsBytesThatAreNotUtf8ForTheReaderToJudge) {
  Parsed parsed = Parse({"data: caf\xE9\n\n"});
  ASSERT_TRUE(parsed.status.ok());
  EXPECT_THAT(parsed.events, ElementsAre("caf\xE9"));
}

}  // namespace
}  // namespace arbiter::sse
