#include "gateway/cli/args.h"

#include "gtest/gtest.h"

namespace arbiter::cli {
namespace {

absl::StatusOr<Args> Parse(std::vector<std::string> words) {
  std::vector<char*> argv;
  for (std::string& word : words) argv.push_back(word.data());
  return Args::Parse(static_cast<int>(argv.size()), argv.data(),
                     {"task", "qps"}, {"feedback"});
}

TEST(ArgsTest, ParsesValuesSwitchesAndPositionals) {
  auto args = Parse({"--task", "faq", "--qps=20", "--feedback", "hello"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->Get("task"), "faq");
  EXPECT_EQ(*args->GetDouble("qps", 0), 20);
  EXPECT_TRUE(args->Has("feedback"));
  EXPECT_EQ(args->positional(), std::vector<std::string>{"hello"});
}

TEST(ArgsTest, RejectsUnknownFlagsAndMissingValues) {
  EXPECT_EQ(Parse({"--tsak", "faq"}).status().message(), "unknown flag --tsak");
  EXPECT_EQ(Parse({"--task"}).status().message(), "--task needs a value");
  EXPECT_FALSE(Parse({"--qps", "fast"})->GetDouble("qps", 0).ok());
}

}  // namespace
}  // namespace arbiter::cli
