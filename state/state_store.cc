#include "state/state_store.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <exception>
#include <filesystem>
#include <iostream>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace arbiter::state {
namespace {

// Aggregates are serialized protos keyed by their names; context entries
// and judged ids are appended. The key columns repeat what the message
// holds, so rows can be found and deleted by name.
constexpr char kSchema[] = R"sql(
CREATE TABLE meta(
  key TEXT PRIMARY KEY,
  value INTEGER NOT NULL);
CREATE TABLE route_tasks(
  route TEXT NOT NULL,
  task TEXT NOT NULL,
  state BLOB NOT NULL,
  PRIMARY KEY(route, task)) WITHOUT ROWID;
CREATE TABLE routes(
  route TEXT PRIMARY KEY,
  state BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE budgets(
  experiment TEXT NOT NULL,
  arm TEXT NOT NULL,
  strategy TEXT NOT NULL,
  state BLOB NOT NULL,
  PRIMARY KEY(experiment, arm, strategy)) WITHOUT ROWID;
CREATE TABLE experiment_arms(
  experiment TEXT NOT NULL,
  arm TEXT NOT NULL,
  state BLOB NOT NULL,
  PRIMARY KEY(experiment, arm)) WITHOUT ROWID;
CREATE TABLE economics(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  state BLOB NOT NULL);
CREATE TABLE context_entries(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  experiment TEXT NOT NULL,
  arm TEXT NOT NULL,
  strategy TEXT NOT NULL,
  route TEXT NOT NULL,
  state BLOB NOT NULL);
CREATE INDEX context_entries_by_key
  ON context_entries(experiment, arm, strategy, seq);
CREATE TABLE judged(
  mac BLOB PRIMARY KEY,
  issued_unix_micros INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX judged_by_issue ON judged(issued_unix_micros);
CREATE TABLE secrets(
  name TEXT PRIMARY KEY,
  value BLOB NOT NULL) WITHOUT ROWID;
)sql";

constexpr char kFormatKey[] = "format_version";
constexpr char kWrittenKey[] = "written_unix_micros";

int64_t UnixMicros(absl::Time time) { return absl::ToUnixMicros(time); }

// The same message always gives the same bytes (map order included), so a
// row can be compared with what was last written.
std::string Serialize(const google::protobuf::MessageLite& message) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    message.SerializePartialToCodedStream(&coded);
  }
  return bytes;
}

// "route_tasks" + ("a", "b") -> a key no other table or names can give.
std::string RowKey(absl::string_view table,
                   std::initializer_list<absl::string_view> names) {
  std::string key(table);
  for (absl::string_view name : names) {
    absl::StrAppend(&key, "/", name.size(), ":", name);
  }
  return key;
}

std::string StrategyKeyName(const v1::StrategyKey& key) {
  return RowKey("strategy", {key.experiment(), key.arm(), key.strategy()});
}

// The most specific code for what SQLite reports.
absl::StatusCode CodeOf(int rc) {
  switch (rc & 0xff) {
    case SQLITE_FULL:
      return absl::StatusCode::kResourceExhausted;
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return absl::StatusCode::kPermissionDenied;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
      return absl::StatusCode::kUnavailable;
    case SQLITE_CORRUPT:
      return absl::StatusCode::kDataLoss;
    case SQLITE_NOTADB:
      return absl::StatusCode::kInvalidArgument;
    default:
      return absl::StatusCode::kInternal;
  }
}

// A connection, and the result code of its last failure (the "kind" of an
// error the writer logs once).
class Db final {
 public:
  explicit Db(std::string path) : path_(std::move(path)) {}
  ~Db() { Close(); }
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  absl::Status Open(int flags) {
    const int rc = sqlite3_open_v2(path_.c_str(), &db_,
                                   flags | SQLITE_OPEN_EXRESCODE, nullptr);
    if (rc != SQLITE_OK) return Error(rc, "cannot open");
    // Another connection (an export) may hold a read lock for a moment.
    sqlite3_busy_timeout(db_, 5000);
    return absl::OkStatus();
  }

  void Close() {
    if (db_ != nullptr) sqlite3_close(db_);
    db_ = nullptr;
  }

  sqlite3* get() const { return db_; }
  const std::string& path() const { return path_; }
  int last_error() const { return last_error_; }

  // "state file PATH: <what>: <sqlite's message>".
  absl::Status Error(int rc, absl::string_view what) {
    last_error_ = rc;
    const char* message =
        db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    return absl::Status(CodeOf(rc), absl::StrCat("state file ", path_, ": ",
                                                 what, ": ", message));
  }

  absl::Status Exec(const char* sql, absl::string_view what) {
    const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
    return rc == SQLITE_OK ? absl::OkStatus() : Error(rc, what);
  }

 private:
  const std::string path_;
  sqlite3* db_ = nullptr;
  int last_error_ = SQLITE_OK;
};

