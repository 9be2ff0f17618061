#include "retrieval/store.h"

#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/quote.h"
#include "retrieval/embedder.h"
#include "retrieval/tokenizer.h"

namespace arbiter::retrieval {
namespace {

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS collections(
  name TEXT PRIMARY KEY,
  created_at INTEGER NOT NULL DEFAULT (unixepoch()));
CREATE TABLE IF NOT EXISTS documents(
  collection TEXT NOT NULL REFERENCES collections(name),
  id TEXT NOT NULL,
  title TEXT NOT NULL,
  source TEXT NOT NULL,
  metadata TEXT NOT NULL,
  version INTEGER NOT NULL,
  PRIMARY KEY(collection, id));
CREATE TABLE IF NOT EXISTS chunks(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  collection TEXT NOT NULL,
  doc_id TEXT NOT NULL,
  position INTEGER NOT NULL,
  text TEXT NOT NULL,
  embedding BLOB);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks(collection, doc_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
  text, content='chunks', content_rowid='id');
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
  INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
  INSERT INTO chunks_fts(chunks_fts, rowid, text)
    VALUES ('delete', old.id, old.text);
END;
-- Every removed chunk, numbered, so a derived index can catch up.
CREATE TABLE IF NOT EXISTS removed_chunks(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  collection TEXT NOT NULL,
  chunk_id INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS chunks_removed AFTER DELETE ON chunks BEGIN
  INSERT INTO removed_chunks(collection, chunk_id)
    VALUES (old.collection, old.id);
END;
-- How many chunks hold each word: keyword search's budget reads it.
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts_vocab
  USING fts5vocab(chunks_fts, 'row');
CREATE TABLE IF NOT EXISTS changes(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  collection TEXT NOT NULL,
  doc_id TEXT NOT NULL,
  op TEXT NOT NULL);
-- Pruning: removal records of a collection up to `through` may be gone, so
-- a position before it can no longer catch up.
CREATE INDEX IF NOT EXISTS removed_chunks_by_collection
  ON removed_chunks(collection, seq);
CREATE TABLE IF NOT EXISTS pruned_removals(
  collection TEXT PRIMARY KEY,
  through INTEGER NOT NULL);
)sql";

// Rows deleted per pruning transaction: writers wait for one at most.
constexpr int64_t kPruneBatch = 1000;

bool IsName(absl::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(c) || c == '_' || c == '-' || c == '.';
  });
}

}  // namespace

// A connection with its prepared reads, kept for the next call.
struct SqliteReader {
  sqlite3* db = nullptr;
  bool owns_db = false;
  absl::flat_hash_map<std::string, sqlite3_stmt*> statements;

  ~SqliteReader() {
    for (auto& [sql, statement] : statements) sqlite3_finalize(statement);
    if (owns_db) sqlite3_close(db);
  }
};

namespace {

// One prepared statement: finalized on scope exit, or, when it is a
// reader's cached one, reset for the next call.
class Statement final {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    status_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  Statement(SqliteReader& reader, const std::string& sql) : db_(reader.db) {
    auto it = reader.statements.find(sql);
    if (it != reader.statements.end()) {
      stmt_ = it->second;
      status_ = SQLITE_OK;
    } else {
      status_ = sqlite3_prepare_v3(reader.db, sql.c_str(), -1,
                                   SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr);
      if (status_ == SQLITE_OK) reader.statements.emplace(sql, stmt_);
    }
    cached_ = status_ == SQLITE_OK;
  }
  ~Statement() {
    if (cached_) {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    } else {
      sqlite3_finalize(stmt_);
    }
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  absl::Status status() const {
    return status_ == SQLITE_OK ? absl::OkStatus()
                                : absl::InternalError(absl::StrCat(
                                      "sqlite: ", sqlite3_errmsg(db_)));
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
  Statement& BindBlob(int i, const void* data, size_t size) {
    sqlite3_bind_blob(stmt_, i, data, static_cast<int>(size), SQLITE_TRANSIENT);
    return *this;
  }
  // Ready to run again with new bindings.
  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(stmt_); }
  absl::Status Run() {
    int rc = Step();
    return rc == SQLITE_DONE || rc == SQLITE_ROW
               ? absl::OkStatus()
               : absl::InternalError(
                     absl::StrCat("sqlite: ", sqlite3_errmsg(db_)));
  }
  int64_t Int(int column) { return sqlite3_column_int64(stmt_, column); }
  double Double(int column) { return sqlite3_column_double(stmt_, column); }
  const void* Blob(int column) { return sqlite3_column_blob(stmt_, column); }
  int Bytes(int column) { return sqlite3_column_bytes(stmt_, column); }
  int Columns() { return sqlite3_column_count(stmt_); }
  std::string Text(int column) {
    const unsigned char* text = sqlite3_column_text(stmt_, column);
    return text ? std::string(reinterpret_cast<const char*>(text)) : "";
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int status_;
  bool cached_ = false;
};

absl::Status Exec(sqlite3* db, const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    absl::Status status =
        absl::InternalError(absl::StrCat("sqlite: ", error ? error : "?"));
    sqlite3_free(error);
    return status;
  }
  return absl::OkStatus();
}

// Rolls back unless committed.
class Transaction final {
 public:
  explicit Transaction(sqlite3* db) : db_(db) {
    status_ = Exec(db, "BEGIN IMMEDIATE");
  }
  ~Transaction() {
    if (status_.ok() && !done_) Exec(db_, "ROLLBACK").IgnoreError();
  }
  absl::Status status() const { return status_; }
  absl::Status Commit() {
    done_ = true;
    return Exec(db_, "COMMIT");
  }

