#include "retrieval/store.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbiter::retrieval {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("arbiter-store-", getpid(), "-",
                        ::testing::UnitTest::GetInstance()->random_seed(), "-",
                        counter_++);
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "store.db").string();
    auto store = DocumentStore::Open(path_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    ASSERT_TRUE(store_->CreateCollection("help").ok());
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  static StoredDocument Doc(std::string id, std::vector<std::string> chunks,
                            std::string metadata = "{}") {
    StoredDocument document;
    document.id = std::move(id);
    document.title = "Title of " + document.id;
    document.source = "test";
    document.metadata_json = std::move(metadata);
    document.chunks = std::move(chunks);
    for (size_t i = 0; i < document.chunks.size(); ++i) {
      document.embeddings.push_back({1.0f * i, 2.0f});
    }
    return document;
  }

  static inline int counter_ = 0;
  std::filesystem::path dir_;
  std::string path_;
  std::unique_ptr<DocumentStore> store_;
};

TEST_F(StoreTest, UpsertStoresAndReplacesDocuments) {
  auto version = store_->Upsert(
      "help", Doc("reset", {"Open Settings to reset your password.",
                            "The link expires after 45 minutes."}));
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(*version, 1);
  EXPECT_EQ(*store_->DocumentCount("help"), 1);
  EXPECT_EQ(*store_->ChunkCount("help"), 2);
  version =
      store_->Upsert("help", Doc("reset", {"Passwords reset by email now."}));
  EXPECT_EQ(*version, 2);
  EXPECT_EQ(*store_->ChunkCount("help"), 1);
  auto hits = store_->KeywordSearch("help", "expires", 5);
  ASSERT_TRUE(hits.ok());
  EXPECT_TRUE(hits->empty()) << "a replaced chunk is still searchable";
  EXPECT_EQ(*store_->LastChange(), 2);
}

TEST_F(StoreTest, ChunksUpToAnIdAreThoseAPositionCovers) {
  ASSERT_TRUE(store_->Upsert("help", Doc("a", {"one", "two"})).ok());
  auto at = store_->Position();
  ASSERT_TRUE(at.ok());
  ASSERT_TRUE(store_->Upsert("help", Doc("b", {"three"})).ok());
  auto covered = store_->ChunkPage("help", 0, at->chunk, 100);
  ASSERT_TRUE(covered.ok()) << covered.status();
  ASSERT_EQ(covered->size(), 2u);
  EXPECT_EQ((*covered)[1].text, "two");
  auto page = store_->ChunkPage("help", (*covered)[0].id, at->chunk + 5, 1);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->size(), 1u);
  EXPECT_EQ((*page)[0].text, "two");
  EXPECT_EQ(store_->Chunks("help")->size(), 3u);
  EXPECT_EQ(store_->ChunkPage("nope", 0, 10, 1).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(StoreTest, ChunksByIdReadTextInTheGivenOrderWithoutVectors) {
  ASSERT_TRUE(store_->Upsert("help", Doc("a", {"one", "two"})).ok());
  auto all = store_->Chunks("help");
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[1].embedding, (std::vector<float>{1.0f, 2.0f}));
  auto found = store_->ChunksById({(*all)[1].id, 999, (*all)[0].id});
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->size(), 2u);
  EXPECT_EQ((*found)[0].text, "two");
  EXPECT_EQ((*found)[0].doc_id, "a");
  EXPECT_EQ((*found)[0].doc_title, "Title of a");
  EXPECT_EQ((*found)[0].position, 1);
  EXPECT_EQ((*found)[1].text, "one");
  // Search hits need no vector; reading it would cost a page chain each.
  EXPECT_TRUE((*found)[0].embedding.empty());
}

TEST_F(StoreTest, KeywordSearchRanksByBm25) {
  ASSERT_TRUE(
      store_
          ->Upsert("help", Doc("reset", {"Reset your password in Settings. "
                                         "The password link expires."}))
          .ok());
  ASSERT_TRUE(store_
                  ->Upsert("help", Doc("billing",
                                       {"Invoices arrive monthly by email."}))
                  .ok());
  ASSERT_TRUE(
      store_->Upsert("help", Doc("sync", {"Sync needs a password only once."}))
          .ok());
  auto hits = store_->KeywordSearch("help", "How do I reset my password?", 3);
  ASSERT_TRUE(hits.ok()) << hits.status();
  ASSERT_EQ(hits->size(), 2u);
  EXPECT_EQ((*hits)[0].doc_id, "reset");
  EXPECT_GT((*hits)[0].score, (*hits)[1].score);
  // FTS5 operators in user text are just words.
  auto odd = store_->KeywordSearch("help", "NEAR( password OR \"AND* )", 3);
  EXPECT_TRUE(odd.ok()) << odd.status();
}

