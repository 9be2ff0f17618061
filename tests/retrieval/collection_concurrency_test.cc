// Run under TSan (make test-tsan): searches, snapshots and index growth
// while documents are written and deleted.

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <set>
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
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("arbiter-concurrency-", getpid());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string StorePath() const {
    return GetParam() ? (dir_ / "store.db").string() : ":memory:";
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

// Snapshots copied while documents are written and deleted: each image must
// hold exactly what its recorded position covers, so that reopening from any
// of them and replaying the later changes gives the store's chunks.
TEST_P(CollectionConcurrencyTest, SnapshotsDuringWritesMatchTheirPosition) {
  auto store = DocumentStore::Open(StorePath());
  ASSERT_TRUE(store.ok()) << store.status();
  CollectionOptions options;
  options.embedding_dim = 64;
  options.snapshot_path = (dir_ / "kb.index").string();
  options.background_maintenance = false;
  auto collection = Collection::Open(**store, "kb", options);
  ASSERT_TRUE(collection.ok()) << collection.status();
  auto doc = [](int i) {
    return Document{absl::StrCat("doc-", i), "Note",
                    absl::StrCat("Note ", i, " about sync and passwords.")};
  };
  std::atomic<bool> writing{true};
  std::atomic<int> failures{0};
  std::thread writer([&] {
    for (int i = 0; i < 120; ++i) {
      if (!(*collection)->Upsert(doc(i)).ok()) ++failures;
      if (i % 3 == 2 &&
          !(*collection)->Delete(absl::StrCat("doc-", i - 1)).ok()) {
        ++failures;
      }
    }
    writing = false;
  });
  int copies = 0;
  std::thread snapshotter([&] {
    while (writing) {
      if (!(*collection)->SaveSnapshot().ok()) {
        ++failures;
        continue;
      }
      // Keep one taken mid-write: the last one would follow every write.
      std::filesystem::copy_file(
          options.snapshot_path, dir_ / "mid.index",
          std::filesystem::copy_options::overwrite_existing);
      ++copies;
    }
  });
  writer.join();
  snapshotter.join();
  EXPECT_EQ(failures.load(), 0);
  ASSERT_GT(copies, 0);
  collection->reset();

  options.snapshot_path = (dir_ / "mid.index").string();
  auto reopened = Collection::Open(**store, "kb", options);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  const IndexStats stats = (*reopened)->Stats();
  EXPECT_TRUE(absl::StrContains(stats.opened_from, "loaded index snapshot"))
      << stats.opened_from;
  auto chunks = (*store)->ChunkCount("kb");
  ASSERT_TRUE(chunks.ok());
  EXPECT_EQ(stats.vectors, *chunks) << "the image and its position disagree";
  // Every live document, and no deleted one, is in the vector index.
  auto hits = (*reopened)->Search("note about sync", 200, SearchMode::kVector);
  ASSERT_TRUE(hits.ok()) << hits.status();
  std::set<std::string> found;
  for (const SearchHit& hit : *hits) found.insert(hit.doc_id);
  for (int i = 0; i < 120; ++i) {
    const bool deleted = i % 3 == 1;
    EXPECT_EQ(found.contains(absl::StrCat("doc-", i)), !deleted) << i;
  }
}

// Writers fill a flat index past 3/4 of its room while searches go on: the
// grower thread copies it into more room meanwhile and swaps it in; no
// search fails, and every live document, and no deleted one, is found.
TEST_P(CollectionConcurrencyTest, IndexGrowsAheadWhileSearchesAndWritesGoOn) {
  auto store = DocumentStore::Open(StorePath());
  ASSERT_TRUE(store.ok()) << store.status();
  CollectionOptions options;
  options.chunking = {50, 10};
  // 8 KiB a vector: the room reaches 4 MiB, where growing ahead starts, at
  // 512 rows.
  options.embedding_dim = 2048;
  options.index.kind = IndexKind::kFlat;
  options.background_maintenance = false;
  std::atomic<int> grown_logs{0};
  options.log = [&](absl::string_view line) {
    if (absl::StrContains(line, "room ahead of need")) ++grown_logs;
  };
  auto collection = Collection::Open(**store, "kb", options);
  ASSERT_TRUE(collection.ok()) << collection.status();
  constexpr int kDocs = 700;
  std::atomic<bool> writing{true};
  std::atomic<int> failures{0};
  std::thread writer([&] {
    for (int i = 0; i < kDocs; ++i) {
      if (!(*collection)
               ->Upsert({absl::StrCat("doc-", i), "Note",
                         absl::StrCat("Note ", i, " about sync and keys.")})
               .ok()) {
        ++failures;
      }
      if (i % 10 == 9 &&
          !(*collection)->Delete(absl::StrCat("doc-", i - 5)).ok()) {
        ++failures;
      }
    }
    writing = false;
  });
  std::thread reader([&] {
    while (writing) {
      auto hits =
          (*collection)->Search("note about keys", 5, SearchMode::kVector);
      if (!hits.ok()) ++failures;
    }
  });
  writer.join();
  reader.join();
  EXPECT_EQ(failures.load(), 0);
  // The grower may still be swapping: wait for it.
  for (int i = 0; i < 600 && (*collection)->Stats().growths == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const IndexStats stats = (*collection)->Stats();
  EXPECT_GE(stats.growths, 1);
  EXPECT_GE(grown_logs.load(), 1);
  EXPECT_EQ(stats.vectors, kDocs - kDocs / 10);
  auto hits =
      (*collection)->Search("note about sync", kDocs, SearchMode::kVector);
  ASSERT_TRUE(hits.ok()) << hits.status();
  std::set<std::string> found;
  for (const SearchHit& hit : *hits) found.insert(hit.doc_id);
  for (int i = 0; i < kDocs; ++i) {
    const bool deleted = i % 10 == 4;
    EXPECT_EQ(found.contains(absl::StrCat("doc-", i)), !deleted) << i;
  }
}

}  // namespace
}  // namespace arbiter::retrieval
