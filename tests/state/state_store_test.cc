#include "state/state_store.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace arbiter::state {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

std::string TempDir(absl::string_view name) {
  const std::string dir = std::filesystem::temp_directory_path() /
                          absl::StrCat("arbiter-state-", name, "-", getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

v1::StrategyKey Key(absl::string_view experiment, absl::string_view arm,
                    absl::string_view strategy) {
  v1::StrategyKey key;
  key.set_experiment(std::string(experiment));
  key.set_arm(std::string(arm));
  key.set_strategy(std::string(strategy));
  return key;
}

v1::RouteTaskState RouteTask(absl::string_view route, absl::string_view task,
                             int64_t requests) {
  v1::RouteTaskState row;
  row.set_route(std::string(route));
  row.set_task(std::string(task));
  row.set_requests(requests);
  return row;
}

v1::ContextEntry Entry(const v1::StrategyKey& key, absl::string_view route,
                       double score) {
  v1::ContextEntry entry;
  *entry.mutable_key() = key;
  entry.set_route(std::string(route));
  entry.set_score(score);
  entry.add_embedding(static_cast<float>(score));
  entry.add_embedding(0.5f);
  return entry;
}

v1::JudgedRequest Judged(absl::string_view mac, absl::Time issued) {
  v1::JudgedRequest judged;
  judged.set_mac(std::string(mac));
  judged.set_issued_unix_micros(absl::ToUnixMicros(issued));
  return judged;
}

// One of every kind of row.
StateBatch FullBatch(absl::Time now) {
  StateBatch batch;
  v1::RouteTaskState stats = RouteTask("rag", "faq", 120);
  stats.set_errors(3);
  stats.set_input_tokens(4500);
  stats.set_output_tokens(900);
  stats.set_cost_usd(0.0125);
  stats.set_latency_seconds_sum(31.5);
  stats.set_feedback_count(80);
  stats.set_feedback_score_sum(71);
  stats.mutable_recent()->set_completions(90.25);
  stats.mutable_recent()->set_score(0.875);
  stats.mutable_recent()->set_as_of_unix_micros(absl::ToUnixMicros(now));
  stats.mutable_latency()->set_relative_accuracy(0.01);
  stats.mutable_latency()->set_count(120);
  for (int bucket = -3; bucket < 40; bucket += 7) {
    (*stats.mutable_latency()->mutable_buckets())[bucket] = bucket + 10;
  }
  batch.route_tasks.push_back(stats);
  batch.route_tasks.push_back(RouteTask("small", "faq", 7));
  v1::RouteIdentity identity;
  identity.set_route("rag");
  identity.set_backend("local");
  identity.set_model("llama-3-8b");
  batch.routes.push_back(identity);
  v1::BudgetState budget;
  *budget.mutable_key() = Key("", "", "policy");
  budget.set_cost_weight(12.5);
  batch.budgets.push_back(budget);
  v1::ExperimentArmState arm;
  arm.set_experiment("prompt-vs-rag");
  arm.set_arm("rag");
  arm.set_requests(75);
  arm.set_feedback(60);
  arm.set_score(51);
  arm.mutable_latency()->set_count(75);
  batch.experiment_arms.push_back(arm);
  v1::EconomicsState economics;
  economics.set_start_unix_micros(absl::ToUnixMicros(now - absl::Hours(5)));
  v1::RouteAccrualState* accrual = economics.add_routes();
  accrual->set_route("tuned");
  accrual->set_hosting_usd(4.5);
  accrual->set_training_usd(0.25);
  accrual->set_as_of_unix_micros(absl::ToUnixMicros(now));
  v1::EconomicsCellState* cell = economics.add_cells();
  cell->set_route("rag");
  cell->set_task("faq");
  cell->set_requests(120);
  cell->set_judged(80);
  cell->set_correct(71);
  v1::EconomicsMinute* minute = cell->add_window();
  minute->set_minute(absl::ToUnixSeconds(now) / 60);
  minute->set_requests(4);
  batch.economics = economics;
  batch.context_entries.push_back(Entry(Key("", "", "policy"), "rag", 1));
  batch.context_entries.push_back(
      Entry(Key("prompt-vs-rag", "rag", "task_policies.faq"), "small", 0));
  batch.context_capacity.push_back({Key("", "", "policy"), 100});
  batch.judged.push_back(Judged("mac-one", now - absl::Minutes(2)));
  batch.judged.push_back(Judged(std::string("mac\0two", 7), now));
  return batch;
}

// What Load gives for `batch` written to an empty store.
v1::GatewayState StateOf(const StateBatch& batch) {
  v1::GatewayState state;
  state.set_format_version(1);
  for (const auto& row : batch.route_tasks) *state.add_route_tasks() = row;
  for (const auto& row : batch.routes) *state.add_routes() = row;
  for (const auto& row : batch.budgets) *state.add_budgets() = row;
  for (const auto& row : batch.experiment_arms) {
    *state.add_experiment_arms() = row;
  }
  if (batch.economics) *state.mutable_economics() = *batch.economics;
  for (const auto& row : batch.context_entries) {
    *state.add_context_entries() = row;
  }
  for (const auto& row : batch.judged) *state.add_judged() = row;
  return state;
}

// Compares all but written_unix_micros, which is the time of the commit.
void ExpectStateEquals(v1::GatewayState actual, v1::GatewayState expected) {
  actual.clear_written_unix_micros();
  expected.clear_written_unix_micros();
  std::string differences;
  MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&differences);
  EXPECT_TRUE(differencer.Compare(actual, expected)) << differences;
}

// A plain SQLite connection to the file, as another program would have.
class RawDb final {
 public:
  explicit RawDb(const std::string& path) {
    sqlite3_open(path.c_str(), &db_);
    sqlite3_busy_timeout(db_, 5000);
  }
  ~RawDb() { sqlite3_close(db_); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;

  int64_t Int(const std::string& sql) {
    sqlite3_stmt* statement = nullptr;
    sqlite3_prepare_v2(db_, sql.c_str(), -1, &statement, nullptr);
    int64_t value = -1;
    if (sqlite3_step(statement) == SQLITE_ROW) {
      value = sqlite3_column_int64(statement, 0);
    }
    sqlite3_finalize(statement);
    return value;
  }
  void Exec(const std::string& sql) {
    ASSERT_EQ(sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db_);
  }

 private:
  sqlite3* db_ = nullptr;
};

TEST(StateStoreTest, LoadsEveryKindOfRowAsWrittenAfterReopening) {
  const std::string path = TempDir("round-trip") + "/state.db";
  const absl::Time now = absl::Now();
  const StateBatch batch = FullBatch(now);
  std::string key;
  {
    auto store = StateStore::Open({.path = path});
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Write(batch).ok());
    auto secret = (*store)->GetOrCreateSecret(kRequestIdKeySecret, 32);
    ASSERT_TRUE(secret.ok()) << secret.status();
    key = *secret;
    EXPECT_THAT(key, SizeIs(32));
    EXPECT_EQ(*(*store)->GetOrCreateSecret(kRequestIdKeySecret, 32), key);
    EXPECT_TRUE((*store)->Close().ok());
  }
  auto store = StateStore::Open({.path = path});
  ASSERT_TRUE(store.ok()) << store.status();
  auto loaded = (*store)->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  v1::GatewayState expected = StateOf(batch);
  expected.set_request_id_key(key);
  ExpectStateEquals(*loaded, expected);
  EXPECT_GE(loaded->written_unix_micros(), absl::ToUnixMicros(now));
  EXPECT_EQ(*(*store)->GetOrCreateSecret(kRequestIdKeySecret, 32), key);
  EXPECT_NE(*(*store)->GetOrCreateSecret("other", 32), key);
}

TEST(StateStoreTest, LeavesOutJudgedIdsIssuedBeforeTheGivenTime) {
  const std::string path = TempDir("judged-since") + "/state.db";
  const absl::Time now = absl::Now();
  auto store = StateStore::Open({.path = path});
  ASSERT_TRUE(store.ok()) << store.status();
  StateBatch batch;
  batch.judged = {Judged("old", now - absl::Hours(3)), Judged("new", now)};
  ASSERT_TRUE((*store)->Write(batch).ok());
  auto loaded = (*store)->Load(now - absl::Hours(1));
  ASSERT_TRUE(loaded.ok());
  ASSERT_THAT(loaded->judged(), SizeIs(1));
  EXPECT_EQ(loaded->judged(0).mac(), "new");
}

TEST(StateStoreTest, SkipsRowsEqualToTheStoredOnes) {
  const std::string path = TempDir("unchanged") + "/state.db";
  auto store = StateStore::Open({.path = path});
  ASSERT_TRUE(store.ok()) << store.status();
  StateBatch aggregates = FullBatch(absl::Now());
  aggregates.context_entries.clear();
  aggregates.judged.clear();
  ASSERT_TRUE((*store)->Write(aggregates).ok());
  const WriterStats first = (*store)->writer_stats();
  EXPECT_EQ(first.batches, 1);
  EXPECT_EQ(first.rows_written,
            6);  // 2 route/task, route, budget, arm, ledger.

  // Another connection sees whether anything was committed since.
  RawDb watcher(path);
  const int64_t version = watcher.Int("PRAGMA data_version");
  ASSERT_TRUE((*store)->Write(aggregates).ok());
  EXPECT_EQ(watcher.Int("PRAGMA data_version"), version);
  EXPECT_EQ((*store)->writer_stats().batches, 1);
  EXPECT_EQ((*store)->writer_stats().rows_written, 6);

  aggregates.route_tasks[1].set_requests(8);
  ASSERT_TRUE((*store)->Write(aggregates).ok());
  EXPECT_NE(watcher.Int("PRAGMA data_version"), version);
  EXPECT_EQ((*store)->writer_stats().batches, 2);
  EXPECT_EQ((*store)->writer_stats().rows_written, 7);
}

TEST(StateStoreTest, SkipsRowsEqualToTheLoadedOnesAfterAReopen) {
  const std::string path = TempDir("unchanged-reopen") + "/state.db";
  StateBatch aggregates = FullBatch(absl::Now());
  aggregates.context_entries.clear();
  aggregates.judged.clear();
  {
    auto store = StateStore::Open({.path = path});
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Write(aggregates).ok());
  }
  auto store = StateStore::Open({.path = path});
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Load().ok());
  ASSERT_TRUE((*store)->Write(aggregates).ok());
  EXPECT_EQ((*store)->writer_stats().rows_written, 0);
}

