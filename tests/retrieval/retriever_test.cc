#include "retrieval/retriever.h"

#include <thread>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "retrieval/tokenizer.h"

namespace arbiter::retrieval {
namespace {

using ::testing::HasSubstr;

std::vector<Document> Corpus() {
  return {
      ParseDocument("reset-password.md",
                    "# Reset your password\n\nOpen Settings > Security and "
                    "choose Reset password. A link arrives by email within "
                    "ten minutes."),
      ParseDocument(
          "billing.md",
          "# Plans and prices\n\nThe Plus plan costs $7.50 per member "
          "per month, billed yearly."),
      ParseDocument("offline.md",
                    "# Offline mode\n\nNotes stay readable without a network "
                    "connection; edits sync when you reconnect."),
      ParseDocument(
          "export.md",
          "# Export your notes\n\nUse File > Export to download a ZIP "
          "archive of Markdown files."),
      ParseDocument(
          "sso.md",
          "# Single sign-on\n\nEnterprise workspaces can sign in with "
          "SAML through Okta or Azure AD."),
  };
}

std::unique_ptr<Retriever> Build() {
  auto retriever = Retriever::Build(Corpus(), {});
  EXPECT_TRUE(retriever.ok()) << retriever.status();
  return *std::move(retriever);
}

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

TEST(RetrieverTest, ChunksHaveDenseIdsAndPositions) {
  RetrieverOptions options;
  options.chunking = {20, 5};
  auto retriever = Retriever::Build(Corpus(), options);
  ASSERT_TRUE(retriever.ok()) << retriever.status();
  const std::vector<Chunk>& chunks = (*retriever)->chunks();
  ASSERT_GT(chunks.size(), 5u);
  for (size_t i = 0; i < chunks.size(); ++i) {
    EXPECT_EQ(chunks[i].id, static_cast<int64_t>(i));
    if (i > 0 && chunks[i].doc_id == chunks[i - 1].doc_id) {
      EXPECT_EQ(chunks[i].position, chunks[i - 1].position + 1);
    } else {
      EXPECT_EQ(chunks[i].position, 0);
    }
  }
}

TEST(RetrieverTest, FindsTheRightDocumentForAParaphrase) {
  auto retriever = Build();
  EXPECT_EQ(retriever->document_count(), 5u);
  auto hits = retriever->Search("I forgot my password, how do I change it?", 3);
  ASSERT_TRUE(hits.ok()) << hits.status();
  ASSERT_FALSE(hits->empty());
  EXPECT_EQ((*hits)[0].chunk->doc_id, "reset-password");
  hits = retriever->Search("how much does the plus subscription cost", 3);
  ASSERT_TRUE(hits.ok());
  EXPECT_EQ((*hits)[0].chunk->doc_id, "billing");
}

TEST(RetrieverTest, ReturnsAtMostKHitsBestFirst) {
  auto retriever = Build();
  auto hits = retriever->Search("notes", 3);
  ASSERT_TRUE(hits.ok());
  EXPECT_EQ(hits->size(), 3u);
  for (size_t i = 1; i < hits->size(); ++i) {
    EXPECT_GE((*hits)[i - 1].score, (*hits)[i].score);
  }
  hits = retriever->Search("notes", 100);
  ASSERT_TRUE(hits.ok());
  EXPECT_EQ(hits->size(), retriever->chunks().size());
}

TEST(RetrieverTest, BadQueriesAreInvalidArguments) {
  auto retriever = Build();
  EXPECT_EQ(retriever->Search("password", 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(retriever->Search("  ?? ", 3).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RetrieverTest, EmptyCorpusGivesNoHits) {
  auto retriever = Retriever::Build({}, {});
  ASSERT_TRUE(retriever.ok()) << retriever.status();
  auto hits = (*retriever)->Search("password", 3);
  ASSERT_TRUE(hits.ok());
  EXPECT_TRUE(hits->empty());
}

TEST(RetrieverTest, BadEmbeddingDimIsRejected) {
  RetrieverOptions options;
  options.embedding_dim = 0;
  EXPECT_EQ(Retriever::Build(Corpus(), options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RetrieverTest, ConcurrentSearchesAgree) {
  auto retriever = Build();
  auto expected = retriever->Search("export notes as markdown", 2);
  ASSERT_TRUE(expected.ok());
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        auto hits = retriever->Search("export notes as markdown", 2);
        if (!hits.ok() || hits->size() != expected->size() ||
            (*hits)[0].chunk != (*expected)[0].chunk) {
          ++mismatches[t];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(mismatches[t], 0);
}

TEST(RetrieverTest, DuplicateOrEmptyDocumentIdsAreRejected) {
  std::vector<Document> documents = Corpus();
  documents.push_back(documents[0]);
  auto retriever = Retriever::Build(documents, {});
  EXPECT_EQ(retriever.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(retriever.status().message(), HasSubstr("reset-password"));
  documents = {Document{"", "t", "text"}};
  EXPECT_FALSE(Retriever::Build(documents, {}).ok());
}

TEST(RetrieverTest, AssembledContextCitesEachChunkOnceWithinBudget) {
  auto retriever = Build();
  auto hits = retriever->Search("reset password settings", 4);
  ASSERT_TRUE(hits.ok());
  std::vector<Hit> doubled = *hits;
  doubled.insert(doubled.end(), hits->begin(), hits->end());
  Context context = AssembleContext(doubled, 1000);
  ASSERT_EQ(context.citations.size(), hits->size());
  EXPECT_EQ(context.citations[0].marker, "[1]");
  EXPECT_EQ(context.citations[1].marker, "[2]");
  EXPECT_TRUE(absl::StartsWith(context.block,
                               "[1] Reset your password (reset-password)\n"));
  EXPECT_THAT(context.block, HasSubstr("Settings > Security"));

  Context small = AssembleContext(*hits, 30);
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
