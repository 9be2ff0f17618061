#include "retrieval/collection.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace arbiter::retrieval {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<DocumentStore> MemoryStore() {
  auto store = DocumentStore::Open(":memory:");
  EXPECT_TRUE(store.ok()) << store.status();
  return *std::move(store);
}

Document Doc(const std::string& id, const std::string& text) {
  return ParseDocument(id + ".md", "# " + id + "\n\n" + text);
}

TEST(CollectionTest, EveryModeFindsTheRightDocument) {
  auto store = MemoryStore();
  auto collection = Collection::Open(*store, "help", {}, 256);
  ASSERT_TRUE(collection.ok()) << collection.status();
  ASSERT_TRUE(
      (*collection)
          ->Upsert(Doc("reset-password",
                       "Open Settings > Security to reset your password."))
          .ok());
  ASSERT_TRUE(
      (*collection)
          ->Upsert(Doc("invoices",
                       "Invoices are emailed on the first of the month."))
          .ok());
  ASSERT_TRUE((*collection)
                  ->Upsert(Doc("offline",
                               "Notes stay readable offline and sync later."))
                  .ok());
  for (SearchMode mode :
       {SearchMode::kKeyword, SearchMode::kVector, SearchMode::kHybrid}) {
    auto hits = (*collection)->Search("how do I reset my password", 2, mode);
    ASSERT_TRUE(hits.ok()) << hits.status();
    ASSERT_FALSE(hits->empty());
    EXPECT_EQ((*hits)[0].doc_id, "reset-password") << static_cast<int>(mode);
    EXPECT_LE(hits->size(), 2u);
  }
}

TEST(CollectionTest, UpsertAndDeleteNeverLeaveStaleChunks) {
  auto store = MemoryStore();
  auto collection = Collection::Open(*store, "help", {}, 256);
  ASSERT_TRUE(collection.ok());
  ASSERT_TRUE((*collection)->Upsert(Doc("a", "The old zebra policy.")).ok());
  ASSERT_TRUE((*collection)->Upsert(Doc("a", "The new giraffe policy.")).ok());
  for (SearchMode mode :
       {SearchMode::kKeyword, SearchMode::kVector, SearchMode::kHybrid}) {
    auto hits = (*collection)->Search("zebra giraffe policy", 10, mode);
    ASSERT_TRUE(hits.ok());
    for (const SearchHit& hit : *hits) {
      EXPECT_THAT(hit.text, ::testing::Not(HasSubstr("zebra")));
    }
  }
  ASSERT_TRUE((*collection)->Delete("a").ok());
  for (SearchMode mode :
       {SearchMode::kKeyword, SearchMode::kVector, SearchMode::kHybrid}) {
    EXPECT_TRUE((*collection)->Search("giraffe policy", 10, mode)->empty());
  }
  EXPECT_EQ((*collection)->Delete("a").code(), absl::StatusCode::kNotFound);
}

TEST(CollectionTest, IndexIsRebuiltFromTheStoreOnOpen) {
  std::string path =
      (std::filesystem::temp_directory_path() /
       ("arbiter-collection-" + std::to_string(getpid()) + ".db"))
          .string();
  {
    auto store = DocumentStore::Open(path);
    ASSERT_TRUE(store.ok());
    auto collection = Collection::Open(**store, "help", {}, 128);
    ASSERT_TRUE(collection.ok());
    ASSERT_TRUE((*collection)
                    ->Upsert(Doc("sso", "Single sign-on works with SAML."))
                    .ok());
  }
  auto store = DocumentStore::Open(path);
  ASSERT_TRUE(store.ok());
  auto collection = Collection::Open(**store, "help", {}, 128);
  ASSERT_TRUE(collection.ok());
  auto hits =
      (*collection)->Search("saml single sign on", 1, SearchMode::kVector);
  ASSERT_TRUE(hits.ok());
  ASSERT_EQ(hits->size(), 1u);
  EXPECT_EQ((*hits)[0].doc_id, "sso");
  std::filesystem::remove(path);
  std::filesystem::remove(path + "-wal");
  std::filesystem::remove(path + "-shm");
}