TEST(StateStoreTest, KeepsEachStrategysNewestContextEntriesUpToItsCapacity) {
  const std::string path = TempDir("capacity") + "/state.db";
  auto store = StateStore::Open({.path = path});
  ASSERT_TRUE(store.ok()) << store.status();
  const v1::StrategyKey main = Key("", "", "policy");
  const v1::StrategyKey arm = Key("exp", "b", "policy");
  StateBatch first;
  for (int i = 0; i < 5; ++i)
    first.context_entries.push_back(Entry(main, "a", i));
  first.context_entries.push_back(Entry(arm, "a", 100));
  first.context_capacity = {{main, 3}, {arm, 10}};
  ASSERT_TRUE((*store)->Write(first).ok());
  // A later batch without capacities prunes to the ones given before.
  StateBatch second;
  second.context_entries = {Entry(main, "b", 5), Entry(main, "b", 6)};
  ASSERT_TRUE((*store)->Write(second).ok());

  auto loaded = (*store)->Load();
  ASSERT_TRUE(loaded.ok());
  std::vector<double> main_scores;
  std::vector<double> arm_scores;
  for (const v1::ContextEntry& entry : loaded->context_entries()) {
    (entry.key().experiment().empty() ? main_scores : arm_scores)
        .push_back(entry.score());
  }
  EXPECT_THAT(main_scores, ElementsAre(4, 5, 6));
  EXPECT_THAT(arm_scores, ElementsAre(100));

  // A smaller capacity alone prunes too.
  StateBatch shrink;
  shrink.context_capacity = {{main, 1}};
  ASSERT_TRUE((*store)->Write(shrink).ok());
  loaded = (*store)->Load();
  ASSERT_TRUE(loaded.ok());
  ASSERT_THAT(loaded->context_entries(), SizeIs(2));
  EXPECT_EQ(loaded->context_entries(0).score(), 100);
  EXPECT_EQ(loaded->context_entries(1).score(), 6);
}