TEST_F(StoreTest, KeywordSearchLeavesOutStopWordsUnlessOnlyTheyAreLeft) {
  ASSERT_TRUE(
      store_->Upsert("help", Doc("reset", {"Reset the password."})).ok());
  ASSERT_TRUE(
      store_->Upsert("help", Doc("chatter", {"How do I do what I do?"})).ok());
  EXPECT_THAT(store_->KeywordTerms("How do I reset my password?"),
              ::testing::UnorderedElementsAre("reset", "password"));
  auto hits = store_->KeywordSearch("help", "How do I reset my password?", 5);
  ASSERT_TRUE(hits.ok()) << hits.status();
  ASSERT_EQ(hits->size(), 1u) << "a chunk matching only stop words came back";
  EXPECT_EQ((*hits)[0].doc_id, "reset");
  // A query of nothing but stop words still searches for them.
  hits = store_->KeywordSearch("help", "how do I", 5);
  ASSERT_TRUE(hits.ok()) << hits.status();
  ASSERT_EQ(hits->size(), 1u);
  EXPECT_EQ((*hits)[0].doc_id, "chatter");
}

// Above the match budget, the commonest words are left out, rarest kept;
// without a budget every word counts.
TEST_F(StoreTest, KeywordBudgetLeavesOutTheCommonestWords) {
  store_.reset();
  for (int64_t budget : {int64_t{12}, int64_t{0}}) {
    SCOPED_TRACE(absl::StrCat("budget ", budget));
    std::filesystem::remove(path_);
    DocumentStore::Options options;
    options.keyword_match_budget = budget;
    auto store = DocumentStore::Open(path_, options);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->CreateCollection("help").ok());
    for (int i = 0; i < 10; ++i) {
      ASSERT_TRUE((*store)
                      ->Upsert("help", Doc(absl::StrCat("common-", i),
                                           {"widget widget widget setup"}))
                      .ok());
    }
    ASSERT_TRUE((*store)
                    ->Upsert("help", Doc("rare", {"invoice widget", "setup"}))
                    .ok());
    // More chunks than the budget: below it, words are not even counted.
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE((*store)
                      ->Upsert("help", Doc(absl::StrCat("filler-", i),
                                           {"unrelated filler"}))
                      .ok());
    }
    auto hits = (*store)->KeywordSearch("help", "widget invoice", 20);
    ASSERT_TRUE(hits.ok()) << hits.status();
    if (budget > 0) {
      // "widget" (11 chunks) + "invoice" (1) would be 12; "setup" too is
      // left out of the three-word query.
      EXPECT_THAT((*store)->KeywordTerms("widget invoice setup"),
                  ElementsAre("invoice", "widget"));
      // "setup" is as common as "widget": the query's order breaks the tie.
      EXPECT_THAT((*store)->KeywordTerms("setup widget invoice"),
                  ElementsAre("invoice", "setup"));
      EXPECT_EQ(hits->size(), 11u);
      hits = (*store)->KeywordSearch("help", "widget invoice setup", 20);
      ASSERT_TRUE(hits.ok());
      EXPECT_EQ(hits->size(), 11u) << "the chunk holding only \"setup\"";
    } else {
      EXPECT_EQ((*store)->KeywordTerms("widget invoice setup").size(), 3u);
      hits = (*store)->KeywordSearch("help", "widget invoice setup", 20);
      ASSERT_TRUE(hits.ok());
      EXPECT_EQ(hits->size(), 12u);
    }
    EXPECT_EQ((*hits)[0].doc_id, "rare");
  }
  DocumentStore::Options bad;
  bad.keyword_match_budget = -1;
  EXPECT_THAT(DocumentStore::Open(path_, bad).status().message(),
              HasSubstr("keyword_match_budget"));
}

// The best matches of the whole store may all belong to other collections
// or fail the filter: k matching chunks still come back.
TEST_F(StoreTest, KeywordSearchFindsKBehindOtherCollectionsAndFilters) {
  ASSERT_TRUE(store_->CreateCollection("other").ok());
  for (int i = 0; i < 60; ++i) {
    ASSERT_TRUE(store_
                    ->Upsert("other", Doc(absl::StrCat("o", i),
                                          {"password password password"}))
                    .ok());
    ASSERT_TRUE(store_
                    ->Upsert("help", Doc(absl::StrCat("h", i),
                                         {"password password once more"},
                                         R"({"team": "sync"})"))
                    .ok());
  }
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(store_
                    ->Upsert("help", Doc(absl::StrCat("billing-", i),
                                         {"a password among many other words "
                                          "about invoices and plans"},
                                         R"({"team": "billing"})"))
                    .ok());
  }
  auto hits = store_->KeywordSearch("help", "password", 5);
  ASSERT_TRUE(hits.ok()) << hits.status();
  ASSERT_EQ(hits->size(), 5u);
  for (const KeywordHit& hit : *hits) EXPECT_EQ(hit.doc_id[0], 'h');
  hits =
      store_->KeywordSearch("help", "password", 5, {{"team", {"\"billing\""}}});
  ASSERT_TRUE(hits.ok()) << hits.status();
  ASSERT_EQ(hits->size(), 3u);
  for (const KeywordHit& hit : *hits) {
    EXPECT_TRUE(absl::StartsWith(hit.doc_id, "billing-")) << hit.doc_id;
  }
}