 private:
  sqlite3* db_;
  absl::Status status_;
  bool done_ = false;
};

// A read of several statements that sees one commit, on a connection
// without a transaction of its own.
class ReadTransaction final {
 public:
  explicit ReadTransaction(sqlite3* db) : db_(db), status_(Exec(db, "BEGIN")) {}
  ~ReadTransaction() {
    if (status_.ok()) Exec(db_, "COMMIT").IgnoreError();
  }
  ReadTransaction(const ReadTransaction&) = delete;
  ReadTransaction& operator=(const ReadTransaction&) = delete;

  absl::Status status() const { return status_; }

 private:
  sqlite3* db_;
  absl::Status status_;
};

// Whether `value` is a JSON number, string, boolean or null.
bool IsJsonScalar(sqlite3* db, absl::string_view value) {
  Statement check(db,
                  "SELECT json_valid(?1) AND json_type(?1) NOT IN "
                  "('object', 'array')");
  check.Bind(1, value);
  return check.Step() == SQLITE_ROW && check.Int(0) == 1;
}

absl::Status RecordChange(sqlite3* db, absl::string_view collection,
                          absl::string_view doc_id, const char* op) {
  Statement insert(
      db, "INSERT INTO changes(collection, doc_id, op) VALUES (?,?,?)");
  insert.Bind(1, collection).Bind(2, doc_id).Bind(3, op);
  return insert.Run();
}

absl::Status DeleteChunks(sqlite3* db, absl::string_view collection,
                          absl::string_view doc_id) {
  Statement remove(db,
                   "DELETE FROM chunks WHERE collection = ? AND doc_id = ?");
  remove.Bind(1, collection).Bind(2, doc_id);
  return remove.Run();
}

}  // namespace

// Enough for a gateway's request threads on a few cores; more would only
// queue inside SQLite.
constexpr int kMaxReaders = 8;

// A read-only connection for one call: a pooled one for a file store, else
// the writer's own connection, held under its mutex.
class DocumentStore::ReadLease final {
 public:
  explicit ReadLease(DocumentStore& store, ReadOn on = ReadOn::kReader)
      : store_(store) {
    if (store.reader_path_.empty() || on == ReadOn::kWriter) {
      writer_lock_ = std::unique_lock(store.mu_);
      reader_ = store.writer_reads_.get();
      return;
    }
    std::unique_lock lock(store.readers_mu_);
    store.reader_free_.wait(lock, [&] {
      return !store.idle_readers_.empty() || store.open_readers_ < kMaxReaders;
    });
    if (!store.idle_readers_.empty()) {
      owned_ = std::move(store.idle_readers_.back());
      store.idle_readers_.pop_back();
    } else {
      ++store.open_readers_;
      lock.unlock();
      owned_ = OpenReader(store.reader_path_);
      if (owned_ == nullptr) {
        // The writer's connection does this read; the next call tries again.
        lock.lock();
        --store.open_readers_;
        lock.unlock();
        store.reader_free_.notify_one();
        writer_lock_ = std::unique_lock(store.mu_);
        reader_ = store.writer_reads_.get();
        return;
      }
    }
    reader_ = owned_.get();
  }
  ~ReadLease() {
    if (owned_ == nullptr) return;
    {
      std::lock_guard lock(store_.readers_mu_);
      store_.idle_readers_.push_back(std::move(owned_));
    }
    store_.reader_free_.notify_one();
  }
  ReadLease(const ReadLease&) = delete;
  ReadLease& operator=(const ReadLease&) = delete;

  SqliteReader& reader() { return *reader_; }
  sqlite3* db() { return reader_->db; }

 private:
  // A read-only connection to the store's file, or null.
  static std::unique_ptr<SqliteReader> OpenReader(const std::string& path) {
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(path.c_str(), &db,
                        SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK) {
      sqlite3_close(db);
      return nullptr;
    }
    sqlite3_busy_timeout(db, 5000);
    // Pages read in place from the OS cache rather than copied by pread:
    // a search reads dozens of scattered chunk rows.
    sqlite3_exec(db, "PRAGMA mmap_size=1073741824", nullptr, nullptr, nullptr);
    auto reader = std::make_unique<SqliteReader>();
    reader->db = db;
    reader->owns_db = true;
    return reader;
  }