// One prepared statement, finalized on scope exit.
class Statement final {
 public:
  Statement(Db& db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db.get(), sql, -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  absl::Status status() {
    return rc_ == SQLITE_OK ? absl::OkStatus() : db_.Error(rc_, "prepare");
  }
  Statement& Bind(int i, absl::string_view text) {
    sqlite3_bind_text(stmt_, i, text.data(), static_cast<int>(text.size()),
                      SQLITE_TRANSIENT);
    return *this;
  }
  Statement& Bind(int i, int64_t value) {
    sqlite3_bind_int64(stmt_, i, value);
    return *this;
  }
  // A zero-length blob, never NULL, for empty bytes.
  Statement& BindBlob(int i, absl::string_view bytes) {
    if (bytes.empty()) {
      sqlite3_bind_zeroblob(stmt_, i, 0);
    } else {
      sqlite3_bind_blob(stmt_, i, bytes.data(), static_cast<int>(bytes.size()),
                        SQLITE_TRANSIENT);
    }
    return *this;
  }
  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  // True with a row, false when done; an error sets `status`.
  bool Next(absl::Status* status) {
    if (rc_ != SQLITE_OK) {
      if (status->ok()) *status = db_.Error(rc_, "read");
      return false;
    }
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE && status->ok()) *status = db_.Error(rc, "read");
    return false;
  }
  // Runs it; the rows it changed.
  absl::StatusOr<int64_t> Run(absl::string_view what) {
    if (rc_ != SQLITE_OK) return db_.Error(rc_, what);
    const int rc = sqlite3_step(stmt_);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return db_.Error(rc, what);
    const int64_t changed = sqlite3_changes64(db_.get());
    Reset();
    return changed;
  }
  int64_t Int(int column) { return sqlite3_column_int64(stmt_, column); }
  std::string Text(int column) {
    const unsigned char* text = sqlite3_column_text(stmt_, column);
    return text != nullptr ? std::string(reinterpret_cast<const char*>(text),
                                         sqlite3_column_bytes(stmt_, column))
                           : std::string();
  }
  std::string Blob(int column) {
    const void* blob = sqlite3_column_blob(stmt_, column);
    const int size = sqlite3_column_bytes(stmt_, column);
    return blob != nullptr && size > 0
               ? std::string(static_cast<const char*>(blob), size)
               : std::string();
  }

 private:
  Db& db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

// Rolls back unless committed.
class Transaction final {
 public:
  Transaction(Db& db, const char* begin) : db_(db) {
    status_ = db.Exec(begin, "begin a transaction");
  }
  ~Transaction() {
    if (status_.ok() && !done_) {
      sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
    }
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  const absl::Status& status() const { return status_; }
  absl::Status Commit() {
    absl::Status status = db_.Exec("COMMIT", "commit");
    done_ = status.ok();
    return status;
  }

 private:
  Db& db_;
  absl::Status status_;
  bool done_ = false;
};

// Whether the file holds tables of its own, and whether it is a state store
// this code reads. INVALID_ARGUMENT naming the path and what is wrong.
absl::StatusOr<bool> CheckFormat(Db& db) {
  const std::string& path = db.path();
  std::set<std::string> names;
  absl::Status status;
  {
    Statement tables(db,
                     "SELECT name FROM sqlite_schema WHERE type = 'table' AND "
                     "name NOT LIKE 'sqlite\\_%' ESCAPE '\\'");
    status = tables.status();
    while (status.ok() && tables.Next(&status)) names.insert(tables.Text(0));
  }
  if (!status.ok()) {
    if ((db.last_error() & 0xff) == SQLITE_NOTADB) {
      return absl::InvalidArgumentError(
          absl::StrCat("state file ", path,
                       " is not an arbiter state file (not a SQLite "
                       "database)"));
    }
    return status;
  }
  if (names.empty()) return false;
  if (names.count("meta") == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "state file ", path,
        " is a SQLite database but not an arbiter state file (no meta "
        "table; its tables: ",
        absl::StrJoin(names, ", "), ")"));
  }
  Statement version(db, "SELECT value FROM meta WHERE key = ?1");
  version.Bind(1, kFormatKey);
  if (!version.Next(&status)) {
    return absl::InvalidArgumentError(
        absl::StrCat("state file ", path,
                     " is not an arbiter state file (its meta table has no "
                     "format_version)"));
  }
  const int64_t format = version.Int(0);
  if (format > kStateFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        "state file ", path, " has format ", format,
        ", newer than this arbiter's ", kStateFormatVersion,
        " (a newer arbiter wrote it: run that one, or export the state with "
        "it)"));
  }
  if (format < kStateFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        "state file ", path, " has format ", format,
        ", which no arbiter writes (expected ", kStateFormatVersion, ")"));
  }
  return true;
}

// Each row's `state` column parsed into add(); with `written`, its bytes by
// key_of(the row). DATA_LOSS for a row that does not parse.
template <typename Add, typename KeyOf>
absl::Status ReadRows(Db& db, const char* sql, absl::string_view table, Add add,
                      KeyOf key_of,
                      absl::flat_hash_map<std::string, std::string>* written) {
  Statement rows(db, sql);
  absl::Status status;
  while (rows.Next(&status)) {
    std::string bytes = rows.Blob(0);
    auto* row = add();
    if (!row->ParseFromString(bytes)) {
      return absl::DataLossError(absl::StrCat(
          "state file ", db.path(), ": a row of ", table, " does not parse"));
    }
    if (written != nullptr) (*written)[key_of(*row)] = std::move(bytes);
  }
  return status;
}