// Reads run on their own connections beside the writer: each sees every
// write acknowledged before it started, and none fails.
TEST_F(StoreTest, ReadsRunBesideWritesAndSeeEachAcknowledgedOne) {
  std::atomic<int> acknowledged{0};
  std::atomic<bool> writing{true};
  std::atomic<int> failures{0};
  std::thread writer([&] {
    for (int i = 0; i < 100; ++i) {
      if (!store_->Upsert("help", Doc(absl::StrCat("d", i), {"shared words"}))
               .ok()) {
        ++failures;
      }
      acknowledged = i + 1;
    }
    writing = false;
  });
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      while (writing) {
        const int before = acknowledged.load();
        auto hits = store_->KeywordSearch("help", "shared", 1000);
        auto count = store_->ChunkCount("help");
        if (!hits.ok() || !count.ok() ||
            static_cast<int>(hits->size()) < before || *count < before) {
          ++failures;
        }
      }
    });
  }
  writer.join();
  for (std::thread& reader : readers) reader.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(store_->KeywordSearch("help", "shared", 1000)->size(), 100u);
}

TEST_F(StoreTest, DeleteAndDeleteWhereRemoveEverything) {
  ASSERT_TRUE(
      store_->Upsert("help", Doc("a", {"alpha text"}, R"({"team": "faq"})"))
          .ok());
  ASSERT_TRUE(
      store_->Upsert("help", Doc("b", {"beta text"}, R"({"team": "faq"})"))
          .ok());
  ASSERT_TRUE(
      store_->Upsert("help", Doc("c", {"gamma text"}, R"({"team": "billing"})"))
          .ok());
  EXPECT_TRUE(store_->Delete("help", "c").ok());
  EXPECT_EQ(store_->Delete("help", "c").code(), absl::StatusCode::kNotFound);
  auto deleted = store_->DeleteWhere("help", "team", "\"faq\"");
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(*deleted, 2);
  EXPECT_EQ(*store_->DocumentCount("help"), 0);
  EXPECT_EQ(*store_->ChunkCount("help"), 0);
  EXPECT_TRUE(store_->KeywordSearch("help", "text", 5)->empty());
}

