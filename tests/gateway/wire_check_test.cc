#include "gateway/wire_check.h"

#include "arbiter/v1/gateway.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbiter {
namespace {

using ::testing::HasSubstr;

// `message` serialized, with the byte after the first `marker` replaced
// by `byte`: what a client with its own encoder might send.
template <typename Message>
std::string WithByte(const Message& message, const std::string& marker,
                     char byte) {
  std::string bytes = message.SerializeAsString();
  bytes[bytes.find(marker) + marker.size()] = byte;
  return bytes;
}

TEST(WireCheckTest, NamesTheStringFieldThatIsNotUtf8) {
  v1::InferRequest request;
  request.add_messages()->set_content("hello");
  v1::ChatMessage* second = request.add_messages();
  second->set_role(v1::ROLE_USER);
  second->set_content("caf?");
  const std::string bytes = WithByte(request, "caf", '\xE9');
  ASSERT_FALSE(v1::InferRequest().ParseFromString(bytes));
  absl::Status why = WhyUnparsable(*v1::InferRequest::descriptor(), bytes);
  EXPECT_EQ(why.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(why.message(),
              HasSubstr("messages[1].content: invalid UTF-8 at byte 3"));
}

TEST(WireCheckTest, SaysWhichDocumentById) {
  v1::UpsertRequest request;
  request.set_collection("kb");
  request.add_documents()->set_id("fine");
  v1::RetrievalDocument* bad = request.add_documents();
  bad->set_id("faq-7");
  bad->set_text("well formed until here?");
  absl::Status why = WhyUnparsable(*v1::UpsertRequest::descriptor(),
                                   WithByte(request, "until here", '\xFF'));
  EXPECT_THAT(why.message(),
              HasSubstr("documents[1].text (id \"faq-7\"): invalid UTF-8 at "
                        "byte 22"));
}

TEST(WireCheckTest, NamesMapEntriesAndNestedFields) {
  v1::InferRequest request;
  (*request.mutable_metadata())["team"] = "s?les";
  absl::Status why = WhyUnparsable(*v1::InferRequest::descriptor(),
                                   WithByte(request, "s", '\xC0'));
  EXPECT_THAT(why.message(), HasSubstr("metadata[0].value: invalid UTF-8"));
}

TEST(WireCheckTest, BytesThatAreNoMessageAtAllSaySo) {
  absl::Status why =
      WhyUnparsable(*v1::InferRequest::descriptor(), "\xFF\xFF\xFF");
  EXPECT_EQ(why.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      why.message(),
      HasSubstr("3 bytes that are not a valid arbiter.v1.InferRequest"));
}

}  // namespace
}  // namespace arbiter