// Everything stored, in one read transaction. `written`, when given, gets
// each aggregate row's bytes by RowKey.
absl::StatusOr<v1::GatewayState> ReadState(
    Db& db, absl::Time judged_since,
    absl::flat_hash_map<std::string, std::string>* written) {
  Transaction read(db, "BEGIN");
  if (!read.status().ok()) return read.status();
  v1::GatewayState state;
  state.set_format_version(kStateFormatVersion);
  absl::Status status;
  {
    Statement meta(db, "SELECT value FROM meta WHERE key = ?1");
    meta.Bind(1, kWrittenKey);
    if (meta.Next(&status)) state.set_written_unix_micros(meta.Int(0));
  }
  for (
      absl::Status s : {
          ReadRows(
              db, "SELECT state FROM route_tasks ORDER BY route, task",
              "route_tasks", [&] { return state.add_route_tasks(); },
              [](const v1::RouteTaskState& row) {
                return RowKey("route_tasks", {row.route(), row.task()});
              },
              written),
          ReadRows(
              db, "SELECT state FROM routes ORDER BY route", "routes",
              [&] { return state.add_routes(); },
              [](const v1::RouteIdentity& row) {
                return RowKey("routes", {row.route()});
              },
              written),
          ReadRows(
              db,
              "SELECT state FROM budgets ORDER BY experiment, arm, strategy",
              "budgets", [&] { return state.add_budgets(); },
              [](const v1::BudgetState& row) {
                return RowKey("budgets", {StrategyKeyName(row.key())});
              },
              written),
          ReadRows(
              db, "SELECT state FROM experiment_arms ORDER BY experiment, arm",
              "experiment_arms", [&] { return state.add_experiment_arms(); },
              [](const v1::ExperimentArmState& row) {
                return RowKey("experiment_arms", {row.experiment(), row.arm()});
              },
              written),
          ReadRows(
              db, "SELECT state FROM economics WHERE id = 1", "economics",
              [&] { return state.mutable_economics(); },
              [](const v1::EconomicsState&) { return RowKey("economics", {}); },
              written),
          // Entries are appended, never compared: no bytes kept.
          ReadRows(
              db, "SELECT state FROM context_entries ORDER BY seq",
              "context_entries", [&] { return state.add_context_entries(); },
              [](const v1::ContextEntry&) { return std::string(); }, nullptr),
      }) {
    if (!s.ok()) return s;
  }
  {
    Statement rows(db,
                   "SELECT mac, issued_unix_micros FROM judged WHERE "
                   "issued_unix_micros >= ?1 ORDER BY issued_unix_micros, mac");
    rows.Bind(1, judged_since == absl::InfinitePast()
                     ? std::numeric_limits<int64_t>::min()
                     : UnixMicros(judged_since));
    while (rows.Next(&status)) {
      v1::JudgedRequest* judged = state.add_judged();
      judged->set_mac(rows.Blob(0));
      judged->set_issued_unix_micros(rows.Int(1));
    }
  }
  {
    Statement key(db, "SELECT value FROM secrets WHERE name = ?1");
    key.Bind(1, kRequestIdKeySecret);
    if (key.Next(&status)) state.set_request_id_key(key.Blob(0));
  }
  if (!status.ok()) return status;
  return state;
}

// Folders made by the store: 0700, they hold the key.
absl::Status MakeFolders(const std::filesystem::path& folder) {
  if (folder.empty()) return absl::OkStatus();
  std::error_code error;
  if (std::filesystem::is_directory(folder, error)) return absl::OkStatus();
  if (absl::Status s = MakeFolders(folder.parent_path()); !s.ok()) return s;
  if (mkdir(folder.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create the folder of the state file, ",
                     folder.string(), ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// The files this process has open as stores, by device and inode. A second
// Open of one is refused before it opens a descriptor: closing that
// descriptor would drop SQLite's POSIX locks of the first (POSIX locks
// belong to the process, not to a descriptor).
class OpenFiles final {
 public:
  static OpenFiles& Get() {
    static OpenFiles* files = new OpenFiles();
    return *files;
  }
  std::mutex& mu() { return mu_; }
  bool Contains(dev_t device, ino_t inode) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ForgetParentsFiles();
    return files_.count({device, inode}) > 0;
  }
  void Add(dev_t device, ino_t inode) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ForgetParentsFiles();
    files_.insert({device, inode});
  }
  void Remove(dev_t device, ino_t inode) {
    std::lock_guard<std::mutex> lock(mu_);
    files_.erase({device, inode});
  }

 private:
  // A forked child has none of its parent's stores open.
  void ForgetParentsFiles() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (pid_ == getpid()) return;
    files_.clear();
    pid_ = getpid();
  }

  std::mutex mu_;
  std::set<std::pair<dev_t, ino_t>> files_ ABSL_GUARDED_BY(mu_);
  pid_t pid_ ABSL_GUARDED_BY(mu_) = getpid();
};

absl::Status InUse(const std::string& path) {
  return absl::FailedPreconditionError(
      absl::StrCat("state file ", path,
                   " is in use by another arbiter process (stop it first)"));
}

// Aggregate rows to write, by RowKey, the latest of each.
struct AggregateRow {
  enum Table { kRouteTask, kRoute, kBudget, kExperimentArm, kEconomics };
  Table table;
  std::vector<std::string> key;  // The key columns, in table order.
  std::string bytes;
};

}  // namespace

class StateStore::Impl {
 public:
  Impl(StateStoreOptions options, int lock_fd, dev_t device, ino_t inode)
      : options_(std::move(options)),
        lock_fd_(lock_fd),
        device_(device),
        inode_(inode),
        db_(options_.path) {}

  ~Impl() {
    // Close() has run; the descriptor goes after SQLite's own.
    ReleaseFile();
  }

