// The collection's derived index: snapshots, replay, rebuilds, index kinds
// and remote embedders.

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "retrieval/collection.h"

namespace arbiter::retrieval {
namespace {

using ::testing::HasSubstr;

class CollectionIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat(
               "arbiter-index-",
               ::testing::UnitTest::GetInstance()->current_test_info()->name(),
               "-", ::getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto store = DocumentStore::Open((dir_ / "store.db").string());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  CollectionOptions Options() {
    CollectionOptions options;
    options.embedding_dim = 64;
    options.snapshot_path = (dir_ / "kb.index").string();
    options.background_maintenance = false;
    options.log = [this](absl::string_view line) {
      log_.push_back(std::string(line));
    };
    return options;
  }

  std::unique_ptr<Collection> OpenOrDie(const CollectionOptions& options) {
    log_.clear();
    auto collection = Collection::Open(*store_, "kb", options);
    EXPECT_TRUE(collection.ok()) << collection.status();
    return *std::move(collection);
  }

  static Document Doc(int i, absl::string_view topic) {
    return {absl::StrCat("doc-", i), absl::StrCat("Note ", i),
            absl::StrCat("Note ", i, " explains ", topic,
                         " in plain words for the help centre.")};
  }

  std::string Log() const { return absl::StrJoin(log_, "\n"); }

  std::filesystem::path dir_;
  std::unique_ptr<DocumentStore> store_;
  std::vector<std::string> log_;
};

std::vector<std::string> DocIds(const Collection& collection,
                                absl::string_view query, int k) {
  auto hits = collection.Search(query, k, SearchMode::kVector);
  EXPECT_TRUE(hits.ok()) << hits.status();
  std::vector<std::string> ids;
  for (const SearchHit& hit : *hits) ids.push_back(hit.doc_id);
  return ids;
}

TEST_F(CollectionIndexTest, MissingSnapshotIsBuiltThenLoadedAtNextOpen) {
  {
    auto collection = OpenOrDie(Options());
    EXPECT_THAT(Log(), HasSubstr("no index snapshot at"));
    EXPECT_THAT(Log(), HasSubstr("rebuilding the index from the store"));
    for (int i = 0; i < 10; ++i) {
      ASSERT_TRUE(collection->Upsert(Doc(i, "invoices")).ok());
    }
  }  // Closing saves the unsaved changes.
  ASSERT_TRUE(std::filesystem::exists(dir_ / "kb.index"));
  auto collection = OpenOrDie(Options());
  EXPECT_THAT(Log(), HasSubstr("loaded index snapshot"));
  EXPECT_THAT(Log(), HasSubstr("replayed 0 removals and 0 additions"));
  const IndexStats stats = collection->Stats();
  EXPECT_EQ(stats.vectors, 10);
  EXPECT_TRUE(stats.snapshot_saved);
  EXPECT_THAT(stats.opened_from, HasSubstr("loaded index snapshot"));
  EXPECT_EQ(DocIds(*collection, "note 3 invoices", 1).front(), "doc-3");
}

TEST_F(CollectionIndexTest, OnlyChangesAfterTheSnapshotAreReplayed) {
  {
    auto collection = OpenOrDie(Options());
    for (int i = 0; i < 10; ++i) {
      ASSERT_TRUE(collection->Upsert(Doc(i, "passwords")).ok());
    }
    ASSERT_TRUE(collection->SaveSnapshot().ok());
    std::filesystem::copy_file(dir_ / "kb.index", dir_ / "saved.index");
    // After the snapshot: one new document, one replaced, one deleted...
    ASSERT_TRUE(collection->Upsert(Doc(10, "refunds")).ok());
    ASSERT_TRUE(collection->Upsert(Doc(4, "zebra crossings")).ok());
    ASSERT_TRUE(collection->Delete("doc-7").ok());
  }
  // ...then the process died without saving again: the older snapshot is
  // what the next start finds.
  std::filesystem::copy_file(dir_ / "saved.index", dir_ / "kb.index",
                             std::filesystem::copy_options::overwrite_existing);
  auto collection = OpenOrDie(Options());
  // doc-4's old chunk and doc-7's chunk removed; doc-10 and doc-4 added.
  EXPECT_THAT(Log(), HasSubstr("replayed 2 removals and 2 additions"));
  EXPECT_EQ(collection->Stats().vectors, 10);
  EXPECT_EQ(DocIds(*collection, "refunds", 1).front(), "doc-10");
  EXPECT_EQ(DocIds(*collection, "zebra crossings", 1).front(), "doc-4");
  for (const std::string& id : DocIds(*collection, "note 7 passwords", 10)) {
    EXPECT_NE(id, "doc-7") << "a deleted document came back";
  }
}

TEST_F(CollectionIndexTest, CorruptSnapshotIsRebuiltWithALogLine) {
  {
    auto collection = OpenOrDie(Options());
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE(collection->Upsert(Doc(i, "sync")).ok());
    }
  }
  const auto path = dir_ / "kb.index";
  const auto size = std::filesystem::file_size(path);
  {
    std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(size / 2));
    file.put('\x5a');
  }
  auto collection = OpenOrDie(Options());
  EXPECT_THAT(Log(), HasSubstr("is corrupt: checksum mismatch"));
  EXPECT_THAT(Log(), HasSubstr("rebuilding the index from the store"));
  EXPECT_EQ(collection->Stats().vectors, 5);
  EXPECT_EQ(DocIds(*collection, "note 2 sync", 1).front(), "doc-2");
  // The rebuilt index was saved again, and loads cleanly.
  collection.reset();
  OpenOrDie(Options());
  EXPECT_THAT(Log(), HasSubstr("loaded index snapshot"));

