// Run under TSan (make test-tsan): searches while documents are written and
// deleted.

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "retrieval/collection.h"

namespace arbiter::retrieval {
namespace {

// A private in-memory store shares its one connection; a file store reads
// on a pool of connections beside the writer's.
class CollectionConcurrencyTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (GetParam()) {
      dir_ = std::filesystem::temp_directory_path() /
             absl::StrCat("arbiter-concurrency-", getpid());
      std::filesystem::create_directories(dir_);
    }
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::string StorePath() const {
    return dir_.empty() ? ":memory:" : (dir_ / "store.db").string();
  }

  std::filesystem::path dir_;
};

INSTANTIATE_TEST_SUITE_P(Stores, CollectionConcurrencyTest, ::testing::Bool(),
                         [](const auto& info) {
                           return info.param ? "file" : "memory";
                         });

TEST_P(CollectionConcurrencyTest, SearchesWhileIngestingAndDeleting) {
  auto store = DocumentStore::Open(StorePath());
  ASSERT_TRUE(store.ok()) << store.status();
  auto collection = Collection::Open(**store, "kb", {50, 10}, 64);
  ASSERT_TRUE(collection.ok());
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE((*collection)
                    ->Upsert({absl::StrCat("keep-", i), "Keep",
                              absl::StrCat("Permanent note number ", i,
                                           " about passwords and sync.")})
                    .ok());
  }
  std::atomic<bool> writing{true};
  std::atomic<int> failures{0};
  std::thread writer([&] {
    for (int i = 0; i < 150; ++i) {
      std::string id = absl::StrCat("temp-", i);
      if (!(*collection)
               ->Upsert({id, "Temp", "Temporary passwords note."})
               .ok() ||
          !(*collection)->Delete(id).ok()) {
        ++failures;
      }
    }
    writing = false;
  });
  std::vector<std::thread> readers;
  for (SearchMode mode :
       {SearchMode::kHybrid, SearchMode::kVector, SearchMode::kKeyword}) {
    readers.emplace_back([&, mode] {
      while (writing) {
        auto hits = (*collection)->Search("passwords note", 5, mode);
        if (!hits.ok()) ++failures;
      }
    });
  }
  writer.join();
  for (auto& reader : readers) reader.join();
  EXPECT_EQ(failures.load(), 0);
  for (SearchMode mode :
       {SearchMode::kKeyword, SearchMode::kVector, SearchMode::kHybrid}) {
    auto hits = (*collection)->Search("temporary passwords note", 30, mode);
    ASSERT_TRUE(hits.ok());
    for (const SearchHit& hit : *hits) {
      EXPECT_FALSE(absl::StartsWith(hit.doc_id, "temp-"))
          << "deleted chunk found";
    }
  }
}

}  // namespace
}  // namespace arbiter::retrieval