  absl::Status Init() {
    std::lock_guard<std::mutex> lock(mu_);
    if (absl::Status s =
            db_.Open(SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX);
        !s.ok()) {
      return s;
    }
    auto has_tables = CheckFormat(db_);
    if (!has_tables.ok()) return has_tables.status();
    if (!*has_tables) {
      Transaction create(db_, "BEGIN IMMEDIATE");
      if (!create.status().ok()) return create.status();
      if (absl::Status s = db_.Exec(kSchema, "create the tables"); !s.ok()) {
        return s;
      }
      Statement meta(db_, "INSERT INTO meta(key, value) VALUES (?1, ?2)");
      meta.Bind(1, kFormatKey).Bind(2, int64_t{kStateFormatVersion});
      if (auto s = meta.Run("create the tables"); !s.ok()) return s.status();
      if (absl::Status s = create.Commit(); !s.ok()) return s;
    }
    // WAL: a commit appends to the log and readers (an export) go on
    // reading the last commit. synchronous=NORMAL syncs the log at
    // checkpoints, not at every commit: a process crash loses nothing
    // committed (the log is in the OS's cache), a power loss may lose the
    // last commits but never corrupts the file.
    if (absl::Status s = db_.Exec("PRAGMA journal_mode=WAL", "set WAL mode");
        !s.ok()) {
      return s;
    }
    if (absl::Status s =
            db_.Exec("PRAGMA synchronous=NORMAL", "set synchronous=NORMAL");
        !s.ok()) {
      return s;
    }
    // SQLite gives -wal and -shm the file's mode; made sure here, as they
    // hold the same rows (and the key) as the file.
    struct stat file;
    if (fstat(lock_fd_, &file) == 0) {
      for (const char* suffix : {"-wal", "-shm"}) {
        const std::string side = options_.path + suffix;
        struct stat st;
        if (stat(side.c_str(), &st) == 0 &&
            (st.st_mode & 0777 & ~(file.st_mode & 0777)) != 0) {
          chmod(side.c_str(), file.st_mode & 0777);
        }
      }
    }
    return DeleteExpiredJudged().status();
  }

  const std::string& path() const { return options_.path; }

  absl::StatusOr<v1::GatewayState> Load(absl::Time judged_since) {
    std::lock_guard<std::mutex> lock(mu_);
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    absl::flat_hash_map<std::string, std::string> written;
    auto state = ReadState(db_, judged_since, &written);
    if (state.ok()) written_ = std::move(written);
    return state;
  }

  absl::StatusOr<std::string> GetOrCreateSecret(absl::string_view name,
                                                size_t bytes) {
    if (name.empty() || bytes == 0) {
      return absl::InvalidArgumentError(
          "a secret needs a name and at least one byte");
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    Transaction transaction(db_, "BEGIN IMMEDIATE");
    if (!transaction.status().ok()) return transaction.status();
    {
      Statement select(db_, "SELECT value FROM secrets WHERE name = ?1");
      select.Bind(1, name);
      absl::Status status;
      if (select.Next(&status)) return select.Blob(0);
      if (!status.ok()) return status;
    }
    std::string secret(bytes, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(secret.data()),
                   static_cast<int>(bytes)) != 1) {
      return absl::InternalError("OpenSSL could not make random bytes");
    }
    Statement insert(db_, "INSERT INTO secrets(name, value) VALUES (?1, ?2)");
    insert.Bind(1, name).BindBlob(2, secret);
    if (auto s = insert.Run("store a secret"); !s.ok()) return s.status();
    if (absl::Status s = transaction.Commit(); !s.ok()) return s;
    return secret;
  }

  void StartWriter(absl::AnyInvocable<StateBatch()> collect) {
    std::lock_guard<std::mutex> lock(writer_mu_);
    if (writer_.joinable() || stopping_) return;
    collect_ = std::move(collect);
    writer_ = std::thread([this] { WriterLoop(); });
  }

  absl::Status Write(const StateBatch& batch) {
    std::lock_guard<std::mutex> lock(mu_);
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    return Commit(batch);
  }

  absl::Status Close() {
    std::lock_guard<std::mutex> close_lock(close_mu_);
    if (close_status_.has_value()) return *close_status_;
    {
      std::lock_guard<std::mutex> lock(writer_mu_);
      stopping_ = true;
    }
    wake_.notify_all();
    absl::Status status;
    if (writer_.joinable()) {
      writer_.join();
      status = final_status_;
    } else {
      // Entries of a failed Write get one more try.
      std::lock_guard<std::mutex> lock(mu_);
      if (db_.get() != nullptr) status = Commit(StateBatch());
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      db_.Close();
    }
    ReleaseFile();
    close_status_ = status;
    return status;
  }