  // A truncated file is corrupt too.
  std::filesystem::resize_file(path, 20);
  OpenOrDie(Options());
  EXPECT_THAT(Log(), HasSubstr("is corrupt"));
}

TEST_F(CollectionIndexTest, SnapshotOfAnotherKindIsRebuiltAsConfigured) {
  {
    CollectionOptions flat = Options();
    flat.index.kind = IndexKind::kFlat;
    auto collection = OpenOrDie(flat);
    ASSERT_TRUE(collection->Upsert(Doc(1, "exports")).ok());
  }
  CollectionOptions hnsw = Options();
  hnsw.index.kind = IndexKind::kHnsw;
  auto collection = OpenOrDie(hnsw);
  EXPECT_THAT(Log(), HasSubstr("is flat, the config asks for hnsw"));
  EXPECT_EQ(collection->Stats().kind, IndexKind::kHnsw);
  EXPECT_EQ(DocIds(*collection, "exports", 1).front(), "doc-1");
}

TEST_F(CollectionIndexTest, TombstonesAreCompactedByABackgroundRebuild) {
  CollectionOptions options = Options();
  options.index.kind = IndexKind::kHnsw;
  options.background_maintenance = true;
  auto collection = OpenOrDie(options);
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(collection->Upsert(Doc(i, "calendars")).ok());
  }
  for (int i = 0; i < 200; i += 2) {
    ASSERT_TRUE(collection->Delete(absl::StrCat("doc-", i)).ok());
  }
  // Deleted rows never come back, before or after the rebuild.
  for (const std::string& id : DocIds(*collection, "calendars", 60)) {
    EXPECT_EQ(std::stoi(id.substr(4)) % 2, 1) << id;
  }
  // A rebuild starts once 64 rows, and a fifth of them, are tombstones;
  // deletes made while it runs (a slow machine, a sanitizer) may stay
  // tombstones in the new index, fewer than would start another.
  auto compacted = [&] {
    const IndexStats stats = collection->Stats();
    return stats.rebuilds >= 2 && stats.tombstones < 64;
  };
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!compacted() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const IndexStats stats = collection->Stats();
  EXPECT_GE(stats.rebuilds, 2);  // At open, and in the background.
  EXPECT_LT(stats.tombstones, 64);
  EXPECT_EQ(stats.vectors, 100);
  EXPECT_EQ(stats.kind, IndexKind::kHnsw);
  EXPECT_THAT(DocIds(*collection, "calendars", 150), ::testing::SizeIs(100));
}