TEST(CollectionTest, FilteredSearchStillReturnsKMatches) {
  auto store = MemoryStore();
  auto collection = Collection::Open(*store, "help", {}, 256);
  ASSERT_TRUE(collection.ok());
  // Forty close matches for the query in team "faq", four weaker ones in
  // team "billing": the billing ones rank below every faq one.
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE((*collection)
                    ->Upsert(Doc("faq-" + std::to_string(i),
                                 "Reset your password from the Settings page."),
                             R"({"team": "faq"})")
                    .ok());
  }
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE((*collection)
                    ->Upsert(Doc("billing-" + std::to_string(i),
                                 "Invoices list the password reset fee."),
                             R"({"team": "billing", "tier": )" +
                                 std::to_string(i) + "}")
                    .ok());
  }
  std::vector<MetadataFilter> billing = {{"team", {"\"billing\""}}};
  for (SearchMode mode :
       {SearchMode::kKeyword, SearchMode::kVector, SearchMode::kHybrid}) {
    auto hits =
        (*collection)->Search("reset password settings", 3, mode, billing);
    ASSERT_TRUE(hits.ok()) << hits.status();
    ASSERT_EQ(hits->size(), 3u) << static_cast<int>(mode);
    for (const SearchHit& hit : *hits) {
      EXPECT_THAT(hit.doc_id, ::testing::StartsWith("billing-"));
    }
  }
  // "in": several values of one key; filters combine with AND.
  std::vector<MetadataFilter> tiers = {{"team", {"\"billing\""}},
                                       {"tier", {"1", "3"}}};
  auto hits = (*collection)->Search("password", 10, SearchMode::kHybrid, tiers);
  ASSERT_TRUE(hits.ok());
  ASSERT_EQ(hits->size(), 2u);
  auto bad =
      (*collection)
          ->Search("password", 3, SearchMode::kKeyword, {{"bad key!", {"1"}}});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("filters[0].key"));
  bad = (*collection)
            ->Search("password", 3, SearchMode::kVector, {{"team", {"[1]"}}});
  EXPECT_THAT(bad.status().message(), HasSubstr("is not a JSON scalar"));
}

// The quickstart's labeled questions as an evaluation: the share of
// questions whose answer's document is among the top 4 hits.
TEST(CollectionTest, HybridIsNotWorseThanBm25OnTheQuickstart) {
  auto store = MemoryStore();
  auto collection = Collection::Open(*store, "quickstart", {200, 40}, 1024);
  ASSERT_TRUE(collection.ok());
  for (const auto& entry : std::filesystem::directory_iterator(
           ARBITER_SOURCE_DIR "/quickstart/corpus")) {
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    ASSERT_TRUE((*collection)
                    ->Upsert(ParseDocument(entry.path().filename().string(),
                                           text.str()))
                    .ok());
  }
  std::ifstream questions(ARBITER_SOURCE_DIR "/quickstart/questions.jsonl");
  std::string line;
  int total = 0;
  std::map<SearchMode, int> found;
  while (std::getline(questions, line)) {
    auto item = nlohmann::json::parse(line);
    ++total;
    for (SearchMode mode :
         {SearchMode::kKeyword, SearchMode::kVector, SearchMode::kHybrid}) {
      auto hits =
          (*collection)->Search(item["question"].get<std::string>(), 4, mode);
      ASSERT_TRUE(hits.ok());
      for (const SearchHit& hit : *hits) {
        if (hit.doc_id == item["doc"].get<std::string>()) {
          ++found[mode];
          break;
        }
      }
    }
  }
  ASSERT_GT(total, 200);
  double keyword = static_cast<double>(found[SearchMode::kKeyword]) / total;
  double vector = static_cast<double>(found[SearchMode::kVector]) / total;
  double hybrid = static_cast<double>(found[SearchMode::kHybrid]) / total;
  std::cout << "doc recall@4: keyword " << keyword << ", vector " << vector
            << ", hybrid " << hybrid << "\n";
  EXPECT_GE(hybrid, keyword);
  EXPECT_GT(keyword, 0.8);
}

}  // namespace
}  // namespace arbiter::retrieval