TEST_F(StoreTest, BadInputGetsClearErrors) {
  EXPECT_EQ(store_->Upsert("nope", Doc("a", {"text"})).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(store_->Upsert("nope", Doc("a", {"text"})).status().message(),
              HasSubstr("unknown collection \"nope\""));
  EXPECT_THAT(store_->Upsert("help", Doc("a", {"  ", ""})).status().message(),
              HasSubstr("text must not be empty"));
  EXPECT_THAT(store_->Upsert("help", Doc("", {"text"})).status().message(),
              HasSubstr("id: must not be empty"));
  EXPECT_THAT(
      store_->Upsert("help", Doc("a", {"text"}, "[1]")).status().message(),
      HasSubstr("metadata must be a JSON object"));
  EXPECT_THAT(store_->DeleteWhere("help", "bad key!", "1").status().message(),
              HasSubstr("filter key"));
  EXPECT_THAT(
      store_->DeleteWhere("help", "team", "{\"x\": 1}").status().message(),
      HasSubstr("not a JSON scalar"));
  EXPECT_EQ(store_->CreateCollection("no spaces").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->KeywordSearch("help", "?!", 3).status().code(),
            absl::StatusCode::kInvalidArgument);
  StoredDocument mismatched = Doc("m", {"one", "two"});
  mismatched.embeddings.pop_back();
  EXPECT_THAT(store_->Upsert("help", mismatched).status().message(),
              HasSubstr("1 embeddings for 2 chunks"));
}

TEST_F(StoreTest, TooManyFiltersAreRefusedNamingTheLimit) {
  ASSERT_TRUE(store_->Upsert("help", Doc("a", {"reset the password"})).ok());
  std::vector<MetadataFilter> filters;
  for (int i = 0; i < 1000; ++i) {
    filters.push_back({absl::StrCat("k", i), {"1"}});
  }
  auto hits = store_->KeywordSearch("help", "password", 3, filters);
  EXPECT_EQ(hits.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(hits.status().message(),
              HasSubstr("1000 filters exceed the limit of 64"));
  auto ids = store_->ChunkIdsMatching("help", filters);
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<std::string> values(257, "1");
  EXPECT_THAT(CheckFilterLimits({{"team", values}}).message(),
              HasSubstr("filters[0].values: 257 values exceed the limit"));
  filters.resize(kMaxMetadataFilters);
  EXPECT_TRUE(CheckFilterLimits(filters).ok());
  EXPECT_TRUE(store_->KeywordSearch("help", "password", 3, filters).ok());
}

TEST_F(StoreTest, MessagesQuoteLongInputBriefly) {
  const std::string huge(100'000, 'x');
  absl::Status unknown = store_->Upsert(huge, Doc("a", {"text"})).status();
  EXPECT_EQ(unknown.code(), absl::StatusCode::kNotFound);
  EXPECT_LT(unknown.message().size(), 300u);
  absl::Status missing = store_->Delete("help", huge);
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_LT(missing.message().size(), 300u);
  EXPECT_LT(store_->DeleteWhere("help", huge, "1").status().message().size(),
            300u);
}

TEST_F(StoreTest, SurvivesReopening) {
  ASSERT_TRUE(store_->Upsert("help", Doc("a", {"durable words"})).ok());
  store_.reset();
  auto reopened = DocumentStore::Open(path_);
  ASSERT_TRUE(reopened.ok());
  EXPECT_THAT(*(*reopened)->Collections(), ElementsAre("help"));
  EXPECT_EQ(*(*reopened)->DocumentCount("help"), 1);
  EXPECT_EQ((*(*reopened)->KeywordSearch("help", "durable", 1))[0].doc_id, "a");
}

// A process killed with SIGKILL in the middle of a bulk ingest loses no
// acknowledged document and leaves no half-written one.
TEST_F(StoreTest, SigkillDuringIngestLosesNoAcknowledgedWrite) {
  store_.reset();
  int acks[2];
  ASSERT_EQ(pipe(acks), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(acks[0]);
    auto store = DocumentStore::Open(path_);
    if (!store.ok()) _exit(2);
    for (int i = 0;; ++i) {
      std::vector<std::string> chunks;
      for (int c = 0; c < 5; ++c) {
        chunks.push_back(absl::StrCat("document ", i, " chunk ", c, " words"));
      }
      if (!(*store)
               ->Upsert("help", Doc(absl::StrCat("doc-", i), chunks))
               .ok()) {
        _exit(3);
      }
      std::string ack = absl::StrCat(i, "\n");
      if (write(acks[1], ack.data(), ack.size()) < 0) _exit(4);
    }
  }
  close(acks[1]);
  // Let it acknowledge a good number of writes, then kill it mid-stream.
  std::string received;
  char buffer[256];
  int acknowledged = -1;
  while (acknowledged < 200) {
    ssize_t n = read(acks[0], buffer, sizeof(buffer));
    ASSERT_GT(n, 0) << "the writer died early";
    received.append(buffer, n);
    size_t end = received.rfind('\n');
    if (end == std::string::npos) continue;
    size_t start = received.rfind('\n', end - 1);
    start = start == std::string::npos ? 0 : start + 1;
    ASSERT_TRUE(
        absl::SimpleAtoi(received.substr(start, end - start), &acknowledged));
  }
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  close(acks[0]);
  auto store = DocumentStore::Open(path_);
  ASSERT_TRUE(store.ok()) << store.status();
  int64_t documents = *(*store)->DocumentCount("help");
  EXPECT_GT(documents, acknowledged) << "an acknowledged document was lost";
  // Every stored document is whole: five chunks each, no more, no fewer.
  EXPECT_EQ(*(*store)->ChunkCount("help"), documents * 5);
  EXPECT_EQ((*(*store)->KeywordSearch(
                 "help", absl::StrCat("document ", acknowledged), 5))
                .size(),
            5u);
}

TEST(RankFusionTest, VotesByReciprocalRank) {
  auto fused = ReciprocalRankFusion({{1, 2, 3}, {3, 1}}, 60);
  ASSERT_EQ(fused.size(), 3u);
  EXPECT_EQ(fused[0].id, 1);  // 1/61 + 1/62
  EXPECT_EQ(fused[1].id, 3);  // 1/63 + 1/61
  EXPECT_EQ(fused[2].id, 2);  // 1/62
  EXPECT_NEAR(fused[0].score, 1.0 / 61 + 1.0 / 62, 1e-12);
}

}  // namespace
}  // namespace arbiter::retrieval
