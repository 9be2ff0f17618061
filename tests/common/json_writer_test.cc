#include "common/json_writer.h"

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/json.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace arbiter::json {
namespace {

std::string Quoted(absl::string_view text) {
  std::string out;
  AppendString(text, &out);
  return out;
}

// What the answers were written with before the writer: the reference.
std::string Dumped(const std::string& text) {
  return Dump(nlohmann::json(text));
}

std::string Number(double value) {
  std::string out;
  AppendDouble(value, &out);
  return out;
}

TEST(JsonWriterTest, EscapesQuotesBackslashesAndControlBytes) {
  EXPECT_EQ(Quoted(""), R"("")");
  EXPECT_EQ(Quoted("plain"), R"("plain")");
  EXPECT_EQ(Quoted("say \"hi\""), R"("say \"hi\"")");
  EXPECT_EQ(Quoted("C:\\dir\\"), R"("C:\\dir\\")");
  EXPECT_EQ(Quoted("\b\f\n\r\t"), R"("\b\f\n\r\t")");
  EXPECT_EQ(Quoted(std::string("a\0b", 3)), R"("a\u0000b")");
  EXPECT_EQ(Quoted("\x01\x1f\x1b"), R"("\u0001\u001f\u001b")");
  // DEL and '/' need no escape; nlohmann writes them as they are.
  EXPECT_EQ(Quoted("\x7f/"), "\"\x7f/\"");
  EXPECT_EQ(Quoted("\"\\\"\\"), R"("\"\\\"\\")");
}

TEST(JsonWriterTest, KeepsUtf8AsItIs) {
  EXPECT_EQ(Quoted("caf\xC3\xA9"), "\"caf\xC3\xA9\"");
  EXPECT_EQ(Quoted("\xE2\x82\xAC \xF0\x9F\x98\x80"),
            "\"\xE2\x82\xAC \xF0\x9F\x98\x80\"");
  EXPECT_EQ(Quoted("\xEF\xBF\xBF\xF4\x8F\xBF\xBF"),
            "\"\xEF\xBF\xBF\xF4\x8F\xBF\xBF\"");
  // An escaped quote's text is not a quote.
  EXPECT_EQ(Quoted("\\u0022"), R"("\\u0022")");
}

TEST(JsonWriterTest, ReplacesEachIllFormedSubsequenceWithOneReplacement) {
  const std::string fffd = "\xEF\xBF\xBD";
  // A lone continuation byte, bytes that start nothing.
  EXPECT_EQ(Quoted("a\x80z"), "\"a" + fffd + "z\"");
  EXPECT_EQ(Quoted("\xC0\xAF"), "\"" + fffd + fffd + "\"");  // Overlong.
  EXPECT_EQ(Quoted("\xFF\xFE"), "\"" + fffd + fffd + "\"");
  // A truncated sequence, then a byte that is fine on its own.
  EXPECT_EQ(Quoted("\xE2\x82z"), "\"" + fffd + "z\"");
  EXPECT_EQ(Quoted("\xE2\x82\""), "\"" + fffd + "\\\"\"");
  // Cut at the end of the string.
  EXPECT_EQ(Quoted("ok\xF0\x9F\x98"), "\"ok" + fffd + "\"");
  // Surrogates and code points above U+10FFFF.
  EXPECT_EQ(Quoted("\xED\xA0\x80"), "\"" + fffd + fffd + fffd + "\"");
  EXPECT_EQ(Quoted("\xF4\x90\x80\x80"),
            "\"" + fffd + fffd + fffd + fffd + "\"");
}

TEST(JsonWriterTest, WritesWhatNlohmannsDumpWritesForAnyBytes) {
  // Biased toward the bytes that matter: escapes, leads, continuations.
  constexpr unsigned char kInteresting[] = {
      0x00, 0x08, 0x0A, 0x1F, '"',  '\\', '/',  0x7F, 0x80,
      0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0,
      0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF, 'a',  ' '};
  std::mt19937 random(20240);
  for (int round = 0; round < 20000; ++round) {
    const int length = static_cast<int>(random() % 12);
    std::string text;
    for (int k = 0; k < length; ++k) {
      text.push_back(static_cast<char>(
          random() % 3 == 0 ? random() % 256
                            : kInteresting[random() % sizeof(kInteresting)]));
    }
    ASSERT_EQ(Quoted(text), Dumped(text)) << "round " << round;
  }
}

TEST(JsonWriterTest, AppendsAfterWhatTheStringHolds) {
  std::string out = "x=";
  AppendString("\n", &out);
  EXPECT_EQ(out, R"(x="\n")");
}

TEST(JsonWriterTest, WritesNumbersAsNlohmannDoes) {
  for (double value :
       {0.0, -0.0, 1.0, -1.5, 0.1, 0.000123, 1e-5, 123456789012345.0,
        1234567890123456.0, 1e21, 3.0e-9, 0.002816008, 1.7976931348623157e308,
        std::numeric_limits<double>::denorm_min(), static_cast<double>(0.8f)}) {
    EXPECT_EQ(Number(value), Dump(nlohmann::json(value))) << value;
  }
  EXPECT_EQ(Number(0.5), "0.5");
  EXPECT_EQ(Number(1.0), "1.0");
  EXPECT_EQ(Number(std::nan("")), "null");
  EXPECT_EQ(Number(std::numeric_limits<double>::infinity()), "null");
  EXPECT_EQ(Number(-std::numeric_limits<double>::infinity()), "null");
}

TEST(JsonWriterTest, PutsCommasBetweenMembersAndElementsOnly) {
  std::string out;
  Writer w(&out);
  w.BeginObject();
  w.Key("a").Int(1);
  w.Key("b").BeginArray();
  w.Int(-2).String("x").BeginObject().EndObject().BeginArray().EndArray();
  w.Null().Bool(true).Bool(false);
  w.EndArray();
  w.Key("c").BeginObject().Key("d").Double(0.25).EndObject();
  w.Key("e").Raw(R"({"f":[1,2]})");
  w.Key("q\"").String("");
  w.EndObject();
  EXPECT_EQ(out, R"({"a":1,"b":[-2,"x",{},[],null,true,false],"c":{"d":0.25},)"
                 R"("e":{"f":[1,2]},"q\"":""})");
  // The same as nlohmann's dump of the same document.
  EXPECT_EQ(out, Dump(nlohmann::ordered_json::parse(out)));
}

TEST(JsonWriterTest, WritesExtremeIntegers) {
  std::string out;
  Writer w(&out);
  w.BeginArray()
      .Int(std::numeric_limits<int64_t>::min())
      .Int(std::numeric_limits<int64_t>::max())
      .Int(0)
      .EndArray();
  EXPECT_EQ(out, "[-9223372036854775808,9223372036854775807,0]");
}

}  // namespace
}  // namespace arbiter::json