  absl::Status Replace(const v1::GatewayState& state) {
    if (state.format_version() != kStateFormatVersion) {
      return absl::InvalidArgumentError(
          absl::StrCat("format_version: expected ", kStateFormatVersion,
                       ", got ", state.format_version(),
                       state.format_version() == 0 ? " (missing)" : ""));
    }
    if (absl::Status s = CheckUniqueKeys(state); !s.ok()) return s;
    std::lock_guard<std::mutex> lock(mu_);
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    Transaction transaction(db_, "BEGIN IMMEDIATE");
    if (!transaction.status().ok()) return transaction.status();
    for (const char* sql :
         {"DELETE FROM route_tasks", "DELETE FROM routes",
          "DELETE FROM budgets", "DELETE FROM experiment_arms",
          "DELETE FROM economics", "DELETE FROM context_entries",
          "DELETE FROM judged"}) {
      if (absl::Status s = db_.Exec(sql, "replace the state"); !s.ok()) {
        return s;
      }
    }
    StateBatch batch;
    batch.route_tasks.assign(state.route_tasks().begin(),
                             state.route_tasks().end());
    batch.routes.assign(state.routes().begin(), state.routes().end());
    batch.budgets.assign(state.budgets().begin(), state.budgets().end());
    batch.experiment_arms.assign(state.experiment_arms().begin(),
                                 state.experiment_arms().end());
    if (state.has_economics()) batch.economics = state.economics();
    batch.context_entries.assign(state.context_entries().begin(),
                                 state.context_entries().end());
    batch.judged.assign(state.judged().begin(), state.judged().end());
    std::map<std::string, AggregateRow> rows;
    AddAggregates(batch, rows);
    int64_t changed = 0;
    if (absl::Status s = WriteRows(batch, rows, /*prune=*/{}, changed);
        !s.ok()) {
      return s;
    }
    {
      Statement key(db_, state.request_id_key().empty()
                             ? "DELETE FROM secrets WHERE name = ?1"
                             : "INSERT OR REPLACE INTO secrets(name, value) "
                               "VALUES (?1, ?2)");
      key.Bind(1, kRequestIdKeySecret);
      if (!state.request_id_key().empty()) {
        key.BindBlob(2, state.request_id_key());
      }
      if (auto s = key.Run("replace the state"); !s.ok()) return s.status();
    }
    if (absl::Status s = SetWritten(state.written_unix_micros()); !s.ok()) {
      return s;
    }
    if (absl::Status s = transaction.Commit(); !s.ok()) return s;
    written_.clear();
    for (auto& [key, row] : rows) written_[key] = std::move(row.bytes);
    pending_ = Pending();
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> ResetStatistics(absl::string_view route,
                                              absl::string_view task) {
    std::lock_guard<std::mutex> lock(mu_);
    if (absl::Status s = CheckOpen(); !s.ok()) return s;
    Transaction transaction(db_, "BEGIN IMMEDIATE");
    if (!transaction.status().ok()) return transaction.status();
    Statement rows(db_,
                   "DELETE FROM route_tasks WHERE (?1 = '' OR route = ?1) "
                   "AND (?2 = '' OR task = ?2)");
    rows.Bind(1, route).Bind(2, task);
    auto route_tasks = rows.Run("reset statistics");
    if (!route_tasks.ok()) return route_tasks.status();
    Statement entries(db_,
                      "DELETE FROM context_entries WHERE ?1 = '' OR route = "
                      "?1");
    entries.Bind(1, route);
    auto context = entries.Run("reset statistics");
    if (!context.ok()) return context.status();
    std::vector<std::string> stored_routes;
    if (*route_tasks == 0 && !route.empty()) {
      Statement names(db_, "SELECT DISTINCT route FROM route_tasks ORDER BY 1");
      absl::Status status;
      while (names.Next(&status)) stored_routes.push_back(names.Text(0));
    }
    if (absl::Status s = transaction.Commit(); !s.ok()) return s;
    // What is stored changed under the cache: rewrite those rows next time.
    for (auto it = written_.begin(); it != written_.end();) {
      auto here = it++;
      if (here->first.rfind("route_tasks/", 0) == 0) written_.erase(here);
    }
    std::string summary = absl::StrCat(
        *route_tasks, " route/task ", *route_tasks == 1 ? "row" : "rows", ", ",
        *context, " context ", *context == 1 ? "entry" : "entries");
    if (!task.empty()) {
      absl::StrAppend(&summary,
                      " (context entries are kept per route, not per task: "
                      "the task does not narrow them)");
    }
    if (*route_tasks == 0 && !route.empty()) {
      absl::StrAppend(
          &summary, "; no statistics were stored for route \"", route, "\"",
          task.empty() ? "" : absl::StrCat(" and task \"", task, "\""),
          stored_routes.empty()
              ? std::string(" (none are stored)")
              : absl::StrCat(" (stored routes: ",
                             absl::StrJoin(stored_routes, ", "), ")"));
    }
    return summary;
  }

  WriterStats writer_stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  // Content of batches that failed to commit, for the next one.
  struct Pending {
    std::map<std::string, AggregateRow> rows;
    std::vector<v1::ContextEntry> context;
    std::vector<v1::JudgedRequest> judged;
    std::set<std::string> prune;  // Strategy keys whose entries to prune.
  };

  absl::Status CheckOpen() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (closed_) {
      return absl::FailedPreconditionError(
          absl::StrCat("state file ", options_.path, " is closed"));
    }
    return absl::OkStatus();
  }

  void ReleaseFile() {
    if (lock_fd_ < 0) return;
    close(lock_fd_);  // Releases the flock.
    lock_fd_ = -1;
    OpenFiles::Get().Remove(device_, inode_);
  }

  void Log(absl::string_view line) const {
    if (options_.log) {
      options_.log(line);
    } else {
      std::cerr << "state: " << line << std::endl;
    }
  }

  static void AddAggregates(const StateBatch& batch,
                            std::map<std::string, AggregateRow>& rows) {
    for (const v1::RouteTaskState& row : batch.route_tasks) {
      rows[RowKey("route_tasks", {row.route(), row.task()})] = {
          AggregateRow::kRouteTask, {row.route(), row.task()}, Serialize(row)};
    }
    for (const v1::RouteIdentity& row : batch.routes) {
      rows[RowKey("routes", {row.route()})] = {
          AggregateRow::kRoute, {row.route()}, Serialize(row)};
    }
    for (const v1::BudgetState& row : batch.budgets) {
      const v1::StrategyKey& key = row.key();
      rows[RowKey("budgets", {StrategyKeyName(key)})] = {
          AggregateRow::kBudget,
          {key.experiment(), key.arm(), key.strategy()},
          Serialize(row)};
    }
    for (const v1::ExperimentArmState& row : batch.experiment_arms) {
      rows[RowKey("experiment_arms", {row.experiment(), row.arm()})] = {
          AggregateRow::kExperimentArm,
          {row.experiment(), row.arm()},
          Serialize(row)};
    }
    if (batch.economics.has_value()) {
      rows[RowKey("economics", {})] = {
          AggregateRow::kEconomics, {}, Serialize(*batch.economics)};
    }
  }