TEST(StateStoreTest, DeletesJudgedIdsOlderThanTheRetention) {
  const std::string path = TempDir("retention") + "/state.db";
  const absl::Time now = absl::Now();
  auto store =
      StateStore::Open({.path = path, .judged_retention = absl::Hours(24)});
  ASSERT_TRUE(store.ok()) << store.status();
  StateBatch batch;
  batch.judged = {Judged("expired", now - absl::Hours(25)),
                  Judged("kept", now - absl::Hours(23)),
                  Judged("kept", now - absl::Hours(23))};  // A repeat.
  ASSERT_TRUE((*store)->Write(batch).ok());
  auto loaded = (*store)->Load();  // Every stored id, however old.
  ASSERT_TRUE(loaded.ok());
  ASSERT_THAT(loaded->judged(), SizeIs(1));
  EXPECT_EQ(loaded->judged(0).mac(), "kept");
  RawDb raw(path);
  EXPECT_EQ(raw.Int("SELECT count(*) FROM judged"), 1);
}

TEST(StateStoreTest, RefusesASecondOpenOfTheSameFileNamingIt) {
  const std::string path = TempDir("second-open") + "/state.db";
  auto first = StateStore::Open({.path = path});
  ASSERT_TRUE(first.ok()) << first.status();

  auto second = StateStore::Open({.path = path});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(second.status().message(),
            absl::StrCat("state file ", path,
                         " is in use by another arbiter process (stop it "
                         "first)"));

  // Another process is refused the same way.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto other = StateStore::Open({.path = path});
    _exit(!other.ok() &&
                  other.status().code() ==
                      absl::StatusCode::kFailedPrecondition &&
                  absl::StrContains(other.status().message(), path)
              ? 0
              : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  // The refused Open left the first one working, and Close frees the file.
  StateBatch batch;
  batch.route_tasks = {RouteTask("a", "t", 1)};
  EXPECT_TRUE((*first)->Write(batch).ok());
  EXPECT_TRUE((*first)->Close().ok());
  EXPECT_TRUE((*first)->Close().ok());  // Idempotent.
  EXPECT_EQ((*first)->Write(batch).code(),
            absl::StatusCode::kFailedPrecondition);
  auto again = StateStore::Open({.path = path});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_THAT((*again)->Load()->route_tasks(), SizeIs(1));
}

TEST(StateStoreTest, RefusesFilesThatAreNotStateStoresNamingThem) {
  const std::string dir = TempDir("not-a-store");
  const std::string other_db = dir + "/other.db";
  {
    RawDb raw(other_db);
    raw.Exec("CREATE TABLE documents(id TEXT)");
  }
  const std::string garbage = dir + "/garbage.db";
  std::ofstream(garbage) << std::string(8192, 'x');
  const std::string newer = dir + "/newer.db";
  {
    ASSERT_TRUE(StateStore::Open({.path = newer}).ok());
    RawDb raw(newer);
    raw.Exec("UPDATE meta SET value = 2 WHERE key = 'format_version'");
  }
  struct Case {
    std::string path;
    std::string why;
  };
  for (const Case& c :
       {Case{other_db, "no meta table; its tables: documents"},
        Case{garbage, "not a SQLite database"},
        Case{newer, "has format 2, newer than this arbiter's 1"},
        Case{dir, "is a folder"}}) {
    auto store = StateStore::Open({.path = c.path});
    ASSERT_FALSE(store.ok()) << c.path;
    EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument)
        << store.status();
    EXPECT_THAT(store.status().message(), HasSubstr(c.path));
    EXPECT_THAT(store.status().message(), HasSubstr(c.why));
    auto read = StateStore::ReadFile(c.path);
    EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument)
        << read.status();
    EXPECT_THAT(read.status().message(), HasSubstr(c.why));
  }
  // Nothing was written into them.
  EXPECT_EQ(RawDb(other_db).Int("SELECT count(*) FROM sqlite_schema"), 1);
  std::ifstream in(garbage);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}),
            std::string(8192, 'x'));
}