  DocumentStore& store_;
  std::unique_lock<std::mutex> writer_lock_;
  std::unique_ptr<SqliteReader> owned_;
  SqliteReader* reader_ = nullptr;
};

DocumentStore::DocumentStore(sqlite3* db, std::string reader_path,
                             Options options)
    : options_(options),
      db_(db),
      writer_reads_(std::make_unique<SqliteReader>()),
      reader_path_(std::move(reader_path)) {
  writer_reads_->db = db;
}

absl::StatusOr<std::unique_ptr<DocumentStore>> DocumentStore::Open(
    const std::string& path, Options options) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(
      path.c_str(), &db,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
      nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(
        absl::StrCat("cannot open store \"", path, "\": ", message));
  }
  // Only a named file can be opened again by reader connections.
  const bool private_memory =
      path.empty() || path == ":memory:" || absl::StartsWith(path, "file:");
  if (options.keyword_match_budget < 0) {
    sqlite3_close(db);
    return absl::InvalidArgumentError(
        "keyword_match_budget: must be >= 0 (0: no budget)");
  }
  if (options.retained_changes < 0) {
    sqlite3_close(db);
    return absl::InvalidArgumentError("retained_changes: must be >= 0");
  }
  auto store = std::unique_ptr<DocumentStore>(
      new DocumentStore(db, private_memory ? "" : path, options));
  sqlite3_busy_timeout(db, 5000);
  for (const char* pragma :
       {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
        "PRAGMA foreign_keys=ON"}) {
    absl::Status status = Exec(db, pragma);
    if (!status.ok()) return status;
  }
  absl::Status schema = Exec(db, kSchema);
  if (!schema.ok()) return schema;
  return store;
}

DocumentStore::~DocumentStore() {
  idle_readers_.clear();
  writer_reads_.reset();  // Finalizes its statements before the close.
  sqlite3_close(db_);
}

absl::Status DocumentStore::CreateCollection(absl::string_view name) {
  std::lock_guard lock(mu_);
  if (!IsName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("collection: ", QuoteInput(name),
                     " must be 1-128 letters, digits, '_', '-' or '.'"));
  }
  Statement insert(db_, "INSERT OR IGNORE INTO collections(name) VALUES (?)");
  insert.Bind(1, name);
  return insert.Run();
}

absl::StatusOr<std::vector<std::string>> DocumentStore::Collections() {
  ReadLease lease(*this);
  Statement select(lease.reader(),
                   "SELECT name FROM collections ORDER BY name");
  std::vector<std::string> names;
  while (select.Step() == SQLITE_ROW) names.push_back(select.Text(0));
  return names;
}