// A rebuild catches up with the writes made while it ran (most of them
// while writers go on): none is lost, no deleted row comes back.
TEST_F(CollectionIndexTest, WritesDuringRebuildsAreAllInTheNewIndex) {
  CollectionOptions options = Options();
  options.index.kind = IndexKind::kHnsw;
  auto collection = OpenOrDie(options);
  for (int i = 0; i < 300; ++i) {
    ASSERT_TRUE(collection->Upsert(Doc(i, "exports")).ok());
  }
  std::atomic<bool> writing{true};
  std::thread writer([&] {
    for (int i = 300; i < 900; ++i) {
      EXPECT_TRUE(collection->Upsert(Doc(i, "exports")).ok());
      if (i % 2 == 0) {
        EXPECT_TRUE(collection->Delete(absl::StrCat("doc-", i - 300)).ok());
      }
    }
    writing = false;
  });
  int rebuilds = 0;
  while (writing || rebuilds == 0) {
    ASSERT_TRUE(collection->Rebuild().ok());
    ++rebuilds;
  }
  writer.join();
  std::set<std::string> expected;
  for (int i = 0; i < 900; ++i) {
    if (i < 600 && i % 2 == 0) continue;  // Deleted when doc-(i+300) came.
    expected.insert(absl::StrCat("doc-", i));
  }
  EXPECT_EQ(collection->Stats().vectors, static_cast<int64_t>(expected.size()));
  std::vector<std::string> found = DocIds(*collection, "exports", 1000);
  EXPECT_EQ(std::set<std::string>(found.begin(), found.end()), expected);
  EXPECT_EQ(found.size(), expected.size()) << "a document came back twice";
}

TEST_F(CollectionIndexTest, AutoMovesFromExactToHnswAsTheCollectionGrows) {
  CollectionOptions options = Options();
  options.index.auto_exact_below = 40;
  auto collection = OpenOrDie(options);
  EXPECT_EQ(collection->Stats().kind, IndexKind::kFlat);
  for (int i = 0; i < 45; ++i) {
    ASSERT_TRUE(collection->Upsert(Doc(i, "webhooks")).ok());
  }
  ASSERT_TRUE(collection->Rebuild().ok());  // What the background thread does.
  EXPECT_EQ(collection->Stats().kind, IndexKind::kHnsw);
  EXPECT_EQ(DocIds(*collection, "note 44 webhooks", 1).front(), "doc-44");
}

TEST_F(CollectionIndexTest, RemoteEmbedderVectorsAreStoredAndChecked) {
  int calls = 0;
  int dim = 64;
  CollectionOptions options = Options();
  // Stands in for an embedding server: one direction per first letter.
  options.remote_embedder = [&](absl::Span<const std::string> texts)
      -> absl::StatusOr<std::vector<std::vector<float>>> {
    ++calls;
    std::vector<std::vector<float>> vectors;
    for (const std::string& text : texts) {
      std::vector<float> vector(dim, 0.0f);
      const size_t at = text.find('\n');
      const char first = at + 1 < text.size() ? text[at + 1] : text[0];
      vector[static_cast<unsigned char>(first) % dim] = 1.0f;
      vectors.push_back(std::move(vector));
    }
    return vectors;
  };
  {
    auto collection = OpenOrDie(options);
    ASSERT_TRUE(collection->Upsert({"a", "A", "apples are red"}).ok());
    ASSERT_TRUE(collection->Upsert({"b", "B", "bananas are yellow"}).ok());
    auto hits = collection->Search("\nbanana", 1, SearchMode::kVector);
    ASSERT_TRUE(hits.ok()) << hits.status();
    EXPECT_EQ(hits->front().doc_id, "b");
  }
  // Reopening rebuilds nothing from the server: vectors are in the store.
  std::filesystem::remove(dir_ / "kb.index");
  calls = 0;
  auto collection = OpenOrDie(options);
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(collection->Stats().vectors, 2);
  // A server answering with another dimension is refused, naming both.
  dim = 32;
  auto wrong = collection->Upsert({"c", "C", "cherries"});
  ASSERT_FALSE(wrong.ok());
  EXPECT_THAT(wrong.status().message(), HasSubstr("32-dim"));
  EXPECT_THAT(wrong.status().message(), HasSubstr("expects 64"));
}

}  // namespace
}  // namespace arbiter::retrieval