  // Import refuses a key given twice rather than keeping one silently.
  static absl::Status CheckUniqueKeys(const v1::GatewayState& state) {
    std::set<std::string> seen;
    auto check = [&](absl::string_view field, int index, const std::string& key,
                     const std::string& name) -> absl::Status {
      if (seen.insert(key).second) return absl::OkStatus();
      return absl::InvalidArgumentError(absl::StrCat(
          field, "[", index, "]: ", name, " appears more than once"));
    };
    for (int i = 0; i < state.route_tasks_size(); ++i) {
      const auto& row = state.route_tasks(i);
      if (auto s = check("route_tasks", i,
                         RowKey("route_tasks", {row.route(), row.task()}),
                         absl::StrCat("route \"", row.route(), "\", task \"",
                                      row.task(), "\""));
          !s.ok()) {
        return s;
      }
    }
    for (int i = 0; i < state.routes_size(); ++i) {
      const auto& row = state.routes(i);
      if (auto s = check("routes", i, RowKey("routes", {row.route()}),
                         absl::StrCat("route \"", row.route(), "\""));
          !s.ok()) {
        return s;
      }
    }
    for (int i = 0; i < state.budgets_size(); ++i) {
      const auto& key = state.budgets(i).key();
      if (auto s =
              check("budgets", i, RowKey("budgets", {StrategyKeyName(key)}),
                    absl::StrCat("key {experiment \"", key.experiment(),
                                 "\", arm \"", key.arm(), "\", strategy \"",
                                 key.strategy(), "\"}"));
          !s.ok()) {
        return s;
      }
    }
    for (int i = 0; i < state.experiment_arms_size(); ++i) {
      const auto& row = state.experiment_arms(i);
      if (auto s =
              check("experiment_arms", i,
                    RowKey("experiment_arms", {row.experiment(), row.arm()}),
                    absl::StrCat("experiment \"", row.experiment(),
                                 "\", arm \"", row.arm(), "\""));
          !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }

  absl::Status SetWritten(int64_t unix_micros)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Statement meta(db_,
                   "INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)");
    meta.Bind(1, kWrittenKey).Bind(2, unix_micros);
    return meta.Run("record the time written").status();
  }

  absl::StatusOr<int64_t> DeleteExpiredJudged()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Statement expire(db_, "DELETE FROM judged WHERE issued_unix_micros < ?1");
    expire.Bind(1, UnixMicros(absl::Now() - options_.judged_retention));
    return expire.Run("delete expired judged ids");
  }

  // Writes `rows` and the batch's entries inside the caller's transaction;
  // then prunes the context of the strategies in `prune`.
  absl::Status WriteRows(const StateBatch& batch,
                         const std::map<std::string, AggregateRow>& rows,
                         const std::set<std::string>& prune, int64_t& changed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    constexpr const char* kUpsert[] = {
        "INSERT OR REPLACE INTO route_tasks(route, task, state) "
        "VALUES (?1, ?2, ?3)",
        "INSERT OR REPLACE INTO routes(route, state) VALUES (?1, ?2)",
        "INSERT OR REPLACE INTO budgets(experiment, arm, strategy, state) "
        "VALUES (?1, ?2, ?3, ?4)",
        "INSERT OR REPLACE INTO experiment_arms(experiment, arm, state) "
        "VALUES (?1, ?2, ?3)",
        "INSERT OR REPLACE INTO economics(id, state) VALUES (1, ?1)",
    };
    for (const auto& [key, row] : rows) {
      Statement upsert(db_, kUpsert[row.table]);
      int column = 1;
      for (const std::string& name : row.key) upsert.Bind(column++, name);
      upsert.BindBlob(column, row.bytes);
      auto n = upsert.Run("write a row");
      if (!n.ok()) return n.status();
      changed += *n;
    }
    if (!batch.context_entries.empty()) {
      Statement insert(db_,
                       "INSERT INTO context_entries(experiment, arm, strategy, "
                       "route, state) VALUES (?1, ?2, ?3, ?4, ?5)");
      if (absl::Status s = insert.status(); !s.ok()) return s;
      for (const v1::ContextEntry& entry : batch.context_entries) {
        insert.Bind(1, entry.key().experiment())
            .Bind(2, entry.key().arm())
            .Bind(3, entry.key().strategy())
            .Bind(4, entry.route())
            .BindBlob(5, Serialize(entry));
        auto n = insert.Run("append a context entry");
        if (!n.ok()) return n.status();
        changed += *n;
      }
    }
    if (!batch.judged.empty()) {
      Statement insert(db_,
                       "INSERT OR IGNORE INTO judged(mac, issued_unix_micros) "
                       "VALUES (?1, ?2)");
      if (absl::Status s = insert.status(); !s.ok()) return s;
      for (const v1::JudgedRequest& judged : batch.judged) {
        insert.BindBlob(1, judged.mac()).Bind(2, judged.issued_unix_micros());
        auto n = insert.Run("record a judged id");
        if (!n.ok()) return n.status();
        changed += *n;
      }
    }
    if (!prune.empty()) {
      Statement delete_old(
          db_,
          "DELETE FROM context_entries WHERE experiment = ?1 AND arm = ?2 AND "
          "strategy = ?3 AND seq NOT IN (SELECT seq FROM context_entries "
          "WHERE experiment = ?1 AND arm = ?2 AND strategy = ?3 ORDER BY seq "
          "DESC LIMIT ?4)");
      if (absl::Status s = delete_old.status(); !s.ok()) return s;
      for (const std::string& name : prune) {
        const auto& [key, capacity] = capacities_.find(name)->second;
        delete_old.Bind(1, key.experiment())
            .Bind(2, key.arm())
            .Bind(3, key.strategy())
            .Bind(4, int64_t{capacity});
        auto n = delete_old.Run("prune context entries");
        if (!n.ok()) return n.status();
        changed += *n;
      }
    }
    return absl::OkStatus();
  }

