// state export | import | reset: the state file, not through a gateway.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "gateway/cli/client.h"
#include "gateway/cli/commands.h"
#include "gateway/cli/flags.h"
#include "gateway/config.h"
#include "google/protobuf/util/json_util.h"
#include "state/state_store.h"

namespace arbiter::cli {
namespace {

// --config FILE or --state PATH, one of them.
void AddStateFileFlags(CLI::App& command, StateFileFlags& flags) {
  CLI::Option* config =
      command
          .add_option("--config", flags.config,
                      "the gateway's config; its state.path is the file")
          ->type_name("FILE");
  command.add_option("--state", flags.state, "the state file itself")
      ->type_name("PATH")
      ->excludes(config);
}

// The state file the flags name. INVALID_ARGUMENT naming the config when it
// has no state.path.
absl::StatusOr<std::string> StatePath(const StateFileFlags& flags) {
  if (!flags.state.empty()) return flags.state;
  auto loaded = LoadConfigFile(flags.config);
  if (!loaded.ok()) return loaded.status();
  if (loaded->config.state().path().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        flags.config,
        " has no state.path: that gateway keeps its state in memory only "
        "(set state.path, or give the file with --state PATH)"));
  }
  return loaded->config.state().path();
}

// Exit code 2 unless the flags name a file.
bool NamesAFile(const StateFileFlags& flags) {
  return !flags.config.empty() || !flags.state.empty();
}

constexpr char kNoFile[] =
    "which state file? Give --state PATH, or --config FILE whose state.path "
    "names it";

std::string CountOf(int count, absl::string_view one, absl::string_view many) {
  return absl::StrCat(count, " ", count == 1 ? one : many);
}

std::string Describe(const v1::GatewayState& state) {
  return absl::StrCat(
      CountOf(state.route_tasks_size(), "route/task row", "route/task rows"),
      ", ", CountOf(state.routes_size(), "route", "routes"), ", ",
      CountOf(state.budgets_size(), "budget", "budgets"), ", ",
      CountOf(state.experiment_arms_size(), "experiment arm",
              "experiment arms"),
      ", ", state.has_economics() ? "the economics ledger" : "no ledger", ", ",
      CountOf(state.context_entries_size(), "context entry", "context entries"),
      ", ", CountOf(state.judged_size(), "judged id", "judged ids"),
      state.request_id_key().empty() ? "" : ", the request-id key");
}

// Writes `text` to `path` as a whole, mode 0600 (it holds the key): a
// temporary file beside it, renamed over it once complete.
absl::Status WritePrivateFile(const std::string& path,
                              const std::string& text) {
  const std::string temporary = absl::StrCat(path, ".tmp.", getpid());
  const int fd =
      open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = errno;
      close(fd);
      unlink(temporary.c_str());
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot write ", path, ": ", std::strerror(error)));
    }
    written += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0 || close(fd) != 0 ||
      rename(temporary.c_str(), path.c_str()) != 0) {
    const int error = errno;
    unlink(temporary.c_str());
    return absl::UnavailableError(
        absl::StrCat("cannot write ", path, ": ", std::strerror(error)));
  }
  return absl::OkStatus();
}

}  // namespace

StateCommands AddStateCommands(CLI::App& arbiter, StateExportFlags& export_,
                               StateImportFlags& import,
                               StateResetFlags& reset) {
  CLI::App* state = arbiter.add_subcommand(
      "state",
      "Back up, move or reset what a gateway learned and accounted.\nWorks "
      "on the state file (the config's state.path), not through a gateway.");
  state->require_subcommand(1);
  state->footer(
      "Example:\n  arbiter state export --config arbiter.yaml --output "
      "backup.json\n`arbiter state COMMAND --help` shows a command's flags.");
  StateCommands commands;

  commands.export_ = AddCommand(
      *state, "export",
      "Write the whole state file as JSON.\nStatistics, contextual memory, "
      "budgets, experiments, the economics ledger,\njudged ids and the "
      "request-id key (keep the output private). Works while a\ngateway "
      "serves from the file: it reads the last commit.",
      "arbiter state export --config arbiter.yaml --output backup.json");
  AddStateFileFlags(*commands.export_, export_.file);
  commands.export_
      ->add_option("--output", export_.output,
                   "where to write the JSON (created mode 0600)")
      ->type_name("FILE")
      ->default_str("stdout");

  commands.import = AddCommand(
      *state, "import",
      "Replace the state file's content with an export.\nCreates the file "
      "if missing. Stop the gateway that serves from it first.",
      "arbiter state import --state data/state.db backup.json");
  AddStateFileFlags(*commands.import, import.file);
  commands.import
      ->add_option("FILE", import.input, "the JSON that `state export` wrote")
      ->required();

  commands.reset = AddCommand(
      *state, "reset",
      "Delete learned statistics, so a route starts over.\nDeletes the "
      "route/task statistics of --route and --task (every one when\nnot "
      "given) and the contextual memory of the route; the ledger and\n"
      "experiments stay. Stop the gateway that serves from the file first.",
      "arbiter state reset --config arbiter.yaml --route tuned");
  AddStateFileFlags(*commands.reset, reset.file);
  commands.reset->add_option("--route", reset.route, "the route")
      ->type_name("R")
      ->default_str("every route");
  commands.reset->add_option("--task", reset.task, "the task")
      ->type_name("T")
      ->default_str("every task");
  return commands;
}

