#include "retrieval/chunker.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "retrieval/tokenizer.h"

namespace arbiter::retrieval {
namespace {

std::string Sentences(int n) {
  std::string text;
  for (int i = 0; i < n; ++i) {
    absl::StrAppend(&text, "Sentence number ", i, " talks about topic ", i,
                    ". ");
  }
  return text;
}

TEST(ChunkerTest, EmptyTextGivesNoChunks) {
  EXPECT_TRUE(ChunkText("", {}).empty());
  EXPECT_TRUE(ChunkText("\n\n  \n", {}).empty());
}

TEST(ChunkerTest, ShortTextIsOneChunk) {
  auto chunks = ChunkText("One. Two.", {100, 10});
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0], "One. Two.");
}

TEST(ChunkerTest, ChunksRespectTheSizeAndKeepSentencesWhole) {
  auto chunks = ChunkText(Sentences(40), {50, 10});
  ASSERT_GT(chunks.size(), 3u);
  for (const std::string& chunk : chunks) {
    EXPECT_LE(CountTokens(chunk), 50) << chunk;
    EXPECT_TRUE(absl::StartsWith(chunk, "Sentence number")) << chunk;
    EXPECT_TRUE(absl::EndsWith(chunk, ".")) << chunk;
  }
}

TEST(ChunkerTest, ConsecutiveChunksOverlap) {
  auto chunks = ChunkText(Sentences(40), {50, 20});
  ASSERT_GT(chunks.size(), 2u);
  for (size_t i = 1; i < chunks.size(); ++i) {
    // The next chunk starts with the previous chunk's last sentence.
    std::string first_sentence = chunks[i].substr(0, chunks[i].find('.') + 1);
    EXPECT_TRUE(absl::StrContains(chunks[i - 1], first_sentence))
        << chunks[i - 1] << " | " << chunks[i];
  }
}

TEST(ChunkerTest, EveryFactSurvivesChunking) {
  auto chunks = ChunkText(Sentences(30), {40, 8});
  for (int i = 0; i < 30; ++i) {
    std::string fact = absl::StrCat("talks about topic ", i, ".");
    bool found = false;
    for (const std::string& chunk : chunks)
      found |= absl::StrContains(chunk, fact);
    EXPECT_TRUE(found) << fact;
  }
}

TEST(ChunkerTest, OverlongSentenceIsSplit) {
  std::string sentence;
  for (int i = 0; i < 100; ++i) absl::StrAppend(&sentence, "word ");
  auto chunks = ChunkText(sentence, {20, 0});
  ASSERT_GE(chunks.size(), 5u);
  for (const std::string& chunk : chunks) EXPECT_LE(CountTokens(chunk), 20);
}

TEST(ChunkerTest, ParagraphBreaksArePreservedInsideChunks) {
  auto chunks =
      ChunkText("# Title\n\nFirst paragraph.\n\nSecond paragraph.", {100, 0});
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0], "# Title\n\nFirst paragraph.\n\nSecond paragraph.");
}

}  // namespace
}  // namespace arbiter::retrieval