  // One batch, with what earlier failed batches left, in one transaction.
  absl::Status Commit(const StateBatch& incoming)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Pending batch = std::move(pending_);
    pending_ = Pending();
    AddAggregates(incoming, batch.rows);
    batch.context.insert(batch.context.end(), incoming.context_entries.begin(),
                         incoming.context_entries.end());
    batch.judged.insert(batch.judged.end(), incoming.judged.begin(),
                        incoming.judged.end());
    for (const auto& [key, capacity] : incoming.context_capacity) {
      const std::string name = StrategyKeyName(key);
      auto [it, added] =
          capacities_.try_emplace(name, key, std::max(capacity, 0));
      if (added || it->second.second != std::max(capacity, 0)) {
        it->second.second = std::max(capacity, 0);
        batch.prune.insert(name);
      }
    }
    for (const v1::ContextEntry& entry : batch.context) {
      const std::string name = StrategyKeyName(entry.key());
      if (capacities_.contains(name)) batch.prune.insert(name);
    }
    // Rows equal to what is stored are not written again.
    for (auto it = batch.rows.begin(); it != batch.rows.end();) {
      auto here = it++;
      auto stored = written_.find(here->first);
      if (stored != written_.end() && stored->second == here->second.bytes) {
        batch.rows.erase(here);
      }
    }
    if (batch.rows.empty() && batch.context.empty() && batch.judged.empty() &&
        batch.prune.empty()) {
      return absl::OkStatus();
    }

