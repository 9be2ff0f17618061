#include "retrieval/chunker.h"

#include <algorithm>

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

TEST(ChunkerTest, OverlongWordIsCutWithinTheLimit) {
  std::string word(400, 'x');  // 100 tokens, no spaces.
  auto chunks = ChunkText(absl::StrCat("Short. ", word, " tail."), {20, 5});
  std::string joined;
  for (const std::string& chunk : chunks) {
    EXPECT_LE(CountTokens(chunk), 20) << chunk;
    joined += chunk;
  }
  EXPECT_GE(std::count(joined.begin(), joined.end(), 'x'), 400);
}

TEST(ChunkerTest, CutsNeverSplitAUtf8Character) {
  std::string word;
  for (int i = 0; i < 100; ++i) word += "\xc3\xa9";  // "é", two bytes.
  for (const std::string& chunk : ChunkText(word, {7, 0})) {
    EXPECT_LE(CountTokens(chunk), 7);
    EXPECT_EQ(chunk.size() % 2, 0u) << chunk;
    EXPECT_EQ(static_cast<unsigned char>(chunk[0]), 0xc3);
  }
}

TEST(ChunkerTest, OverlapIsWithinTheBudget) {
  auto chunks = ChunkText(Sentences(40), {50, 15});
  ASSERT_GT(chunks.size(), 2u);
  for (size_t i = 1; i < chunks.size(); ++i) {
    // The shared part is a suffix of the previous chunk and a prefix of this.
    const std::string& previous = chunks[i - 1];
    const std::string& current = chunks[i];
    size_t shared = 0;
    for (size_t n = 1; n <= std::min(previous.size(), current.size()); ++n) {
      if (previous.compare(previous.size() - n, n, current, 0, n) == 0) {
        shared = n;
      }
    }
    EXPECT_GT(shared, 0u) << previous << " | " << current;
    EXPECT_LE(CountTokens(current.substr(0, shared)), 15);
  }
}

TEST(ChunkerTest, ChunkSizeHoldsForManyOptions) {
  std::string text = absl::StrCat("# Heading\n\n", Sentences(25),
                                  "\n\n- item one\n- item two\n\n",
                                  std::string(90, 'y'), " ", Sentences(5));
  for (int size : {1, 3, 8, 20, 64}) {
    for (int overlap : {0, 2, 10, 100}) {
      for (const std::string& chunk : ChunkText(text, {size, overlap})) {
        EXPECT_LE(CountTokens(chunk), size) << size << "/" << overlap;
        EXPECT_FALSE(chunk.empty());
      }
    }
  }
}

TEST(ChunkerTest, ListItemsKeepTheirLines) {
  auto chunks = ChunkText("Steps:\n- Open Settings\n- Choose Export", {100, 0});
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0], "Steps:\n- Open Settings\n- Choose Export");
}

TEST(ChunkerTest, ParagraphBreaksArePreservedInsideChunks) {
  auto chunks =
      ChunkText("# Title\n\nFirst paragraph.\n\nSecond paragraph.", {100, 0});
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0], "# Title\n\nFirst paragraph.\n\nSecond paragraph.");
}

}  // namespace
}  // namespace arbiter::retrieval