TEST(StateStoreTest, CreatesTheFileAndItsFoldersPrivate) {
  const std::string dir = TempDir("modes");
  const std::string path = dir + "/data/state/state.db";
  // A permissive umask, so the modes are the store's own.
  const mode_t umask_before = umask(0);
  auto store = StateStore::Open({.path = path});
  umask(umask_before);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->GetOrCreateSecret(kRequestIdKeySecret, 32).ok());
  auto mode = [](const std::string& file) {
    struct stat st;
    EXPECT_EQ(stat(file.c_str(), &st), 0) << file;
    return st.st_mode & 0777;
  };
  EXPECT_EQ(mode(dir + "/data"), 0700u);
  EXPECT_EQ(mode(dir + "/data/state"), 0700u);
  EXPECT_EQ(mode(path), 0600u);
  EXPECT_EQ(mode(path + "-wal"), 0600u);
  EXPECT_EQ(mode(path + "-shm"), 0600u);
}

// A VFS over the default one whose writes fail with SQLITE_FULL while
// `full` is set: a disk that fills up, then has room again.
class FullDisk final {
 public:
  FullDisk() {
    real_ = sqlite3_vfs_find(nullptr);
    vfs_ = *real_;
    vfs_.zName = "full-disk";
    vfs_.szOsFile = static_cast<int>(sizeof(File)) + real_->szOsFile;
    vfs_.pAppData = this;
    vfs_.xOpen = &FullDisk::Open;
    methods_ = {};
    methods_.iVersion = 3;
    methods_.xClose = [](sqlite3_file* f) {
      return Real(f)->pMethods->xClose(Real(f));
    };
    methods_.xRead = [](sqlite3_file* f, void* data, int n, sqlite3_int64 at) {
      return Real(f)->pMethods->xRead(Real(f), data, n, at);
    };
    methods_.xWrite = [](sqlite3_file* f, const void* data, int n,
                         sqlite3_int64 at) {
      if (Of(f)->disk->full) return SQLITE_FULL;
      return Real(f)->pMethods->xWrite(Real(f), data, n, at);
    };
    methods_.xTruncate = [](sqlite3_file* f, sqlite3_int64 size) {
      return Real(f)->pMethods->xTruncate(Real(f), size);
    };
    methods_.xSync = [](sqlite3_file* f, int flags) {
      return Real(f)->pMethods->xSync(Real(f), flags);
    };
    methods_.xFileSize = [](sqlite3_file* f, sqlite3_int64* size) {
      return Real(f)->pMethods->xFileSize(Real(f), size);
    };
    methods_.xLock = [](sqlite3_file* f, int lock) {
      return Real(f)->pMethods->xLock(Real(f), lock);
    };
    methods_.xUnlock = [](sqlite3_file* f, int lock) {
      return Real(f)->pMethods->xUnlock(Real(f), lock);
    };
    methods_.xCheckReservedLock = [](sqlite3_file* f, int* out) {
      return Real(f)->pMethods->xCheckReservedLock(Real(f), out);
    };
    methods_.xFileControl = [](sqlite3_file* f, int op, void* arg) {
      return Real(f)->pMethods->xFileControl(Real(f), op, arg);
    };
    methods_.xSectorSize = [](sqlite3_file* f) {
      return Real(f)->pMethods->xSectorSize(Real(f));
    };
    methods_.xDeviceCharacteristics = [](sqlite3_file* f) {
      return Real(f)->pMethods->xDeviceCharacteristics(Real(f));
    };
    methods_.xShmMap = [](sqlite3_file* f, int region, int size, int extend,
                          void volatile** out) {
      return Real(f)->pMethods->xShmMap(Real(f), region, size, extend, out);
    };
    methods_.xShmLock = [](sqlite3_file* f, int offset, int n, int flags) {
      return Real(f)->pMethods->xShmLock(Real(f), offset, n, flags);
    };
    methods_.xShmBarrier = [](sqlite3_file* f) {
      Real(f)->pMethods->xShmBarrier(Real(f));
    };
    methods_.xShmUnmap = [](sqlite3_file* f, int remove) {
      return Real(f)->pMethods->xShmUnmap(Real(f), remove);
    };
    methods_.xFetch = [](sqlite3_file* f, sqlite3_int64 at, int n, void** out) {
      return Real(f)->pMethods->xFetch(Real(f), at, n, out);
    };
    methods_.xUnfetch = [](sqlite3_file* f, sqlite3_int64 at, void* p) {
      return Real(f)->pMethods->xUnfetch(Real(f), at, p);
    };
    sqlite3_vfs_register(&vfs_, /*makeDflt=*/1);
  }
  ~FullDisk() {
    sqlite3_vfs_unregister(&vfs_);
    sqlite3_vfs_register(real_, /*makeDflt=*/1);
  }
  FullDisk(const FullDisk&) = delete;
  FullDisk& operator=(const FullDisk&) = delete;

