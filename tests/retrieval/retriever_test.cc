#include "retrieval/retriever.h"

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

}  // namespace
}  // namespace arbiter::retrieval
