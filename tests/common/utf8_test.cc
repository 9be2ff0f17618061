#include "common/utf8.h"

#include "common/quote.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbiter {
namespace {

TEST(Utf8Test, FindsTheFirstInvalidByte) {
  EXPECT_EQ(FirstInvalidUtf8("plain ascii"), std::nullopt);
  EXPECT_EQ(FirstInvalidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
            std::nullopt);
  EXPECT_EQ(FirstInvalidUtf8("caf\xe9"), 3u);           // Latin-1 byte.
  EXPECT_EQ(FirstInvalidUtf8("ab\xc0\xaf"), 2u);        // Overlong '/'.
  EXPECT_EQ(FirstInvalidUtf8("\xed\xa0\x80"), 0u);      // Surrogate.
  EXPECT_EQ(FirstInvalidUtf8("\xf4\x90\x80\x80"), 0u);  // Above U+10FFFF.
  EXPECT_EQ(FirstInvalidUtf8("x\xe2\x82"), 1u);         // Truncated.
  EXPECT_EQ(FirstInvalidUtf8("\xff"), 0u);
}

TEST(Utf8Test, RepairsEachIllFormedSubsequenceWithOneReplacement) {
  size_t replaced = 0;
  EXPECT_EQ(RepairUtf8("caf\xe9!", &replaced), "caf\xef\xbf\xbd!");
  EXPECT_EQ(replaced, 1u);
  // A truncated 3-byte sequence is one replacement, then the next byte.
  EXPECT_EQ(RepairUtf8("\xe2\x82x", &replaced), "\xef\xbf\xbdx");
  EXPECT_EQ(replaced, 1u);
  EXPECT_EQ(RepairUtf8("ok", &replaced), "ok");
  EXPECT_EQ(replaced, 0u);
  EXPECT_TRUE(IsValidUtf8(RepairUtf8("\xff\xfe\xc0\xaf\xed\xa0\x80")));
}

TEST(Utf8Test, TruncatesOnCharacterBoundaries) {
  EXPECT_EQ(TruncateUtf8("h\xc3\xa9llo", 2), "h");
  EXPECT_EQ(TruncateUtf8("h\xc3\xa9llo", 3), "h\xc3\xa9");
  EXPECT_EQ(TruncateUtf8("short", 100), "short");
}

TEST(QuoteInputTest, QuotesShortInputWhole) {
  EXPECT_EQ(QuoteInput("faq"), "\"faq\"");
  EXPECT_EQ(QuoteInput("a\"b\n\x01"), "\"a\\\"b\\n\\x01\"");
}

TEST(QuoteInputTest, CutsLongInputAndSaysHowLongItWas) {
  const std::string id(100'000, 'a');
  const std::string quoted = QuoteInput(id);
  EXPECT_LT(quoted.size(), 160u);
  EXPECT_THAT(quoted, ::testing::EndsWith("... (100000 bytes)"));
}

TEST(QuoteInputTest, RepairsInvalidUtf8) {
  EXPECT_TRUE(IsValidUtf8(QuoteInput("caf\xe9")));
}

}  // namespace
}  // namespace arbiter