  std::atomic<bool> full{false};

 private:
  struct File {
    sqlite3_file base;
    FullDisk* disk;
    sqlite3_file* real;
  };
  static File* Of(sqlite3_file* f) { return reinterpret_cast<File*>(f); }
  static sqlite3_file* Real(sqlite3_file* f) { return Of(f)->real; }

  static int Open(sqlite3_vfs* vfs, const char* name, sqlite3_file* f,
                  int flags, int* out_flags) {
    FullDisk* disk = static_cast<FullDisk*>(vfs->pAppData);
    File* file = Of(f);
    file->disk = disk;
    file->real = reinterpret_cast<sqlite3_file*>(file + 1);
    const int rc =
        disk->real_->xOpen(disk->real_, name, file->real, flags, out_flags);
    file->base.pMethods =
        file->real->pMethods != nullptr ? &disk->methods_ : nullptr;
    return rc;
  }

  sqlite3_vfs* real_;
  sqlite3_vfs vfs_;
  sqlite3_io_methods methods_;
};

TEST(StateStoreTest, KeepsTheEntriesOfAFailedCommitForTheNextOne) {
  const std::string path = TempDir("disk-full") + "/state.db";
  FullDisk disk;
  std::vector<std::string> logged;
  auto store =
      StateStore::Open({.path = path, .log = [&logged](absl::string_view line) {
                          logged.emplace_back(line);
                        }});
  ASSERT_TRUE(store.ok()) << store.status();
  const absl::Time now = absl::Now();
  const v1::StrategyKey key = Key("", "", "policy");

  disk.full = true;
  StateBatch first;
  first.route_tasks = {RouteTask("a", "t", 1)};
  first.context_entries = {Entry(key, "a", 1)};
  first.judged = {Judged("one", now)};
  absl::Status failed = (*store)->Write(first);
  EXPECT_EQ(failed.code(), absl::StatusCode::kResourceExhausted) << failed;
  EXPECT_THAT(failed.message(), HasSubstr(path));
  StateBatch second;
  second.route_tasks = {RouteTask("b", "t", 2)};
  second.context_entries = {Entry(key, "b", 2)};
  second.judged = {Judged("two", now)};
  EXPECT_FALSE((*store)->Write(second).ok());
  EXPECT_EQ((*store)->writer_stats().failures, 2);
  EXPECT_EQ((*store)->writer_stats().batches, 0);
  ASSERT_THAT(logged, SizeIs(1));  // Once per kind of error.
  EXPECT_THAT(logged[0], HasSubstr("database or disk is full"));

  disk.full = false;
  StateBatch third;
  third.judged = {Judged("three", now)};
  ASSERT_TRUE((*store)->Write(third).ok());
  EXPECT_EQ((*store)->writer_stats().batches, 1);
  EXPECT_THAT(logged, SizeIs(2));  // "written again".

  auto loaded = (*store)->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_THAT(loaded->route_tasks(), SizeIs(2));
  EXPECT_EQ(loaded->route_tasks(0).route(), "a");
  EXPECT_EQ(loaded->route_tasks(1).route(), "b");
  ASSERT_THAT(loaded->context_entries(), SizeIs(2));
  EXPECT_EQ(loaded->context_entries(0).route(), "a");
  EXPECT_EQ(loaded->context_entries(1).route(), "b");
  EXPECT_THAT(loaded->judged(), SizeIs(3));
}

