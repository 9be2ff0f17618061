#include "gateway/cli/error_tally.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbiter::cli {
namespace {

TEST(ErrorTallyTest, MasksEveryNumberOnce) {
  EXPECT_EQ(ErrorTally::MaskNumbers("ejected for 4.2s more (5 failures)"),
            "ejected for #s more (# failures)");
  EXPECT_EQ(ErrorTally::MaskNumbers("HTTP 503. then 10.x"), "HTTP #. then #.x");
  EXPECT_EQ(ErrorTally::MaskNumbers("b1 at 127.0.0.1:8000"), "b# at #.#:#");
  EXPECT_EQ(ErrorTally::MaskNumbers(""), "");
}

TEST(ErrorTallyTest, GroupsByCodeAndMaskedMessageMostFrequentFirst) {
  ErrorTally tally;
  tally.Add("UNAVAILABLE", "backend \"b\" ejected for 4.2s more");
  tally.Add("UNAVAILABLE", "backend \"b\" ejected for 3.9s more");
  tally.Add("UNAVAILABLE", "backend \"b\" ejected for 0.1s more");
  tally.Add("DEADLINE_EXCEEDED", "backend \"b\" ejected for 4.2s more");
  EXPECT_EQ(tally.total(), 4);
  EXPECT_EQ(
      tally.Render(),
      "error x3: UNAVAILABLE: backend \"b\" ejected for #s more\n"
      "  first: UNAVAILABLE: backend \"b\" ejected for 4.2s more\n"
      "error x1: DEADLINE_EXCEEDED: backend \"b\" ejected for #s more\n"
      "  first: DEADLINE_EXCEEDED: backend \"b\" ejected for 4.2s more\n");
}

TEST(ErrorTallyTest, AMessageWithoutNumbersIsShownOnce) {
  ErrorTally tally;
  tally.Add("UNAVAILABLE", "connection refused");
  tally.Add("UNAVAILABLE", "connection refused");
  EXPECT_EQ(tally.Render(), "error x2: UNAVAILABLE: connection refused\n");
}

}  // namespace
}  // namespace arbiter::cli