    const absl::Time start = absl::Now();
    int64_t changed = 0;
    absl::Status status = CommitTransaction(batch, changed);
    if (!status.ok()) {
      Keep(std::move(batch));
      ++stats_.failures;
      ++failures_since_success_;
      const int kind = db_.last_error() & 0xff;
      if (logged_kinds_.insert(kind).second) {
        Log(absl::StrCat(status.message(), "; the batch is kept and written ",
                         "with the next one (", failures_since_success_,
                         " failed so far; further failures of this kind are "
                         "counted, not logged)"));
      }
      return status;
    }
    if (failures_since_success_ > 0) {
      Log(absl::StrCat("state file ", options_.path, ": written again after ",
                       failures_since_success_, " failed batches"));
      failures_since_success_ = 0;
      logged_kinds_.clear();
    }
    for (auto& [key, row] : batch.rows) written_[key] = std::move(row.bytes);
    ++stats_.batches;
    stats_.rows_written += changed;
    stats_.last_commit = absl::Now() - start;
    return absl::OkStatus();
  }

  absl::Status CommitTransaction(const Pending& batch, int64_t& changed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Transaction transaction(db_, "BEGIN IMMEDIATE");
    if (!transaction.status().ok()) return transaction.status();
    StateBatch entries;
    entries.context_entries = batch.context;
    entries.judged = batch.judged;
    if (absl::Status s = WriteRows(entries, batch.rows, batch.prune, changed);
        !s.ok()) {
      return s;
    }
    auto expired = DeleteExpiredJudged();
    if (!expired.ok()) return expired.status();
    changed += *expired;
    if (absl::Status s = SetWritten(UnixMicros(absl::Now())); !s.ok()) {
      return s;
    }
    return transaction.Commit();
  }

  // Keeps a failed batch for the next, bounded as the store would be: each
  // strategy's latest entries, judged ids within the retention.
  void Keep(Pending batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    absl::flat_hash_map<std::string, int> left;
    for (const auto& [name, key_capacity] : capacities_) {
      left[name] = key_capacity.second;
    }
    std::vector<v1::ContextEntry> kept;
    for (auto it = batch.context.rbegin(); it != batch.context.rend(); ++it) {
      auto capacity = left.find(StrategyKeyName(it->key()));
      if (capacity != left.end() && capacity->second-- <= 0) continue;
      kept.push_back(std::move(*it));
    }
    batch.context.assign(std::make_move_iterator(kept.rbegin()),
                         std::make_move_iterator(kept.rend()));
    const int64_t oldest = UnixMicros(absl::Now() - options_.judged_retention);
    std::erase_if(batch.judged, [oldest](const v1::JudgedRequest& judged) {
      return judged.issued_unix_micros() < oldest;
    });
    pending_ = std::move(batch);
  }

  void WriterLoop() {
    // No exception leaves this thread: collect() is the caller's code.
    auto collect = [this]() -> std::optional<StateBatch> {
      try {
        return collect_();
      } catch (const std::exception& e) {
        Log(absl::StrCat("collecting the state to write failed: ", e.what()));
      } catch (...) {
        Log("collecting the state to write failed");
      }
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.failures;
      return std::nullopt;
    };
    auto commit = [this](const StateBatch& batch) {
      try {
        std::lock_guard<std::mutex> lock(mu_);
        return Commit(batch);
      } catch (const std::exception& e) {
        return absl::InternalError(
            absl::StrCat("writing the state failed: ", e.what()));
      } catch (...) {
        return absl::InternalError("writing the state failed");
      }
    };
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(writer_mu_);
        wake_.wait_for(lock, absl::ToChronoNanoseconds(options_.flush_interval),
                       [this] { return stopping_; });
        if (stopping_) break;
      }
      if (std::optional<StateBatch> batch = collect()) {
        commit(*batch).IgnoreError();  // Logged and kept by Commit.
      }
    }
    std::optional<StateBatch> last = collect();
    final_status_ = last ? commit(*last)
                         : absl::InternalError(absl::StrCat(
                               "state file ", options_.path,
                               ": the last collect before closing failed"));
  }

  const StateStoreOptions options_;
  int lock_fd_;  // Holds the flock; closed after the connection.
  const dev_t device_;
  const ino_t inode_;

  mutable std::mutex mu_;  // The connection and what goes with it.
  Db db_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  // Aggregate rows as stored, by RowKey.
  absl::flat_hash_map<std::string, std::string> written_ ABSL_GUARDED_BY(mu_);
  // Each strategy's context capacity, by StrategyKeyName.
  absl::flat_hash_map<std::string, std::pair<v1::StrategyKey, int>> capacities_
      ABSL_GUARDED_BY(mu_);
  Pending pending_ ABSL_GUARDED_BY(mu_);
  WriterStats stats_ ABSL_GUARDED_BY(mu_);
  int64_t failures_since_success_ ABSL_GUARDED_BY(mu_) = 0;
  std::set<int> logged_kinds_ ABSL_GUARDED_BY(mu_);

  std::mutex writer_mu_;
  std::condition_variable wake_;  // Notified on stop.
  bool stopping_ ABSL_GUARDED_BY(writer_mu_) = false;
  absl::AnyInvocable<StateBatch()> collect_;  // Used by the writer only.
  absl::Status final_status_;                 // Set by the writer as it ends.
  std::thread writer_;

  std::mutex close_mu_;  // Serializes Close.
  std::optional<absl::Status> close_status_ ABSL_GUARDED_BY(close_mu_);
};

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(
    StateStoreOptions options) {
  const std::string path = options.path;
  if (path.empty()) {
    return absl::InvalidArgumentError("the state file's path is empty");
  }
  if (options.flush_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("state file ", path, ": the flush interval must be > 0"));
  }
  if (absl::Status s = MakeFolders(std::filesystem::path(path).parent_path());
      !s.ok()) {
    return s;
  }
  OpenFiles& open_files = OpenFiles::Get();
  std::unique_lock<std::mutex> registry(open_files.mu());
  struct stat st;
  if (stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrCat("state file ", path, " is a folder, not a file"));
    }
    if (open_files.Contains(st.st_dev, st.st_ino)) return InUse(path);
  }
  // Created 0600: the file holds the request-id key.
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "cannot open state file ", path, ": ", std::strerror(errno)));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    close(fd);
    if (error == EWOULDBLOCK) return InUse(path);
    return absl::UnavailableError(absl::StrCat("cannot lock state file ", path,
                                               ": ", std::strerror(error)));
  }
  if (fstat(fd, &st) != 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("cannot stat state file ", path,
                                               ": ", std::strerror(errno)));
  }
  open_files.Add(st.st_dev, st.st_ino);
  registry.unlock();
  auto impl =
      std::make_unique<Impl>(std::move(options), fd, st.st_dev, st.st_ino);
  if (absl::Status s = impl->Init(); !s.ok()) {
    impl->Close().IgnoreError();
    return s;
  }
  return std::unique_ptr<StateStore>(new StateStore(std::move(impl)));
}

absl::StatusOr<v1::GatewayState> StateStore::ReadFile(const std::string& path,
                                                      absl::Time judged_since) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrCat("state file ", path, " does not exist"));
  }
  if (S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("state file ", path, " is a folder, not a file"));
  }
  Db db(path);
  if (absl::Status s = db.Open(SQLITE_OPEN_READONLY); !s.ok()) return s;
  auto has_tables = CheckFormat(db);
  if (!has_tables.ok()) return has_tables.status();
  if (!*has_tables) {
    return absl::InvalidArgumentError(absl::StrCat(
        "state file ", path, " is not an arbiter state file (it is empty)"));
  }
  return ReadState(db, judged_since, nullptr);
}

StateStore::StateStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

StateStore::~StateStore() { impl_->Close().IgnoreError(); }

absl::StatusOr<v1::GatewayState> StateStore::Load(
    absl::Time judged_since) const {
  return impl_->Load(judged_since);
}

absl::StatusOr<std::string> StateStore::GetOrCreateSecret(
    absl::string_view name, size_t bytes) {
  return impl_->GetOrCreateSecret(name, bytes);
}

void StateStore::StartWriter(absl::AnyInvocable<StateBatch()> collect) {
  impl_->StartWriter(std::move(collect));
}

absl::Status StateStore::Write(const StateBatch& batch) {
  return impl_->Write(batch);
}

absl::Status StateStore::Close() { return impl_->Close(); }

absl::Status StateStore::Replace(const v1::GatewayState& state) {
  return impl_->Replace(state);
}

absl::StatusOr<std::string> StateStore::ResetStatistics(
    absl::string_view route, absl::string_view task) {
  return impl_->ResetStatistics(route, task);
}

WriterStats StateStore::writer_stats() const { return impl_->writer_stats(); }

const std::string& StateStore::path() const { return impl_->path(); }

}  // namespace arbiter::state