TEST(StateStoreTest, WriterCommitsWhatItCollectsEveryInterval) {
  const std::string path = TempDir("writer") + "/state.db";
  auto store = StateStore::Open(
      {.path = path, .flush_interval = absl::Milliseconds(10)});
  ASSERT_TRUE(store.ok()) << store.status();
  std::atomic<int> collected{0};
  (*store)->StartWriter([&] {
    const int n = ++collected;
    StateBatch batch;
    batch.route_tasks = {RouteTask("a", "t", n)};
    batch.judged = {Judged(absl::StrCat("id", n), absl::Now())};
    return batch;
  });
  // Committed while the store is open, without a Close.
  int64_t stored = 0;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (stored < 3 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
    auto state = StateStore::ReadFile(path);
    if (state.ok() && state->route_tasks_size() == 1) {
      stored = state->route_tasks(0).requests();
      EXPECT_THAT(state->judged(), SizeIs(stored));
    }
  }
  EXPECT_GE(stored, 3);
  EXPECT_GE((*store)->writer_stats().batches, 3);
  ASSERT_TRUE((*store)->Close().ok());
  auto state = StateStore::ReadFile(path);
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->route_tasks(0).requests(), collected.load());
  EXPECT_THAT(state->judged(), SizeIs(collected.load()));
}

TEST(StateStoreTest, CloseCollectsAndCommitsOnceMore) {
  const std::string path = TempDir("close") + "/state.db";
  // No interval passes before Close: only its own collect writes.
  auto store =
      StateStore::Open({.path = path, .flush_interval = absl::Hours(1)});
  ASSERT_TRUE(store.ok()) << store.status();
  std::atomic<int> collected{0};
  (*store)->StartWriter([&] {
    ++collected;
    StateBatch batch;
    batch.route_tasks = {RouteTask("a", "t", 7)};
    return batch;
  });
  ASSERT_TRUE((*store)->Close().ok());
  EXPECT_EQ(collected.load(), 1);
  auto state = StateStore::ReadFile(path);
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_THAT(state->route_tasks(), SizeIs(1));
  EXPECT_EQ(state->route_tasks(0).requests(), 7);
  EXPECT_TRUE((*store)->Close().ok());
  EXPECT_EQ(collected.load(), 1);
}

