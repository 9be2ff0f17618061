#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "arbiter/v1/state.pb.h"

namespace arbiter::state {

// The layout of the file (its meta table) and of GatewayState.format_version.
inline constexpr int kStateFormatVersion = 1;
// The secret that GatewayState.request_id_key exports and imports.
inline constexpr char kRequestIdKeySecret[] = "request_id_key";

// What changed since the last batch. Aggregates replace the stored row of
// their key (rows equal to what was last written are skipped); entries are
// appended.
struct StateBatch {
  std::vector<v1::RouteTaskState> route_tasks;          // Key: route, task.
  std::vector<v1::RouteIdentity> routes;                // Key: route.
  std::vector<v1::BudgetState> budgets;                 // Key: key.
  std::vector<v1::ExperimentArmState> experiment_arms;  // Key: experiment, arm.
  std::optional<v1::EconomicsState> economics;          // Replaces it whole.
  // Appended; a strategy keeps its latest context_capacity[key] entries.
  std::vector<v1::ContextEntry> context_entries;
  std::vector<std::pair<v1::StrategyKey, int>> context_capacity;
  std::vector<v1::JudgedRequest> judged;  // Inserted; a repeat is ignored.
};

struct StateStoreOptions {
  std::string path;
  // The writer commits a batch this often.
  absl::Duration flush_interval = absl::Milliseconds(100);
  // Judged ids issued before now - this are deleted as batches are written.
  absl::Duration judged_retention = absl::Hours(24 * 7);
  // Where the writer's failures go, a line each; empty: stderr.
  std::function<void(absl::string_view)> log = nullptr;
};

struct WriterStats {
  int64_t batches = 0;   // Transactions committed.
  int64_t failures = 0;  // Batches that failed (kept and retried).
  // Rows inserted, replaced or deleted by committed batches; rows equal to
  // the stored ones are skipped, so they are not counted.
  int64_t rows_written = 0;
  absl::Duration last_commit;
};

// The durable state of one gateway in a SQLite file (WAL): a batch is one
// transaction, so a crash loses at most the batch being collected and never
// leaves the file half-written. One process at a time: Open takes a lock
// on the file for as long as the store is open. Thread-safe.
//
//   auto store = StateStore::Open({.path = "data/state.db"});
//   auto state = (*store)->Load(absl::Now() - window);  // Before serving.
//   (*store)->StartWriter([&] { return CollectChanges(); });
//   ...
//   (*store)->Close();  // Collects and writes once more.
class StateStore final {
 public:
  // Creates the file (and its folder, mode 0700; the file 0600) if missing.
  // FAILED_PRECONDITION naming the path when another process (or another
  // StateStore of this one) has it open; INVALID_ARGUMENT naming the path
  // for a file that is not a state store or of a newer format.
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(
      StateStoreOptions options);
  ~StateStore();  // Close() if not closed.

  // Everything in the file at `path`, read without its lock and without
  // writing: a gateway may be serving from it (a reader sees its last
  // commit). NOT_FOUND when there is no file; INVALID_ARGUMENT as Open.
  [[nodiscard]] static absl::StatusOr<v1::GatewayState> ReadFile(
      const std::string& path, absl::Time judged_since = absl::InfinitePast());

  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  // Everything stored (context entries oldest first); judged ids issued
  // before judged_since are left out. Rows loaded are not written again
  // until they change.
  [[nodiscard]] absl::StatusOr<v1::GatewayState> Load(
      absl::Time judged_since = absl::InfinitePast()) const;

  // The secret of that name, made of `bytes` random bytes (OpenSSL's
  // RAND_bytes) and stored at first call; later calls return it as stored.
  // The one named kRequestIdKeySecret is exported and imported.
  [[nodiscard]] absl::StatusOr<std::string> GetOrCreateSecret(
      absl::string_view name, size_t bytes);

  // From now on a thread calls `collect` every flush_interval and commits
  // what it returns; `collect` runs on that thread only, and an exception
  // from it is logged and counted. A failed commit is logged once per kind
  // of error, counted, and its content is kept and merged into the next
  // batch (newer aggregates win). Once only.
  void StartWriter(absl::AnyInvocable<StateBatch()> collect);

  // Commits one batch now, on the caller's thread; fails as the writer's
  // commits do (the batch is kept for the next).
  absl::Status Write(const StateBatch& batch);

  // Stops the writer after one last collect and commit, closes the file and
  // releases its lock; the status of that commit. Idempotent; afterwards
  // the other calls fail with FAILED_PRECONDITION.
  absl::Status Close();

  // Replaces everything stored with `state` (import), in one transaction,
  // its written_unix_micros and request_id_key included. INVALID_ARGUMENT
  // for a format_version other than kStateFormatVersion or a key given
  // twice ("route_tasks[3]: route \"a\", task \"t\" appears more than
  // once").
  absl::Status Replace(const v1::GatewayState& state);

  // Deletes learned statistics (route_tasks rows, and the context entries
  // naming the route) of the route and task given; empty means all. The
  // task does not narrow context entries, which are kept per route.
  // What was deleted, for people: "3 route/task rows, 120 context entries"
  // (and saying so when the task was given or nothing matched).
  absl::StatusOr<std::string> ResetStatistics(absl::string_view route,
                                              absl::string_view task);

  [[nodiscard]] WriterStats writer_stats() const;
  [[nodiscard]] const std::string& path() const;

 private:
  class Impl;
  explicit StateStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace arbiter::state
