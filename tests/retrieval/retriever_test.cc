#include "retrieval/retriever.h"

#include <thread>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "retrieval/tokenizer.h"

namespace arbiter::retrieval {
namespace {

using ::testing::HasSubstr;

TEST(RetrieverTest, ParseDocumentTakesIdFromFileAndTitleFromHeading) {
  Document document =
      ParseDocument("dir/reset-password.md", "# Reset it\n\nBody.");
  EXPECT_EQ(document.id, "reset-password");
  EXPECT_EQ(document.title, "Reset it");
  EXPECT_EQ(ParseDocument("notes.txt", "No heading here.").title, "notes");
}

TEST(RetrieverTest, ParseDocumentFindsTheFirstHeadingOutsideCode) {
  Document document = ParseDocument(
      "faq.md", "---\ntags: x\n---\n```sh\n# not a title\n```\n# FAQ\n");
  EXPECT_EQ(document.title, "FAQ");
  EXPECT_EQ(ParseDocument("a\\b\\guide.txt", "## Sub\n").id, "guide");
  EXPECT_EQ(ParseDocument("guide.txt", "## Sub\n").title, "guide");
}

TEST(RetrieverTest, AssembledContextCitesEachChunkOnceWithinBudget) {
  std::vector<Chunk> chunks = {
      {1, "reset-password", "Reset your password", 0,
       "Open Settings > Security and choose Reset password."},
      {2, "billing", "Plans and prices", 0, "Plus costs $7.50 per member."},
      {3, "offline", "Offline mode", 0, "Notes stay readable offline."}};
  std::vector<Hit> hits = {
      {&chunks[0], 0.9f}, {&chunks[1], 0.5f}, {&chunks[2], 0.4f}};
  std::vector<Hit> doubled = hits;
  doubled.insert(doubled.end(), hits.begin(), hits.end());
  Context context = AssembleContext(doubled, 1000);
  ASSERT_EQ(context.citations.size(), hits.size());
  EXPECT_EQ(context.citations[0].marker, "[1]");
  EXPECT_EQ(context.citations[1].marker, "[2]");
  EXPECT_TRUE(absl::StartsWith(context.block,
                               "[1] Reset your password (reset-password)\n"));
  EXPECT_THAT(context.block, HasSubstr("Settings > Security"));

  Context small = AssembleContext(hits, 30);
  EXPECT_LE(CountTokens(small.block), 30);
  EXPECT_EQ(small.citations.size(), 1u);
}
TEST(AssembleContextTest, CutsAnOverlongFirstHitToTheBudget) {
  Chunk chunk;
  chunk.doc_id = "long";
  chunk.doc_title = "Long";
  for (int i = 0; i < 200; ++i) chunk.text += "word ";
  Context context = AssembleContext({{&chunk, 0.9f}}, 50);
  ASSERT_EQ(context.citations.size(), 1u);
  EXPECT_LE(CountTokens(context.block), 50);
  EXPECT_GT(CountTokens(context.block), 40);
  EXPECT_TRUE(absl::StartsWith(context.block, "[1] Long (long)\nword word"));
}

TEST(AssembleContextTest, StopsAtTheFirstHitThatDoesNotFit) {
  Chunk small{0, "a", "A", 0, "short text"};
  Chunk big{1, "b", "B", 0, std::string(400, 'z')};
  Chunk other{2, "c", "C", 0, "also short"};
  Context context =
      AssembleContext({{&small, 0.9f}, {&big, 0.8f}, {&other, 0.7f}}, 40);
  ASSERT_EQ(context.citations.size(), 1u);
  EXPECT_EQ(context.citations[0].chunk, &small);
  EXPECT_EQ(context.block, "[1] A (a)\nshort text");
}

TEST(AssembleContextTest, EmptyInputsGiveAnEmptyContext) {
  Chunk chunk{0, "a", "A", 0, "text"};
  EXPECT_TRUE(AssembleContext({}, 100).block.empty());
  EXPECT_TRUE(AssembleContext({{&chunk, 1.0f}}, 0).citations.empty());
  EXPECT_TRUE(AssembleContext({{nullptr, 1.0f}}, 100).citations.empty());
}

}  // namespace
}  // namespace arbiter::retrieval