TEST(StateStoreTest, WriterOutlivesACollectThatThrows) {
  const std::string path = TempDir("throwing") + "/state.db";
  std::vector<std::string> logged;
  std::mutex logged_mu;
  auto store = StateStore::Open({.path = path,
                                 .flush_interval = absl::Milliseconds(10),
                                 .log = [&](absl::string_view line) {
                                   std::lock_guard<std::mutex> lock(logged_mu);
                                   logged.emplace_back(line);
                                 }});
  ASSERT_TRUE(store.ok()) << store.status();
  std::atomic<int> calls{0};
  absl::Notification recovered;
  (*store)->StartWriter([&]() -> StateBatch {
    const int n = ++calls;
    if (n == 1) throw std::runtime_error("boom");
    if (n == 2) recovered.Notify();
    StateBatch batch;
    batch.route_tasks = {RouteTask("a", "t", n)};
    return batch;
  });
  ASSERT_TRUE(recovered.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_TRUE((*store)->Close().ok());
  EXPECT_GE((*store)->writer_stats().failures, 1);
  std::lock_guard<std::mutex> lock(logged_mu);
  ASSERT_FALSE(logged.empty());
  EXPECT_THAT(logged[0], HasSubstr("boom"));
}

TEST(StateStoreTest, KilledMidRunLeavesAConsistentPrefixOfItsBatches) {
  const std::string path = TempDir("sigkill") + "/state.db";
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Each batch bumps a counter and adds one judged id: after any crash
    // the two agree, or a batch was half-written.
    auto store = StateStore::Open(
        {.path = path, .flush_interval = absl::Milliseconds(10)});
    if (!store.ok()) _exit(3);
    int64_t n = 0;
    (*store)->StartWriter([&n] {
      ++n;
      StateBatch batch;
      batch.route_tasks = {RouteTask("a", "t", n)};
      batch.judged = {Judged(absl::StrCat("id", n), absl::Now())};
      batch.context_entries = {Entry(Key("", "", "policy"), "a", n)};
      return batch;
    });
    for (;;) pause();
  }
  // Kill it once it has committed a few dozen batches.
  int64_t seen = 0;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (seen < 30 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
    auto state = StateStore::ReadFile(path);
    if (state.ok() && state->route_tasks_size() == 1) {
      seen = state->route_tasks(0).requests();
    }
  }
  kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the child exited with " << status;
  ASSERT_GE(seen, 30);

  auto store = StateStore::Open({.path = path});
  ASSERT_TRUE(store.ok()) << store.status();
  auto state = (*store)->Load();
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_THAT(state->route_tasks(), SizeIs(1));
  const int64_t batches = state->route_tasks(0).requests();
  EXPECT_GE(batches, seen);
  ASSERT_THAT(state->judged(), SizeIs(batches));
  ASSERT_THAT(state->context_entries(), SizeIs(batches));
  std::set<std::string> macs;
  for (const v1::JudgedRequest& judged : state->judged()) {
    macs.insert(judged.mac());
  }
  for (int64_t i = 1; i <= batches; ++i) {
    EXPECT_TRUE(macs.count(absl::StrCat("id", i))) << i;
    EXPECT_EQ(state->context_entries(i - 1).score(), i);
  }
}

TEST(StateStoreTest, ReplaceSwapsTheWholeContent) {
  const std::string path = TempDir("replace") + "/state.db";
  auto store = StateStore::Open({.path = path});
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Write(FullBatch(absl::Now())).ok());
  ASSERT_TRUE((*store)->GetOrCreateSecret(kRequestIdKeySecret, 32).ok());

  v1::GatewayState imported;
  imported.set_format_version(1);
  imported.set_written_unix_micros(1234);
  *imported.add_route_tasks() = RouteTask("x", "y", 5);
  *imported.add_context_entries() = Entry(Key("", "", "policy"), "x", 1);
  *imported.add_judged() = Judged("j", absl::Now());
  imported.set_request_id_key(std::string(32, 'k'));
  ASSERT_TRUE((*store)->Replace(imported).ok());
  auto loaded = (*store)->Load();
  ASSERT_TRUE(loaded.ok());
  EXPECT_TRUE(MessageDifferencer::Equals(*loaded, imported))
      << loaded->DebugString();

  // The rows it replaced are written again when they come back.
  StateBatch again;
  again.route_tasks = {RouteTask("rag", "faq", 120)};
  ASSERT_TRUE((*store)->Write(again).ok());
  EXPECT_THAT((*store)->Load()->route_tasks(), SizeIs(2));
}

