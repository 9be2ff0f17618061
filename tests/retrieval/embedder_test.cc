#include "retrieval/embedder.h"

#include <cmath>
#include <numeric>

#include "gtest/gtest.h"

namespace arbiter::retrieval {
namespace {

float Dot(const std::vector<float>& a, const std::vector<float>& b) {
  return std::inner_product(a.begin(), a.end(), b.begin(), 0.0f);
}

TEST(EmbedderTest, VectorsAreUnitLengthAndDeterministic) {
  HashedNgramEmbedder embedder(256);
  std::vector<float> v = embedder.Embed("reset my password");
  ASSERT_EQ(v.size(), 256u);
  EXPECT_NEAR(Dot(v, v), 1.0f, 1e-5);
  HashedNgramEmbedder other(256);
  EXPECT_EQ(v, other.Embed("reset my password"));
}

TEST(EmbedderTest, EmptyTextGivesZeros) {
  HashedNgramEmbedder embedder(64);
  std::vector<float> v = embedder.Embed("  ?! ");
  EXPECT_EQ(Dot(v, v), 0.0f);
}

TEST(EmbedderTest, RelatedTextsAreCloserThanUnrelated) {
  HashedNgramEmbedder embedder(512);
  std::vector<absl::string_view> corpus = {
      "To reset your password open Settings and choose Security.",
      "Invoices are emailed on the first day of each month.",
      "Offline mode keeps your notes available without a connection."};
  embedder.Fit(corpus);
  std::vector<float> query = embedder.Embed("how can I change my password");
  EXPECT_GT(Dot(query, embedder.Embed(corpus[0])),
            Dot(query, embedder.Embed(corpus[1])));
  EXPECT_GT(Dot(query, embedder.Embed(corpus[0])),
            Dot(query, embedder.Embed(corpus[2])));
  // Character n-grams match inflections.
  EXPECT_GT(
      Dot(embedder.Embed("resetting passwords"), embedder.Embed(corpus[0])),
      0.05f);
}

TEST(EmbedderTest, FitDownweightsCommonTerms) {
  HashedNgramEmbedder embedder(512);
  std::vector<absl::string_view> corpus = {"the notes app", "the billing page",
                                           "the sync engine", "the rare zebra"};
  embedder.Fit(corpus);
  std::vector<float> query = embedder.Embed("the zebra");
  EXPECT_GT(Dot(query, embedder.Embed(corpus[3])),
            Dot(query, embedder.Embed(corpus[0])));
}

TEST(EmbedderTest, StopWordsAreCommonFunctionWords) {
  EXPECT_TRUE(IsStopWord("the"));
  EXPECT_TRUE(IsStopWord("how"));
  EXPECT_FALSE(IsStopWord("password"));
  EXPECT_FALSE(IsStopWord("The"));  // Callers lower-case first.
}

TEST(EmbedderTest, StopWordsAloneStillEmbed) {
  HashedNgramEmbedder embedder(128);
  std::vector<float> v = embedder.Embed("how do I");
  EXPECT_NEAR(Dot(v, v), 1.0f, 1e-5);
}

TEST(EmbedderTest, StopWordsDoNotMakeTextsSimilar) {
  HashedNgramEmbedder embedder(512);
  std::vector<float> query = embedder.Embed("how do I export my notes");
  EXPECT_GT(Dot(query, embedder.Embed("export notes")),
            Dot(query, embedder.Embed("how do I pay my invoice")));
}

TEST(EmbedderTest, NonPositiveDimIsClampedToOne) {
  HashedNgramEmbedder embedder(0);
  EXPECT_EQ(embedder.dim(), 1);
  EXPECT_EQ(embedder.Embed("anything").size(), 1u);
}

}  // namespace
}  // namespace arbiter::retrieval
