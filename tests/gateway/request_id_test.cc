#include "gateway/request_id.h"

#include "gtest/gtest.h"

namespace arbiter {
namespace {

TEST(RequestIdTest, RoundTripsItsParts) {
  RequestIdParts parts{"fine-tuned",
                       "support.refund",
                       1764350000123,
                       0xdeadbeefcafef00d,
                       "",
                       ""};
  std::string id = EncodeRequestId(parts);
  EXPECT_EQ(id.rfind("arb1_", 0), 0u);
  auto decoded = DecodeRequestId(id);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->route, "fine-tuned");
  EXPECT_EQ(decoded->task, "support.refund");
  EXPECT_EQ(decoded->unix_millis, 1764350000123);
  EXPECT_EQ(decoded->nonce, 0xdeadbeefcafef00d);
}

TEST(RequestIdTest, CarriesTheExperimentArm) {
  RequestIdParts parts{"rag", "faq", 5, 6, "prompt-vs-rag", "B"};
  auto decoded = DecodeRequestId(EncodeRequestId(parts));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->experiment, "prompt-vs-rag");
  EXPECT_EQ(decoded->arm, "B");
  EXPECT_EQ(decoded->route, "rag");
}

TEST(RequestIdTest, DistinctNoncesGiveDistinctIds) {
  EXPECT_NE(EncodeRequestId({"r", "t", 1, 1, "", ""}),
            EncodeRequestId({"r", "t", 1, 2, "", ""}));
}

TEST(RequestIdTest, ForeignOrMistypedIdsAreNotFound) {
  std::string id = EncodeRequestId({"rag", "faq", 42, 7, "", ""});
  for (std::string bad :
       {std::string("hello"), std::string("arb1_"), std::string("arb1_!!!"),
        id.substr(0, id.size() - 2), id + "x"}) {
    auto decoded = DecodeRequestId(bad);
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kNotFound) << bad;
  }
  std::string flipped = id;
  flipped[8] = flipped[8] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(DecodeRequestId(flipped).ok());
}

}  // namespace
}  // namespace arbiter
