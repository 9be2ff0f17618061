#pragma once

// The `arbiter` subcommands. Each has a struct of its flags (the values a
// parse leaves there, defaults as its help shows them), an Add*Command that
// defines it on the command line (flags, help, example), and a Run* that
// runs it and returns the process exit code. CommandLine puts them together.

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/civil_time.h"
#include "arbiter/v1/gateway.pb.h"
#include "gateway/cli/client.h"
#include "policy/replay.h"

namespace CLI {
class App;
}  // namespace CLI

namespace arbiter::cli {

struct ServeFlags {
  std::string config;          // Empty: the embedded quickstart config.
  std::string grpc_listen;     // Empty: the config's server.grpc_listen.
  std::string metrics_listen;  // Empty: the config's server.metrics_listen.
  std::string http_listen;     // Empty: the config's server.http_listen.
  std::string state;           // Empty: the config's state.path.
  bool no_state = false;       // State in memory only, whatever the config.
};

struct CheckConfigFlags {
  std::string file;
};

struct SimServerFlags {
  std::string listen = "127.0.0.1:8000";
  std::string config;   // Empty: the embedded quickstart config.
  std::string backend;  // Empty: the config's first sim backend.
  int embedding_dim = 384;
};

struct InferFlags {
  std::string target = kDefaultTarget;
  std::string api_key_file;  // Empty: $ARBITER_API_KEY, if set.
  std::string task;
  std::string route;
  std::string unit_id;
  double max_cost_usd = 0;
  double min_accuracy = 0;
  int max_tokens = 0;
  double timeout_seconds = 60;
  std::string text;
};

struct FeedbackFlags {
  std::string target = kDefaultTarget;
  std::string api_key_file;  // Empty: $ARBITER_API_KEY, if set.
  std::string request_id;
  bool correct = false;
  bool incorrect = false;
  std::optional<double> score;
};

struct StatsFlags {
  std::string target = kDefaultTarget;
  std::string api_key_file;  // Empty: $ARBITER_API_KEY, if set.
  std::string route;         // Empty: every route.
};

struct LoadgenFlags {
  std::string target = kDefaultTarget;
  std::string api_key_file;  // Empty: $ARBITER_API_KEY, if set.
  std::string dataset;       // Empty: the embedded quickstart question set.
  double qps = 50;
  std::string duration = "60s";
  bool feedback = false;
  std::string task;  // Empty: every task.
  int seed = 1;
  int units = 1000;
};

struct IndexAddFlags {
  std::string target = kDefaultTarget;
  std::string api_key_file;  // Empty: $ARBITER_API_KEY, if set.
  std::string collection;
  std::vector<std::string> paths;
};

struct IndexSearchFlags {
  std::string target = kDefaultTarget;
  std::string api_key_file;  // Empty: $ARBITER_API_KEY, if set.
  std::string collection;
  std::string mode;  // Empty: the gateway's configured search.
  int k = 5;
  std::string query;
};

struct IndexStatsFlags {
  std::string target = kDefaultTarget;
  std::string api_key_file;  // Empty: $ARBITER_API_KEY, if set.
  std::string collection;
};

struct IndexEvalFlags {
  std::string target = kDefaultTarget;
  std::string api_key_file;  // Empty: $ARBITER_API_KEY, if set.
  std::string collection;
  std::string queries;
  std::string qrels;
  std::string format;  // Empty: beir for a .jsonl --queries, else trec.
};

struct ExperimentShowFlags {
  std::string target = kDefaultTarget;
  std::string api_key_file;  // Empty: $ARBITER_API_KEY, if set.
  std::string name;
};

struct EconomicsFlags {
  std::string target = kDefaultTarget;
  std::string api_key_file;  // Empty: $ARBITER_API_KEY, if set.
  std::string route;         // Empty: every route.
  bool json = false;
};

struct ReloadFlags {
  std::string target = kDefaultTarget;
  std::string api_key_file;  // Empty: $ARBITER_API_KEY, if set.
};

struct ReplayFlags {
  std::string log;
  std::string config;
  int seed = 1;
  bool json = false;
};

struct BreakevenFlags {
  // The numeric flags given, by name without "--": {"base-accuracy", 0.82}.
  std::map<std::string, double> values;
  std::string start;  // YYYY-MM-DD; empty: today.
  bool json = false;
};

// The state file of `state export|import|reset`: one of the two.
struct StateFileFlags {
  std::string config;  // A config whose state.path names it.
  std::string state;   // The file itself.
};

struct StateExportFlags {
  StateFileFlags file;
  std::string output;  // Empty: stdout.
};

struct StateImportFlags {
  StateFileFlags file;
  std::string input;
};

struct StateResetFlags {
  StateFileFlags file;
  std::string route;  // Empty: every route.
  std::string task;   // Empty: every task.
};

struct KeysCreateFlags {
  std::string tenant;  // Empty with --admin.
  bool admin = false;
  std::string label;
  std::string expires_in;  // Empty: never expires.
};

// Every command's flags, for one parse.
struct Flags {
  ServeFlags serve;
  CheckConfigFlags check_config;
  SimServerFlags sim_server;
  InferFlags infer;
  FeedbackFlags feedback;
  StatsFlags stats;
  LoadgenFlags loadgen;
  IndexAddFlags index_add;
  IndexSearchFlags index_search;
  IndexStatsFlags index_stats;
  IndexEvalFlags index_eval;
  ExperimentShowFlags experiment_show;
  EconomicsFlags economics;
  ReloadFlags reload;
  ReplayFlags replay;
  BreakevenFlags breakeven;
  StateExportFlags state_export;
  StateImportFlags state_import;
  StateResetFlags state_reset;
  KeysCreateFlags keys_create;
};

// Each defines its subcommand of `arbiter`, binding its flags to `flags`,
// and returns it; for `index` and `experiment`, the commands under them
// ("index add", "experiment show").
CLI::App* AddServeCommand(CLI::App& arbiter, ServeFlags& flags);
CLI::App* AddCheckConfigCommand(CLI::App& arbiter, CheckConfigFlags& flags);
CLI::App* AddSimServerCommand(CLI::App& arbiter, SimServerFlags& flags);
CLI::App* AddInferCommand(CLI::App& arbiter, InferFlags& flags);
CLI::App* AddFeedbackCommand(CLI::App& arbiter, FeedbackFlags& flags);
CLI::App* AddStatsCommand(CLI::App& arbiter, StatsFlags& flags);
CLI::App* AddLoadgenCommand(CLI::App& arbiter, LoadgenFlags& flags);
struct IndexCommands {
  CLI::App* add;
  CLI::App* search;
  CLI::App* stats;
  CLI::App* eval;
};
IndexCommands AddIndexCommands(CLI::App& arbiter, IndexAddFlags& add,
                               IndexSearchFlags& search, IndexStatsFlags& stats,
                               IndexEvalFlags& eval);
CLI::App* AddExperimentShowCommand(CLI::App& arbiter,
                                   ExperimentShowFlags& flags);
CLI::App* AddEconomicsCommand(CLI::App& arbiter, EconomicsFlags& flags);
CLI::App* AddReloadCommand(CLI::App& arbiter, ReloadFlags& flags);
CLI::App* AddReplayCommand(CLI::App& arbiter, ReplayFlags& flags);
CLI::App* AddBreakevenCommand(CLI::App& arbiter, BreakevenFlags& flags);
struct StateCommands {
  CLI::App* export_;
  CLI::App* import;
  CLI::App* reset;
};
StateCommands AddStateCommands(CLI::App& arbiter, StateExportFlags& export_,
                               StateImportFlags& import,
                               StateResetFlags& reset);

// `keys create`, under `keys`.
CLI::App* AddKeysCreateCommand(CLI::App& arbiter, KeysCreateFlags& flags);

int RunServe(const ServeFlags& flags);
int RunCheckConfig(const CheckConfigFlags& flags);
int RunSimServer(const SimServerFlags& flags);
int RunInfer(const InferFlags& flags);
int RunFeedback(const FeedbackFlags& flags);
int RunStats(const StatsFlags& flags);
int RunLoadgen(const LoadgenFlags& flags);
int RunIndexAdd(const IndexAddFlags& flags);
int RunIndexSearch(const IndexSearchFlags& flags);
int RunIndexStats(const IndexStatsFlags& flags);
int RunIndexEval(const IndexEvalFlags& flags);
int RunExperimentShow(const ExperimentShowFlags& flags);
int RunEconomics(const EconomicsFlags& flags);
int RunReload(const ReloadFlags& flags);
int RunReplay(const ReplayFlags& flags);
int RunBreakeven(const BreakevenFlags& flags);
int RunStateExport(const StateExportFlags& flags);
int RunStateImport(const StateImportFlags& flags);
int RunStateReset(const StateResetFlags& flags);
int RunKeysCreate(const KeysCreateFlags& flags);

// Parses the replay log: JSON Lines of {"id", "task", "prompt", "outcomes":
// {"<route>": {"correct": bool | "score": x, "input_tokens", "output_tokens",
// "latency_ms"}}}. INVALID_ARGUMENT naming the line and the field
// ("line 3: outcomes.small.input_tokens: expected an integer, got a
// string").
[[nodiscard]] absl::StatusOr<std::vector<policy::LoggedRequest>>
ParseOutcomeLog(absl::string_view jsonl);

// The documents of one file for `index add`: a .md/.txt/.markdown file is
// one document; a .jsonl file one {"id", "title", "text", "metadata"} object
// per line; other files none. INVALID_ARGUMENT naming the file, the line and
// the field.
[[nodiscard]] absl::StatusOr<std::vector<v1::RetrievalDocument>>
DocumentsOfFile(const std::string& path, absl::string_view content);

// What `arbiter breakeven` prints: a table, or JSON with --json; `today` is
// the default --start. INVALID_ARGUMENT naming the flag.
[[nodiscard]] absl::StatusOr<std::string> BreakevenOutput(
    const BreakevenFlags& flags, absl::CivilDay today);

}  // namespace arbiter::cli
