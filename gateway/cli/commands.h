#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/civil_time.h"
#include "policy/replay.h"

namespace arbiter::cli {

// Parses the replay log: JSON Lines of {"id", "task", "prompt", "outcomes":
// {"<route>": {"correct": bool | "score": x, "input_tokens", "output_tokens",
// "latency_ms"}}}. INVALID_ARGUMENT naming the line.
[[nodiscard]] absl::StatusOr<std::vector<policy::LoggedRequest>>
ParseOutcomeLog(absl::string_view jsonl);

// What `arbiter breakeven ARGS` prints: a table, JSON with --json, or the
// help with --help; `today` is the default --start. INVALID_ARGUMENT naming
// the flag.
[[nodiscard]] absl::StatusOr<std::string> BreakevenOutput(int argc, char** argv,
                                                          absl::CivilDay today);

// Each runs one `arbiter` subcommand on the arguments after its name and
// returns the process exit code.
int RunServe(int argc, char** argv);
int RunCheckConfig(int argc, char** argv);
int RunSimServer(int argc, char** argv);
int RunInfer(int argc, char** argv);
int RunFeedback(int argc, char** argv);
int RunStats(int argc, char** argv);
int RunLoadgen(int argc, char** argv);
int RunReplay(int argc, char** argv);
int RunExperiment(int argc, char** argv);
int RunIndex(int argc, char** argv);
int RunEconomics(int argc, char** argv);
int RunBreakeven(int argc, char** argv);

}  // namespace arbiter::cli
