#include "retrieval/tokenizer.h"

#include "gtest/gtest.h"

namespace arbiter::retrieval {
namespace {

TEST(TokenizerTest, CountsWordPiecesAndPunctuation) {
  // how do i: 1 each; reset: 2; my: 1; password: 2; "?": 1.
  EXPECT_EQ(CountTokens("How do I reset my password?"), 9);
  EXPECT_EQ(CountTokens(""), 0);
  EXPECT_EQ(CountTokens("   \n\t "), 0);
  EXPECT_EQ(CountTokens("Settings > Security"), 2 + 1 + 2);
  EXPECT_EQ(CountTokens("$7.50"), 1 + 1 + 1 + 1);
}

TEST(TokenizerTest, LongRunsCostOneTokenPerFourCharacters) {
  EXPECT_EQ(CountTokens("abcd"), 1);
  EXPECT_EQ(CountTokens("abcde"), 2);
  EXPECT_EQ(CountTokens("internationalization"), 5);  // 20 characters.
  // Bytes of non-ASCII characters are word characters: "café" is 5 bytes.
  EXPECT_EQ(CountTokens("caf\xc3\xa9"), 2);
}

TEST(TokenizerTest, WordsAreLowerCasedAlphanumericRuns) {
  EXPECT_EQ(Words("Reset, my Password! QP-403"),
            (std::vector<std::string>{"reset", "my", "password", "qp", "403"}));
  EXPECT_TRUE(Words("?!").empty());
}

}  // namespace
}  // namespace arbiter::retrieval