int RunStateExport(const StateExportFlags& flags) {
  if (!NamesAFile(flags.file)) return UsageError("state export", kNoFile);
  auto path = StatePath(flags.file);
  if (!path.ok()) return Fail(path.status());
  auto state = state::StateStore::ReadFile(*path);
  if (!state.ok()) return Fail(state.status());
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(*state, &json, options)
           .ok()) {
    return Fail(absl::StrCat("state file ", *path,
                             ": cannot write its content as JSON"));
  }
  if (flags.output.empty()) {
    std::cout << json << std::flush;
    return std::cout ? 0 : Fail("cannot write to stdout");
  }
  if (absl::Status s = WritePrivateFile(flags.output, json); !s.ok()) {
    return Fail(s);
  }
  std::cerr << "exported " << *path << " to " << flags.output << ": "
            << Describe(*state) << "\n";
  return 0;
}

int RunStateImport(const StateImportFlags& flags) {
  if (!NamesAFile(flags.file)) return UsageError("state import", kNoFile);
  auto path = StatePath(flags.file);
  if (!path.ok()) return Fail(path.status());
  std::ifstream in(flags.input, std::ios::binary);
  if (!in) {
    return Fail(absl::NotFoundError(
        absl::StrCat("cannot read ", flags.input, ": ", std::strerror(errno))));
  }
  std::ostringstream text;
  text << in.rdbuf();
  v1::GatewayState state;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  if (auto parsed = google::protobuf::util::JsonStringToMessage(
          text.str(), &state, options);
      !parsed.ok()) {
    return Fail(absl::StrCat(
        flags.input, ": not a state export: ", std::string(parsed.message())));
  }
  if (state.format_version() != state::kStateFormatVersion) {
    return Fail(absl::StrCat(flags.input, ": format_version: expected ",
                             state::kStateFormatVersion, ", got ",
                             state.format_version(),
                             state.format_version() == 0 ? " (missing)" : ""));
  }
  auto store = state::StateStore::Open({.path = *path});
  if (!store.ok()) return Fail(store.status());
  if (absl::Status s = (*store)->Replace(state); !s.ok()) {
    return Fail(absl::StrCat(flags.input, ": ", s.message()));
  }
  if (absl::Status s = (*store)->Close(); !s.ok()) return Fail(s);
  std::cout << "imported " << flags.input << " into " << *path << ": "
            << Describe(state) << "\n";
  return 0;
}

int RunStateReset(const StateResetFlags& flags) {
  if (!NamesAFile(flags.file)) return UsageError("state reset", kNoFile);
  auto path = StatePath(flags.file);
  if (!path.ok()) return Fail(path.status());
  struct stat st;
  if (stat(path->c_str(), &st) != 0) {
    return Fail(absl::StrCat("state file ", *path, " does not exist"));
  }
  auto store = state::StateStore::Open({.path = *path});
  if (!store.ok()) return Fail(store.status());
  auto deleted = (*store)->ResetStatistics(flags.route, flags.task);
  if (!deleted.ok()) return Fail(deleted.status());
  if (absl::Status s = (*store)->Close(); !s.ok()) return Fail(s);
  std::cout << "reset " << *path << ": deleted " << *deleted << "\n";
  return 0;
}

}  // namespace arbiter::cli