TEST(StateStoreTest, ReplaceRefusesAnotherFormatOrAKeyGivenTwice) {
  const std::string path = TempDir("replace-bad") + "/state.db";
  auto store = StateStore::Open({.path = path});
  ASSERT_TRUE(store.ok()) << store.status();
  v1::GatewayState state;
  absl::Status missing = (*store)->Replace(state);
  EXPECT_EQ(missing.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(missing.message(), "format_version: expected 1, got 0 (missing)");
  state.set_format_version(2);
  EXPECT_EQ((*store)->Replace(state).message(),
            "format_version: expected 1, got 2");
  state.set_format_version(1);
  *state.add_route_tasks() = RouteTask("a", "t", 1);
  *state.add_route_tasks() = RouteTask("a", "t", 2);
  absl::Status twice = (*store)->Replace(state);
  EXPECT_EQ(twice.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(twice.message(),
            "route_tasks[1]: route \"a\", task \"t\" appears more than once");
}

TEST(StateStoreTest, ResetStatisticsDeletesTheRouteAndTaskGiven) {
  const std::string path = TempDir("reset") + "/state.db";
  auto store = StateStore::Open({.path = path});
  ASSERT_TRUE(store.ok()) << store.status();
  const v1::StrategyKey key = Key("", "", "policy");
  StateBatch batch;
  batch.route_tasks = {RouteTask("rag", "faq", 1), RouteTask("rag", "chat", 2),
                       RouteTask("small", "faq", 3)};
  batch.context_entries = {Entry(key, "rag", 1), Entry(key, "small", 2),
                           Entry(key, "rag", 3)};
  v1::RouteIdentity identity;
  identity.set_route("rag");
  batch.routes = {identity};
  ASSERT_TRUE((*store)->Write(batch).ok());

  auto summary = (*store)->ResetStatistics("rag", "faq");
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(*summary,
            "1 route/task row, 2 context entries (context entries are kept "
            "per route, not per task: the task does not narrow them)");
  auto loaded = (*store)->Load();
  ASSERT_THAT(loaded->route_tasks(), SizeIs(2));
  EXPECT_EQ(loaded->route_tasks(0).task(), "chat");
  EXPECT_EQ(loaded->route_tasks(1).route(), "small");
  ASSERT_THAT(loaded->context_entries(), SizeIs(1));
  EXPECT_EQ(loaded->context_entries(0).route(), "small");
  EXPECT_THAT(loaded->routes(), SizeIs(1));  // What it was learned on stays.

  EXPECT_EQ(*(*store)->ResetStatistics("nope", ""),
            "0 route/task rows, 0 context entries; no statistics were stored "
            "for route \"nope\" (stored routes: rag, small)");
  EXPECT_EQ(*(*store)->ResetStatistics("", ""),
            "2 route/task rows, 1 context entry");
  EXPECT_THAT((*store)->Load()->route_tasks(), SizeIs(0));

  // A row equal to one reset is written again.
  ASSERT_TRUE((*store)->Write(batch).ok());
  EXPECT_THAT((*store)->Load()->route_tasks(), SizeIs(3));
}

TEST(StateStoreTest, ReadFileSeesTheLastCommitWhileTheStoreIsOpen) {
  const std::string path = TempDir("read-file") + "/state.db";
  EXPECT_EQ(StateStore::ReadFile(path).status().code(),
            absl::StatusCode::kNotFound);
  auto store = StateStore::Open({.path = path});
  ASSERT_TRUE(store.ok()) << store.status();
  StateBatch batch;
  batch.route_tasks = {RouteTask("a", "t", 1)};
  ASSERT_TRUE((*store)->Write(batch).ok());
  auto read = StateStore::ReadFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_THAT(read->route_tasks(), SizeIs(1));
  batch.route_tasks[0].set_requests(2);
  ASSERT_TRUE((*store)->Write(batch).ok());
  EXPECT_EQ(StateStore::ReadFile(path)->route_tasks(0).requests(), 2);
  // Reading took no lock and wrote nothing: the store goes on.
  batch.route_tasks[0].set_requests(3);
  EXPECT_TRUE((*store)->Write(batch).ok());
}

}  // namespace
}  // namespace arbiter::state