namespace {

absl::Status RequireCollectionIn(SqliteReader& reader,
                                 absl::string_view collection) {
  Statement select(reader, "SELECT 1 FROM collections WHERE name = ?");
  select.Bind(1, collection);
  if (select.Step() != SQLITE_ROW) {
    return absl::NotFoundError(absl::StrCat("collection: unknown collection ",
                                            QuoteInput(collection)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status DocumentStore::RequireCollection(absl::string_view collection) {
  return RequireCollectionIn(*writer_reads_, collection);
}

absl::StatusOr<int64_t> DocumentStore::Upsert(absl::string_view collection,
                                              const StoredDocument& document) {
  std::lock_guard lock(mu_);
  if (document.id.empty()) {
    return absl::InvalidArgumentError("id: must not be empty");
  }
  bool has_text = std::any_of(
      document.chunks.begin(), document.chunks.end(),
      [](const std::string& chunk) { return !Words(chunk).empty(); });
  if (!has_text) {
    return absl::InvalidArgumentError(absl::StrCat(
        "document ", QuoteInput(document.id), ": text must not be empty"));
  }
  if (!document.embeddings.empty() &&
      document.embeddings.size() != document.chunks.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "document ", QuoteInput(document.id), ": ", document.embeddings.size(),
        " embeddings for ", document.chunks.size(), " chunks"));
  }
  {
    Statement check(db_, "SELECT json_valid(?1) AND json_type(?1) = 'object'");
    check.Bind(1, document.metadata_json);
    if (check.Step() != SQLITE_ROW || check.Int(0) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("document ", QuoteInput(document.id),
                       ": metadata must be a JSON object"));
    }
  }
  Transaction transaction(db_);
  if (!transaction.status().ok()) return transaction.status();
  if (absl::Status s = RequireCollection(collection); !s.ok()) return s;
  int64_t version = 1;
  {
    Statement select(
        db_, "SELECT version FROM documents WHERE collection = ? AND id = ?");
    select.Bind(1, collection).Bind(2, document.id);
    if (select.Step() == SQLITE_ROW) version = select.Int(0) + 1;
  }
  {
    Statement upsert(db_,
                     "INSERT OR REPLACE INTO documents(collection, id, title, "
                     "source, metadata, version) VALUES (?,?,?,?,?,?)");
    upsert.Bind(1, collection)
        .Bind(2, document.id)
        .Bind(3, document.title)
        .Bind(4, document.source)
        .Bind(5, document.metadata_json)
        .Bind(6, version);
    if (absl::Status s = upsert.Run(); !s.ok()) return s;
  }
  if (absl::Status s = DeleteChunks(db_, collection, document.id); !s.ok()) {
    return s;
  }
  for (size_t i = 0; i < document.chunks.size(); ++i) {
    Statement insert(db_,
                     "INSERT INTO chunks(collection, doc_id, position, text, "
                     "embedding) VALUES (?,?,?,?,?)");
    insert.Bind(1, collection)
        .Bind(2, document.id)
        .Bind(3, static_cast<int64_t>(i))
        .Bind(4, document.chunks[i]);
    if (!document.embeddings.empty()) {
      const std::vector<float>& embedding = document.embeddings[i];
      insert.BindBlob(5, embedding.data(), embedding.size() * sizeof(float));
    }
    if (absl::Status s = insert.Run(); !s.ok()) return s;
  }
  if (absl::Status s = RecordChange(db_, collection, document.id, "upsert");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = transaction.Commit(); !s.ok()) return s;
  return version;
}

absl::Status DocumentStore::Delete(absl::string_view collection,
                                   absl::string_view doc_id) {
  std::lock_guard lock(mu_);
  Transaction transaction(db_);
  if (!transaction.status().ok()) return transaction.status();
  if (absl::Status s = RequireCollection(collection); !s.ok()) return s;
  Statement remove(db_,
                   "DELETE FROM documents WHERE collection = ? AND id = ?");
  remove.Bind(1, collection).Bind(2, doc_id);
  if (absl::Status s = remove.Run(); !s.ok()) return s;
  if (sqlite3_changes(db_) == 0) {
    return absl::NotFoundError(absl::StrCat("document ", QuoteInput(doc_id),
                                            " is not in collection ",
                                            QuoteInput(collection)));
  }
  if (absl::Status s = DeleteChunks(db_, collection, doc_id); !s.ok()) return s;
  if (absl::Status s = RecordChange(db_, collection, doc_id, "delete");
      !s.ok()) {
    return s;
  }
  return transaction.Commit();
}

absl::StatusOr<int64_t> DocumentStore::DeleteWhere(
    absl::string_view collection, absl::string_view key,
    absl::string_view value_json) {
  std::lock_guard lock(mu_);
  if (!IsName(key)) {
    return absl::InvalidArgumentError(
        absl::StrCat("filter key: ", QuoteInput(key),
                     " must be letters, digits, '_', '-' or '.'"));
  }
  if (!IsJsonScalar(db_, value_json)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "filter value: ", QuoteInput(value_json), " is not a JSON scalar"));
  }
  Transaction transaction(db_);
  if (!transaction.status().ok()) return transaction.status();
  if (absl::Status s = RequireCollection(collection); !s.ok()) return s;
  std::vector<std::string> ids;
  {
    Statement select(db_,
                     "SELECT id FROM documents WHERE collection = ? AND "
                     "json_extract(metadata, ?) = json_extract(?, '$')");
    select.Bind(1, collection)
        .Bind(2, absl::StrCat("$.\"", key, "\""))
        .Bind(3, value_json);
    while (select.Step() == SQLITE_ROW) ids.push_back(select.Text(0));
  }
  for (const std::string& id : ids) {
    Statement remove(db_,
                     "DELETE FROM documents WHERE collection = ? AND id = ?");
    remove.Bind(1, collection).Bind(2, id);
    if (absl::Status s = remove.Run(); !s.ok()) return s;
    if (absl::Status s = DeleteChunks(db_, collection, id); !s.ok()) return s;
    if (absl::Status s = RecordChange(db_, collection, id, "delete"); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = transaction.Commit(); !s.ok()) return s;
  return static_cast<int64_t>(ids.size());
}

absl::StatusOr<int64_t> DocumentStore::DocumentCount(
    absl::string_view collection) {
  ReadLease lease(*this);
  if (absl::Status s = RequireCollectionIn(lease.reader(), collection); !s.ok())
    return s;
  Statement count(lease.reader(),
                  "SELECT count(*) FROM documents WHERE collection = ?");
  count.Bind(1, collection);
  return count.Step() == SQLITE_ROW ? count.Int(0) : 0;
}

absl::StatusOr<int64_t> DocumentStore::ChunkCount(
    absl::string_view collection) {
  ReadLease lease(*this);
  if (absl::Status s = RequireCollectionIn(lease.reader(), collection); !s.ok())
    return s;
  Statement count(lease.reader(),
                  "SELECT count(*) FROM chunks WHERE collection = ?");
  count.Bind(1, collection);
  return count.Step() == SQLITE_ROW ? count.Int(0) : 0;
}

absl::StatusOr<int64_t> DocumentStore::LastChange() {
  ReadLease lease(*this);
  // The counter, not max(seq): pruning deletes the rows, never the count.
  Statement select(lease.reader(),
                   "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE "
                   "name = 'changes'), 0)");
  return select.Step() == SQLITE_ROW ? select.Int(0) : 0;
}

absl::StatusOr<StorePosition> DocumentStore::Position(ReadOn on) {
  ReadLease lease(*this, on);
  // AUTOINCREMENT counters never go back, even when the last row is deleted.
  Statement select(lease.reader(),
                   "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE "
                   "name = 'removed_chunks'), 0), coalesce((SELECT seq FROM "
                   "sqlite_sequence WHERE name = 'chunks'), 0)");
  if (select.Step() != SQLITE_ROW) return select.status();
  return StorePosition{select.Int(0), select.Int(1)};
}

namespace {

// The rows ReadChunk reads: chunks joined to their documents, with their
// embeddings or without (a search hit's text needs no vector, and reading
// one means a 4 KiB overflow chain per chunk at 1024-d).
std::string ChunkRows(bool with_embedding) {
  return absl::StrCat(
      "SELECT c.id, c.doc_id, c.position, c.text, d.title",
      with_embedding ? ", c.embedding" : "",
      " FROM chunks c JOIN documents d ON d.collection = c.collection AND "
      "d.id = c.doc_id ");
}

StoredChunk ReadChunk(Statement& select) {
  StoredChunk chunk;
  chunk.id = select.Int(0);
  chunk.doc_id = select.Text(1);
  chunk.position = static_cast<int>(select.Int(2));
  chunk.text = select.Text(3);
  chunk.doc_title = select.Text(4);
  if (select.Columns() < 6) return chunk;  // Without embeddings.
  const void* blob = select.Blob(5);
  int bytes = select.Bytes(5);
  if (blob != nullptr && bytes > 0) {
    chunk.embedding.resize(bytes / sizeof(float));
    std::memcpy(chunk.embedding.data(), blob,
                chunk.embedding.size() * sizeof(float));
  }
  return chunk;
}

}  // namespace

absl::StatusOr<std::vector<StoredChunk>> DocumentStore::Chunks(
    absl::string_view collection, absl::string_view doc_id) {
  ReadLease lease(*this);
  if (absl::Status s = RequireCollectionIn(lease.reader(), collection); !s.ok())
    return s;
  Statement select(
      lease.reader(),
      absl::StrCat(ChunkRows(true),
                   "WHERE c.collection = ?1 AND (?2 = '' OR c.doc_id = ?2) "
                   "ORDER BY c.id"));
  select.Bind(1, collection).Bind(2, doc_id);
  std::vector<StoredChunk> chunks;
  while (select.Step() == SQLITE_ROW) chunks.push_back(ReadChunk(select));
  return chunks;
}

absl::StatusOr<std::vector<StoredChunk>> DocumentStore::ChunkPage(
    absl::string_view collection, int64_t after_id, int64_t up_to_id,
    int64_t limit) {
  ReadLease lease(*this);
  if (absl::Status s = RequireCollectionIn(lease.reader(), collection);
      !s.ok()) {
    return s;
  }
  // `+c.collection` keeps SQLite on the id range, as in ChangesSince.
  Statement select(
      lease.reader(),
      absl::StrCat(
          ChunkRows(true),
          "WHERE c.id > ? AND c.id <= ? AND +c.collection = ? ORDER BY c.id "
          "LIMIT ?"));
  select.Bind(1, after_id).Bind(2, up_to_id).Bind(3, collection).Bind(4, limit);
  std::vector<StoredChunk> chunks;
  while (select.Step() == SQLITE_ROW) chunks.push_back(ReadChunk(select));
  return chunks;
}

absl::StatusOr<StoreChanges> DocumentStore::ChangesSince(
    absl::string_view collection, StorePosition since, ReadOn on) {
  ReadLease lease(*this, on);
  // The pruning mark and the removals after `since` from one commit.
  ReadTransaction transaction(lease.db());
  if (!transaction.status().ok()) return transaction.status();
  {
    Statement pruned(
        lease.reader(),
        "SELECT through FROM pruned_removals WHERE collection = ?");
    pruned.Bind(1, collection);
    if (pruned.Step() == SQLITE_ROW && since.removal < pruned.Int(0)) {
      return absl::OutOfRangeError(absl::StrCat(
          "collection \"", collection, "\" keeps removals only after ",
          pruned.Int(0), " (older ones were pruned); a position at removal ",
          since.removal, " cannot catch up"));
    }
  }
  StoreChanges changes;
  Statement removed(lease.reader(),
                    "SELECT chunk_id FROM removed_chunks WHERE seq > ? AND "
                    "collection = ? ORDER BY seq");
  removed.Bind(1, since.removal).Bind(2, collection);
  while (removed.Step() == SQLITE_ROW) {
    changes.removed_chunk_ids.push_back(removed.Int(0));
  }
  // `+c.collection` keeps SQLite on the id range: through chunks_by_doc it
  // would scan the whole collection on every catch-up.
  Statement added(
      lease.reader(),
      absl::StrCat(ChunkRows(true),
                   "WHERE c.id > ? AND +c.collection = ? ORDER BY c.id"));
  added.Bind(1, since.chunk).Bind(2, collection);
  while (added.Step() == SQLITE_ROW) changes.added.push_back(ReadChunk(added));
  return changes;
}

DocumentStore::RemovalHold::RemovalHold(RemovalHold&& other) noexcept
    : store_(std::exchange(other.store_, nullptr)), id_(other.id_) {}

DocumentStore::RemovalHold& DocumentStore::RemovalHold::operator=(
    RemovalHold&& other) noexcept {
  if (this != &other) {
    RemovalHold released(std::move(*this));
    store_ = std::exchange(other.store_, nullptr);
    id_ = other.id_;
  }
  return *this;
}

DocumentStore::RemovalHold::~RemovalHold() {
  if (store_ == nullptr) return;
  std::lock_guard lock(store_->holds_mu_);
  store_->holds_.erase(id_);
}

void DocumentStore::RemovalHold::MoveTo(int64_t removal) const {
  if (store_ == nullptr) return;
  std::lock_guard lock(store_->holds_mu_);
  int64_t& held = store_->holds_[id_].removal;
  held = std::max(held, removal);  // Never back: what went is gone.
}

DocumentStore::RemovalHold DocumentStore::HoldRemovals(
    absl::string_view collection) {
  std::lock_guard lock(holds_mu_);
  const uint64_t id = next_hold_++;
  holds_[id] = {std::string(collection), 0};
  return RemovalHold(this, id);
}

int64_t DocumentStore::OldestHeld(absl::string_view collection) {
  std::lock_guard lock(holds_mu_);
  int64_t oldest = -1;
  for (const auto& [id, hold] : holds_) {
    if (hold.collection != collection) continue;
    if (oldest < 0 || hold.removal < oldest) oldest = hold.removal;
  }
  return oldest;
}

absl::StatusOr<DocumentStore::ChangeLogRows> DocumentStore::PruneChangeLog(
    absl::string_view collection) {
  ChangeLogRows pruned;
  for (;;) {
    std::lock_guard lock(mu_);
    const int64_t held = OldestHeld(collection);
    const int64_t cut = held - options_.retained_changes;
    if (held < 0 || cut <= 0) break;
    // The first batch of the collection's records at or below the cut.
    int64_t through = 0;
    {
      Statement last(db_,
                     "SELECT max(seq) FROM (SELECT seq FROM removed_chunks "
                     "WHERE collection = ? AND seq <= ? ORDER BY seq LIMIT ?)");
      last.Bind(1, collection).Bind(2, cut).Bind(3, kPruneBatch);
      if (last.Step() == SQLITE_ROW) through = last.Int(0);
    }
    if (through == 0) break;
    Transaction transaction(db_);
    if (!transaction.status().ok()) return transaction.status();
    Statement remove(
        db_, "DELETE FROM removed_chunks WHERE collection = ? AND seq <= ?");
    remove.Bind(1, collection).Bind(2, through);
    if (absl::Status s = remove.Run(); !s.ok()) return s;
    const int64_t deleted = sqlite3_changes(db_);
    Statement mark(db_,
                   "INSERT INTO pruned_removals(collection, through) VALUES "
                   "(?, ?) ON CONFLICT(collection) DO UPDATE SET through = "
                   "max(through, excluded.through)");
    mark.Bind(1, collection).Bind(2, through);
    if (absl::Status s = mark.Run(); !s.ok()) return s;
    if (absl::Status s = transaction.Commit(); !s.ok()) return s;
    pruned.removals += deleted;
    if (deleted < kPruneBatch) break;
  }
  // Nothing reads the changes table but LastChange, which reads the counter.
  for (;;) {
    std::lock_guard lock(mu_);
    int64_t cut = 0;
    {
      Statement ends(db_,
                     "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE "
                     "name = 'changes'), 0), coalesce((SELECT min(seq) FROM "
                     "changes), 0)");
      if (ends.Step() != SQLITE_ROW) {
        return absl::InternalError(
            absl::StrCat("sqlite: ", sqlite3_errmsg(db_)));
      }
      cut = ends.Int(0) - options_.retained_changes;
      if (ends.Int(1) == 0 || ends.Int(1) > cut) break;
    }
    Transaction transaction(db_);
    if (!transaction.status().ok()) return transaction.status();
    Statement remove(db_,
                     "DELETE FROM changes WHERE seq IN (SELECT seq FROM "
                     "changes WHERE seq <= ? ORDER BY seq LIMIT ?)");
    remove.Bind(1, cut).Bind(2, kPruneBatch);
    if (absl::Status s = remove.Run(); !s.ok()) return s;
    const int64_t deleted = sqlite3_changes(db_);
    if (absl::Status s = transaction.Commit(); !s.ok()) return s;
    pruned.changes += deleted;
    if (deleted < kPruneBatch) break;
  }
  return pruned;
}

absl::StatusOr<DocumentStore::ChangeLogRows> DocumentStore::ChangeLogSize(
    absl::string_view collection) {
  ReadLease lease(*this);
  ChangeLogRows rows;
  Statement removals(
      lease.reader(),
      "SELECT count(*) FROM removed_chunks WHERE collection = ?");
  removals.Bind(1, collection);
  Statement changes(lease.reader(), "SELECT count(*) FROM changes");
  if (removals.Step() != SQLITE_ROW || changes.Step() != SQLITE_ROW) {
    return absl::InternalError(
        absl::StrCat("sqlite: ", sqlite3_errmsg(lease.db())));
  }
  rows.removals = removals.Int(0);
  rows.changes = changes.Int(0);
  return rows;
}

absl::StatusOr<std::vector<StoredChunk>> DocumentStore::ChunksById(
    const std::vector<int64_t>& ids) {
  ReadLease lease(*this);
  std::vector<StoredChunk> chunks;
  // One statement for all ids: preparing it costs more than a lookup.
  Statement select(lease.reader(),
                   absl::StrCat(ChunkRows(false), "WHERE c.id = ?"));
  if (absl::Status s = select.status(); !s.ok()) return s;
  for (int64_t id : ids) {
    select.Reset();
    select.Bind(1, id);
    if (select.Step() == SQLITE_ROW) chunks.push_back(ReadChunk(select));
  }
  return chunks;
}

absl::Status CheckFilterLimits(const std::vector<MetadataFilter>& filters) {
  if (filters.size() > kMaxMetadataFilters) {
    return absl::InvalidArgumentError(
        absl::StrCat("filters: ", filters.size(),
                     " filters exceed the limit of ", kMaxMetadataFilters));
  }
  for (size_t i = 0; i < filters.size(); ++i) {
    if (filters[i].values_json.size() > kMaxFilterValues) {
      return absl::InvalidArgumentError(absl::StrCat(
          "filters[", i, "].values: ", filters[i].values_json.size(),
          " values exceed the limit of ", kMaxFilterValues));
    }
  }
  return absl::OkStatus();
}

namespace {

// The SQL condition of the filters on documents aliased `d`, with one `?`
// per key and value, in the order of `params`.
absl::StatusOr<std::string> FilterClause(
    sqlite3* db, const std::vector<MetadataFilter>& filters,
    std::vector<std::string>& params) {
  if (absl::Status limits = CheckFilterLimits(filters); !limits.ok()) {
    return limits;
  }
  std::string clause;
  for (size_t i = 0; i < filters.size(); ++i) {
    const MetadataFilter& filter = filters[i];
    if (!IsName(filter.key)) {
      return absl::InvalidArgumentError(
          absl::StrCat("filters[", i, "].key: ", QuoteInput(filter.key),
                       " must be letters, digits, '_', '-' or '.'"));
    }
    if (filter.values_json.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("filters[", i, "].values: at least one is needed"));
    }
    std::vector<std::string> slots;
    for (const std::string& value : filter.values_json) {
      if (!IsJsonScalar(db, value)) {
        return absl::InvalidArgumentError(
            absl::StrCat("filters[", i, "].values: ", QuoteInput(value),
                         " is not a JSON scalar"));
      }
      slots.push_back("json_extract(?, '$')");
      params.push_back(value);
    }
    params.insert(params.end() - filter.values_json.size(),
                  absl::StrCat("$.\"", filter.key, "\""));
    absl::StrAppend(&clause, " AND json_extract(d.metadata, ?) IN (",
                    absl::StrJoin(slots, ", "), ")");
  }
  return clause;
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> DocumentStore::ChunkIdsMatching(
    absl::string_view collection, const std::vector<MetadataFilter>& filters) {
  ReadLease lease(*this);
  if (absl::Status s = RequireCollectionIn(lease.reader(), collection); !s.ok())
    return s;
  std::vector<std::string> params;
  auto clause = FilterClause(lease.db(), filters, params);
  if (!clause.ok()) return clause.status();
  std::string sql = absl::StrCat(
      "SELECT c.id FROM chunks c JOIN documents d ON d.collection = "
      "c.collection AND d.id = c.doc_id WHERE c.collection = ?",
      *clause, " ORDER BY c.id");
  Statement select(lease.reader(), sql);
  if (absl::Status s = select.status(); !s.ok()) return s;
  select.Bind(1, collection);
  for (size_t i = 0; i < params.size(); ++i) {
    select.Bind(static_cast<int>(i + 2), params[i]);
  }
  std::vector<int64_t> ids;
  while (select.Step() == SQLITE_ROW) ids.push_back(select.Int(0));
  return ids;
}

namespace {

// How long a word's chunk count is trusted: counts only steer the budget.
constexpr int64_t kTermCountTtlNs = 5'000'000'000;
constexpr size_t kMaxCachedTermCounts = 100'000;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The query's words, each once; stop words only when nothing else is left.
std::vector<std::string> DistinctWords(absl::string_view query) {
  std::vector<std::string> all = Words(query);
  std::vector<std::string> words;
  for (bool keep_stop_words : {false, true}) {
    for (const std::string& word : all) {
      if ((keep_stop_words || !IsStopWord(word)) &&
          std::find(words.begin(), words.end(), word) == words.end()) {
        words.push_back(word);
      }
    }
    if (!words.empty()) break;
  }
  return words;
}

}  // namespace

int64_t DocumentStore::ChunksContaining(SqliteReader& reader,
                                        const std::string& term) {
  const int64_t now = NowNs();
  {
    std::lock_guard lock(counts_mu_);
    auto it = term_counts_.find(term);
    if (it != term_counts_.end() && it->second.expires_ns > now) {
      return it->second.chunks;
    }
  }
  int64_t chunks = 0;
  if (term.empty()) {
    // Of every collection, from the id range: deleted ids make it larger,
    // which only costs counting the words.
    Statement select(reader,
                     "SELECT coalesce((SELECT max(id) FROM chunks) - "
                     "(SELECT min(id) FROM chunks) + 1, 0)");
    if (select.Step() == SQLITE_ROW) chunks = select.Int(0);
  } else {
    Statement select(reader, "SELECT doc FROM chunks_fts_vocab WHERE term = ?");
    select.Bind(1, term);
    if (select.Step() == SQLITE_ROW) chunks = select.Int(0);
  }
  std::lock_guard lock(counts_mu_);
  if (term_counts_.size() >= kMaxCachedTermCounts) term_counts_.clear();
  term_counts_[term] = {chunks, now + kTermCountTtlNs};
  return chunks;
}

std::vector<std::string> DocumentStore::TermsWithinBudget(
    SqliteReader& reader, absl::string_view query) {
  std::vector<std::string> words = DistinctWords(query);
  if (options_.keyword_match_budget == 0 || words.size() == 1) return words;
  // No query can match more chunks than the store holds: below the budget,
  // skip counting (it reads each word's whole list of chunks).
  if (ChunksContaining(reader, "") <= options_.keyword_match_budget) {
    return words;
  }
  std::vector<std::pair<int64_t, std::string>> counted;
  for (std::string& word : words) {
    counted.emplace_back(ChunksContaining(reader, word), std::move(word));
  }
  std::stable_sort(
      counted.begin(), counted.end(),
      [](const auto& a, const auto& b) { return a.first < b.first; });
  // Rarest first: BM25 weighs rare words most, so the words left out are
  // the ones that change the ranking least. A word no chunk holds costs
  // nothing; the rarest word that some chunk holds is always kept.
  std::vector<std::string> kept;
  int64_t matches = 0;
  for (auto& [count, word] : counted) {
    if (matches > 0 && matches + count > options_.keyword_match_budget) break;
    matches += count;
    kept.push_back(std::move(word));
  }
  return kept;
}

std::vector<std::string> DocumentStore::KeywordTerms(absl::string_view query) {
  ReadLease lease(*this);
  return TermsWithinBudget(lease.reader(), query);
}

absl::StatusOr<std::vector<KeywordHit>> DocumentStore::KeywordSearch(
    absl::string_view collection, absl::string_view query, int k,
    const std::vector<MetadataFilter>& filters) {
  if (k < 1) return absl::InvalidArgumentError("k: must be >= 1");
  if (Words(query).empty()) {
    return absl::InvalidArgumentError("query: has no words to search for");
  }
  ReadLease lease(*this);
  if (absl::Status s = RequireCollectionIn(lease.reader(), collection);
      !s.ok()) {
    return s;
  }
  std::vector<std::string> params;
  auto clause = FilterClause(lease.db(), filters, params);
  if (!clause.ok()) return clause.status();
  // Quoted words joined by OR: user text never reaches FTS5's query syntax.
  std::vector<std::string> terms;
  for (const std::string& word : TermsWithinBudget(lease.reader(), query)) {
    terms.push_back(absl::StrCat("\"", word, "\""));
  }
  const std::string match = absl::StrJoin(terms, " OR ");
  // FTS5 ranks its matches alone, and only the best are joined to their
  // chunks: reading a chunk row costs more than scoring it. The first pass
  // fetches a few more than k for other collections and filters to drop;
  // if too few remain, the second ranks every match.
  const std::string sql = absl::StrCat(
      "SELECT c.id, c.doc_id, c.position, c.text, f.score, d.title FROM "
      "(SELECT rowid AS id, bm25(chunks_fts) AS score FROM chunks_fts "
      "WHERE chunks_fts MATCH ? ORDER BY score LIMIT ?) f "
      "JOIN chunks c ON c.id = f.id "
      "JOIN documents d ON d.collection = c.collection AND d.id = c.doc_id "
      "WHERE c.collection = ?",
      *clause, " ORDER BY f.score LIMIT ?");
  const int64_t first_fetch =
      filters.empty() ? 2 * int64_t{k} + 16 : 8 * int64_t{k} + 64;
  std::vector<KeywordHit> hits;
  for (int64_t fetch : {first_fetch, int64_t{-1}}) {
    Statement select(lease.reader(), sql);
    if (absl::Status s = select.status(); !s.ok()) return s;
    select.Bind(1, match).Bind(2, fetch).Bind(3, collection);
    int slot = 4;
    for (const std::string& param : params) select.Bind(slot++, param);
    select.Bind(slot, static_cast<int64_t>(k));
    hits.clear();
    int rc;
    while ((rc = select.Step()) == SQLITE_ROW) {
      // FTS5's bm25() is lower-is-better; flip it so higher is better.
      hits.push_back({select.Int(0), select.Text(1), select.Text(5),
                      static_cast<int>(select.Int(2)), select.Text(3),
                      -select.Double(4)});
    }
    if (rc != SQLITE_DONE) {
      return absl::InternalError(
          absl::StrCat("sqlite: ", sqlite3_errmsg(lease.db())));
    }
    if (static_cast<int>(hits.size()) == k) break;
  }
  return hits;
}

std::vector<FusedHit> ReciprocalRankFusion(
    const std::vector<std::vector<int64_t>>& ranked_lists, double k) {
  std::map<int64_t, double> votes;
  for (const std::vector<int64_t>& list : ranked_lists) {
    for (size_t rank = 0; rank < list.size(); ++rank) {
      votes[list[rank]] += 1.0 / (k + static_cast<double>(rank + 1));
    }
  }
  std::vector<FusedHit> fused;
  for (const auto& [id, score] : votes) fused.push_back({id, score});
  std::stable_sort(
      fused.begin(), fused.end(),
      [](const FusedHit& a, const FusedHit& b) { return a.score > b.score; });
  return fused;
}

}  // namespace arbiter::retrieval
