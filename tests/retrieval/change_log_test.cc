// The store's change log (removal records and the changes table) is pruned
// to what open indexes, rebuilds and snapshots still need, and a position
// pruned past is refused rather than caught up wrongly.

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "retrieval/collection.h"
#include "retrieval/store.h"

namespace arbiter::retrieval {
namespace {

using ::testing::HasSubstr;

constexpr int kLiveDocs = 48;
constexpr int kCycles = 4000;

class ChangeLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat(
               "arbiter-changelog-",
               ::testing::UnitTest::GetInstance()->current_test_info()->name(),
               "-", ::getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<DocumentStore> OpenStore(
      const std::string& path, DocumentStore::Options options = {}) {
    auto store = DocumentStore::Open(path, options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  CollectionOptions Options(const std::string& snapshot) {
    CollectionOptions options;
    options.embedding_dim = 64;
    if (!snapshot.empty()) {
      options.snapshot_path = (dir_ / snapshot).string();
    }
    options.background_maintenance = false;
    options.log = [this](absl::string_view line) {
      log_.push_back(std::string(line));
    };
    return options;
  }

  std::unique_ptr<Collection> OpenOrDie(DocumentStore& store,
                                        const std::string& name,
                                        const CollectionOptions& options) {
    log_.clear();
    auto collection = Collection::Open(store, name, options);
    EXPECT_TRUE(collection.ok()) << collection.status();
    return collection.ok() ? *std::move(collection) : nullptr;
  }

  static Document Doc(int i) {
    return {absl::StrCat("doc-", i), absl::StrCat("Note ", i),
            absl::StrCat("Note ", i, " explains sync and passwords.")};
  }

  // Upserts and deletes one document over and over, the way a client that
  // refreshes a page does; every `prune_every` cycles, what the maintenance
  // thread would do.
  static void Churn(Collection& collection, int cycles, int prune_every,
                    bool snapshot) {
    for (int i = 0; i < cycles; ++i) {
      ASSERT_TRUE(collection.Upsert(Doc(1000)).ok());
      ASSERT_TRUE(collection.Delete("doc-1000").ok());
      if (i % prune_every == prune_every - 1) {
        ASSERT_TRUE(
            (snapshot ? collection.SaveSnapshot() : collection.PruneChangeLog())
                .ok());
      }
    }
  }

  // The documents the vector index finds: exactly the live ones?
  static std::set<std::string> Found(const Collection& collection) {
    auto hits = collection.Search("note about sync and passwords", 500,
                                  SearchMode::kVector);
    EXPECT_TRUE(hits.ok()) << hits.status();
    std::set<std::string> found;
    if (hits.ok()) {
      for (const SearchHit& hit : *hits) found.insert(hit.doc_id);
    }
    return found;
  }

  static std::set<std::string> LiveIds(int from, int to) {
    std::set<std::string> ids;
    for (int i = from; i < to; ++i) ids.insert(absl::StrCat("doc-", i));
    return ids;
  }

  std::string Log() const { return absl::StrJoin(log_, "\n"); }

  std::filesystem::path dir_;
  std::vector<std::string> log_;
};

TEST_F(ChangeLogTest, ChurnLeavesTheLogBoundedAndTheSnapshotReplays) {
  auto store = OpenStore(":memory:");
  ASSERT_NE(store, nullptr);
  {
    auto collection = OpenOrDie(*store, "kb", Options("kb.index"));
    ASSERT_NE(collection, nullptr);
    for (int i = 0; i < kLiveDocs; ++i) {
      ASSERT_TRUE(collection->Upsert(Doc(i)).ok());
    }
    Churn(*collection, kCycles, 100, true);
    auto rows = store->ChangeLogSize("kb");
    ASSERT_TRUE(rows.ok()) << rows.status();
    auto chunks = store->ChunkCount("kb");
    ASSERT_TRUE(chunks.ok());
    // Unpruned: 4,000 removals and 8,048 changes. Pruned: the retained
    // window (1000) and what came since the last snapshot (100 cycles).
    const int64_t window = DocumentStore::Options().retained_changes;
    EXPECT_LE(rows->removals, *chunks + window + 100);
    EXPECT_LE(rows->changes, kLiveDocs + window + 200);
    EXPECT_LT(rows->removals, kCycles / 2);
    EXPECT_LT(rows->changes, kCycles);
    auto last = store->LastChange();
    ASSERT_TRUE(last.ok());
    EXPECT_EQ(*last, kLiveDocs + 2 * kCycles) << "the count goes on";
    // A last write the snapshot does not cover, replayed at the next open.
    ASSERT_TRUE(collection->Delete("doc-0").ok());
  }
  auto collection = OpenOrDie(*store, "kb", Options("kb.index"));
  ASSERT_NE(collection, nullptr);
  EXPECT_THAT(Log(), HasSubstr("loaded index snapshot"));
  EXPECT_EQ(collection->Stats().vectors, *store->ChunkCount("kb"));
  EXPECT_EQ(Found(*collection), LiveIds(1, kLiveDocs));
}

// The same on a store file, read through its pool of reader connections,
// and with the store itself reopened.
TEST_F(ChangeLogTest, StoreFileIsPrunedAndReopensToTheSameChunks) {
  const std::string path = (dir_ / "store.db").string();
  auto store = OpenStore(path, {.retained_changes = 50});
  ASSERT_NE(store, nullptr);
  {
    auto collection = OpenOrDie(*store, "kb", Options("kb.index"));
    ASSERT_NE(collection, nullptr);
    for (int i = 0; i < kLiveDocs; ++i) {
      ASSERT_TRUE(collection->Upsert(Doc(i)).ok());
    }
    Churn(*collection, 400, 50, true);
    auto rows = store->ChangeLogSize("kb");
    ASSERT_TRUE(rows.ok()) << rows.status();
    EXPECT_LE(rows->removals, 50 + 50);
    EXPECT_LE(rows->changes, 50 + 100);
    ASSERT_TRUE(collection->Delete("doc-0").ok());
  }
  store = OpenStore(path, {.retained_changes = 50});
  ASSERT_NE(store, nullptr);
  auto collection = OpenOrDie(*store, "kb", Options("kb.index"));
  ASSERT_NE(collection, nullptr);
  EXPECT_THAT(Log(), HasSubstr("loaded index snapshot"));
  EXPECT_EQ(collection->Stats().vectors, *store->ChunkCount("kb"));
  EXPECT_EQ(Found(*collection), LiveIds(1, kLiveDocs));
}

TEST_F(ChangeLogTest, InMemoryStoreWithoutSnapshotsIsPrunedToo) {
  auto store = OpenStore(":memory:", {.retained_changes = 50});
  ASSERT_NE(store, nullptr);
  auto collection = OpenOrDie(*store, "kb", Options(""));
  ASSERT_NE(collection, nullptr);
  for (int i = 0; i < kLiveDocs; ++i) {
    ASSERT_TRUE(collection->Upsert(Doc(i)).ok());
  }
  Churn(*collection, kCycles, 100, false);
  auto rows = store->ChangeLogSize("kb");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_LE(rows->removals, 50 + 100);
  EXPECT_LE(rows->changes, 50 + 200);
  // The live index caught up with every write throughout.
  EXPECT_EQ(collection->Stats().vectors, *store->ChunkCount("kb"));
  EXPECT_EQ(Found(*collection), LiveIds(0, kLiveDocs));
}

// A snapshot older than what the store kept (a copy put back, say) cannot
// replay the removals it missed: the collection is rebuilt from the store.
TEST_F(ChangeLogTest, SnapshotPrunedPastIsRebuiltFromTheStore) {
  const std::string path = (dir_ / "store.db").string();
  auto store = OpenStore(path, {.retained_changes = 10});
  ASSERT_NE(store, nullptr);
  {
    auto collection = OpenOrDie(*store, "kb", Options("kb.index"));
    ASSERT_NE(collection, nullptr);
    for (int i = 0; i < kLiveDocs; ++i) {
      ASSERT_TRUE(collection->Upsert(Doc(i)).ok());
    }
    ASSERT_TRUE(collection->SaveSnapshot().ok());
    std::filesystem::copy_file(dir_ / "kb.index", dir_ / "old.index");
    for (int i = 0; i < 10; ++i) {
      ASSERT_TRUE(collection->Delete(absl::StrCat("doc-", i)).ok());
    }
    Churn(*collection, 100, 20, true);
  }
  auto collection = OpenOrDie(*store, "kb", Options("old.index"));
  ASSERT_NE(collection, nullptr);
  EXPECT_THAT(Log(), HasSubstr("is too old to replay"));
  EXPECT_THAT(collection->Stats().opened_from,
              HasSubstr("rebuilt from the store"));
  EXPECT_EQ(collection->Stats().vectors, *store->ChunkCount("kb"));
  EXPECT_EQ(Found(*collection), LiveIds(10, kLiveDocs));
}

// Pruning one collection leaves another's records alone; a collection that
// is not open keeps all of its own, so its snapshot replays when it opens.
TEST_F(ChangeLogTest, ClosedCollectionKeepsWhatItsSnapshotNeeds) {
  const std::string path = (dir_ / "store.db").string();
  auto store = OpenStore(path, {.retained_changes = 10});
  ASSERT_NE(store, nullptr);
  auto a = OpenOrDie(*store, "a", Options("a.index"));
  ASSERT_NE(a, nullptr);
  {
    auto b = OpenOrDie(*store, "b", Options("b.index"));
    ASSERT_NE(b, nullptr);
    for (int i = 0; i < kLiveDocs; ++i) {
      ASSERT_TRUE(a->Upsert(Doc(i)).ok());
      ASSERT_TRUE(b->Upsert(Doc(i)).ok());
    }
  }  // b's snapshot is written as it closes.
  // Written while b is closed, straight to the store.
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(store->Delete("b", absl::StrCat("doc-", i)).ok());
  }
  StoredDocument extra;
  extra.title = "Extra";
  extra.chunks = {"An extra note about sync and passwords."};
  for (int i = 0; i < 10; ++i) {
    extra.id = absl::StrCat("extra-", i);
    ASSERT_TRUE(store->Upsert("b", extra).ok());
  }
  Churn(*a, 200, 20, true);
  EXPECT_LE(store->ChangeLogSize("a")->removals, 10 + 20);
  EXPECT_EQ(store->ChangeLogSize("b")->removals, 30);
  auto b = OpenOrDie(*store, "b", Options("b.index"));
  ASSERT_NE(b, nullptr);
  EXPECT_THAT(Log(), HasSubstr("loaded index snapshot"));
  EXPECT_THAT(Log(), HasSubstr("replayed 30 removals and 10 additions"));
  EXPECT_EQ(b->Stats().vectors, *store->ChunkCount("b"));
  std::set<std::string> live = LiveIds(30, kLiveDocs);
  for (int i = 0; i < 10; ++i) live.insert(absl::StrCat("extra-", i));
  EXPECT_EQ(Found(*b), live);
}

TEST_F(ChangeLogTest, HoldsKeepWhatTheyNeedAndAPrunedPositionIsRefused) {
  auto store = OpenStore(":memory:", {.retained_changes = 0});
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateCollection("kb").ok());
  StoredDocument note;
  note.title = "Note";
  note.chunks = {"A note about sync."};
  for (int i = 0; i < 10; ++i) {
    note.id = absl::StrCat("doc-", i);
    ASSERT_TRUE(store->Upsert("kb", note).ok());
    ASSERT_TRUE(store->Delete("kb", note.id).ok());
  }
  // Without a hold no removal goes (a snapshot on disk may need it); the
  // changes table keeps only its window.
  auto unheld = store->PruneChangeLog("kb");
  ASSERT_TRUE(unheld.ok()) << unheld.status();
  EXPECT_EQ(unheld->removals, 0);
  EXPECT_EQ(unheld->changes, 20);
  {
    DocumentStore::RemovalHold hold = store->HoldRemovals("kb");
    EXPECT_EQ(store->PruneChangeLog("kb")->removals, 0);
    hold.MoveTo(4);
    DocumentStore::RemovalHold later = store->HoldRemovals("kb");
    later.MoveTo(8);
    auto pruned = store->PruneChangeLog("kb");
    ASSERT_TRUE(pruned.ok()) << pruned.status();
    EXPECT_EQ(pruned->removals, 4);
    hold.MoveTo(2);  // Never back.
    EXPECT_EQ(store->PruneChangeLog("kb")->removals, 0);
  }
  auto at_four = store->ChangesSince("kb", {4, 0});
  ASSERT_TRUE(at_four.ok()) << at_four.status();
  EXPECT_EQ(at_four->removed_chunk_ids.size(), 6u);
  auto at_three = store->ChangesSince("kb", {3, 0});
  EXPECT_EQ(at_three.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(at_three.status().message(),
              HasSubstr("keeps removals only after 4"));
}

}  // namespace
}  // namespace arbiter::retrieval
