#include "gateway/cli/command_line.h"

#include <algorithm>
#include <exception>
#include <iostream>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "gateway/cli/client.h"
#include "gateway/cli/flags.h"

namespace arbiter::cli {
namespace {

constexpr char kDescription[] =
    "arbiter: an inference gateway that picks, per request, a prompted, "
    "fine-tuned\nor RAG route from live cost and accuracy figures.";

constexpr char kFooter[] =
    "`arbiter COMMAND --help` shows a command's flags, their defaults and an "
    "example.\n`--` ends the flags: `arbiter infer -- -h` sends \"-h\".";

constexpr char kServing[] = "Serving";
constexpr char kClients[] =
    "Clients of a running gateway (`arbiter serve`; --target ADDR, default "
    "127.0.0.1:50051)";
constexpr char kOffline[] = "Offline (no gateway needed)";

// Flags as "--name X  what it is (default: 50)": CLI11 writes the default
// as "--name X=50", which reads as part of the syntax.
class HelpFormatter final : public CLI::Formatter {
 public:
  HelpFormatter() {
    column_width(36);
    label("SUBCOMMAND", "COMMAND");
    label("SUBCOMMANDS", "COMMANDS");
    label("Positionals", "Arguments");
  }

  std::string make_option_opts(const CLI::Option* option) const override {
    if (option->get_positional() || option->get_type_size() == 0) return "";
    std::string opts = absl::StrCat(" ", option->get_type_name());
    if (option->get_expected_max() > 1) absl::StrAppend(&opts, "...");
    return opts;
  }

  // One blank line between groups of flags, where CLI11 leaves two.
  std::string make_help(const CLI::App* app, std::string name,
                        CLI::AppFormatMode mode) const override {
    std::string help = CLI::Formatter::make_help(app, std::move(name), mode);
    for (size_t at; (at = help.find("\n\n\n")) != std::string::npos;) {
      help.erase(at, 1);
    }
    return help;
  }

  // In a list of commands, the first line of each description.
  std::string make_subcommand(const CLI::App* command) const override {
    const std::string& description = command->get_description();
    return absl::StrFormat(
        "  %-*s%s\n", static_cast<int>(get_column_width()) - 2,
        command->get_name(), description.substr(0, description.find('\n')));
  }

  std::string make_option_desc(const CLI::Option* option) const override {
    std::string description = option->get_description();
    if (option->get_required()) {
      absl::StrAppend(&description, " (required)");
    } else if (!option->get_default_str().empty()) {
      absl::StrAppend(&description, " (default: ", option->get_default_str(),
                      ")");
    }
    return description;
  }
};

// "-5" and "-.5" are values, not flags.
bool LooksLikeFlag(const std::string& argument) {
  if (argument.size() < 2 || argument[0] != '-') return false;
  return !(absl::ascii_isdigit(argument[1]) || argument[1] == '.');
}

// Edits between two short words, for "did you mean".
size_t Distance(absl::string_view a, absl::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1,
                         diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// " (did you mean --task?)": the closest candidate within a few edits, else
// the few that contain the word ("--epochs": --training-epochs), else "".
std::string Suggestion(absl::string_view word,
                       const std::vector<std::string>& candidates) {
  const std::string* best = nullptr;
  size_t best_distance = std::max<size_t>(2, word.size() / 4) + 1;
  for (const std::string& candidate : candidates) {
    const size_t distance = Distance(word, candidate);
    if (distance < best_distance) {
      best = &candidate;
      best_distance = distance;
    }
  }
  if (best != nullptr) return absl::StrCat(" (did you mean ", *best, "?)");
  const absl::string_view bare =
      word.substr(std::min(word.find_first_not_of('-'), word.size()));
  std::vector<std::string> containing;
  for (const std::string& candidate : candidates) {
    if (bare.size() >= 3 && absl::StrContains(candidate, bare)) {
      containing.push_back(candidate);
    }
  }
  if (containing.empty() || containing.size() > 3) return "";
  return absl::StrCat(" (did you mean ", absl::StrJoin(containing, " or "),
                      "?)");
}

// "--target", "--task", ...: the flags of `app`, help aside.
std::vector<std::string> FlagNames(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::Option* option : app.get_options()) {
    if (option->get_positional() || option == app.get_help_ptr()) continue;
    for (const std::string& name : option->get_lnames()) {
      names.push_back(absl::StrCat("--", name));
    }
    for (const std::string& name : option->get_snames()) {
      names.push_back(absl::StrCat("-", name));
    }
  }
  return names;
}

std::vector<std::string> CommandNames(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::App* command : app.get_subcommands({})) {
    if (!command->get_name().empty()) names.push_back(command->get_name());
  }
  return names;
}

bool HasFlag(const CLI::App& app, const std::string& flag) {
  const std::vector<std::string> names = FlagNames(app);
  return std::find(names.begin(), names.end(), flag) != names.end();
}

// The commands chosen, `arbiter` first: arbiter, index, add.
std::vector<const CLI::App*> ChosenChain(const CLI::App& root) {
  std::vector<const CLI::App*> chain = {&root};
  for (;;) {
    const auto chosen = chain.back()->get_subcommands();
    if (chosen.empty()) return chain;
    chain.push_back(chosen.front());
  }
}

}  // namespace

std::string CommandLine::PathOf(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::App* at = &app; at != nullptr && at->get_parent() != nullptr;
       at = at->get_parent()) {
    names.push_back(at->get_name());
  }
  std::reverse(names.begin(), names.end());
  return absl::StrJoin(names, " ");
}

namespace {

// "arbiter index add: <message> (see arbiter index add --help)".
std::string UsageLine(const std::string& path, absl::string_view message) {
  const std::string command =
      path.empty() ? std::string("arbiter") : absl::StrCat("arbiter ", path);
  return absl::StrCat(command, ": ", message, " (see ", command, " --help)");
}

}  // namespace

CommandLine::CommandLine() : app_(std::make_unique<CLI::App>(kDescription)) {
  CLI::App& arbiter = *app_;
  arbiter.name("arbiter");
  arbiter.formatter(std::make_shared<HelpFormatter>());
  arbiter.footer(kFooter);
  arbiter.require_subcommand(1);
  // A flag given twice takes its last value, so a later flag overrides.
  arbiter.option_defaults()->multi_option_policy(
      CLI::MultiOptionPolicy::TakeLast);

  auto in = [](CLI::App* command, const char* group) {
    command->group(group);
    return command;
  };
  Add(in(AddServeCommand(arbiter, flags_.serve), kServing),
      [this] { return RunServe(flags_.serve); });
  Add(in(AddCheckConfigCommand(arbiter, flags_.check_config), kServing),
      [this] { return RunCheckConfig(flags_.check_config); });
  Add(in(AddSimServerCommand(arbiter, flags_.sim_server), kServing),
      [this] { return RunSimServer(flags_.sim_server); });
  Add(in(AddInferCommand(arbiter, flags_.infer), kClients),
      [this] { return RunInfer(flags_.infer); });
  Add(in(AddFeedbackCommand(arbiter, flags_.feedback), kClients),
      [this] { return RunFeedback(flags_.feedback); });
  Add(in(AddStatsCommand(arbiter, flags_.stats), kClients),
      [this] { return RunStats(flags_.stats); });
  Add(in(AddLoadgenCommand(arbiter, flags_.loadgen), kClients),
      [this] { return RunLoadgen(flags_.loadgen); });
  IndexCommands index =
      AddIndexCommands(arbiter, flags_.index_add, flags_.index_search,
                       flags_.index_stats, flags_.index_eval);
  in(index.add->get_parent(), kClients);
  Add(index.add, [this] { return RunIndexAdd(flags_.index_add); });
  Add(index.search, [this] { return RunIndexSearch(flags_.index_search); });
  Add(index.stats, [this] { return RunIndexStats(flags_.index_stats); });
  Add(index.eval, [this] { return RunIndexEval(flags_.index_eval); });
  CLI::App* show = AddExperimentShowCommand(arbiter, flags_.experiment_show);
  in(show->get_parent(), kClients);
  Add(show, [this] { return RunExperimentShow(flags_.experiment_show); });
  Add(in(AddEconomicsCommand(arbiter, flags_.economics), kClients),
      [this] { return RunEconomics(flags_.economics); });
  Add(in(AddReloadCommand(arbiter, flags_.reload), kClients),
      [this] { return RunReload(flags_.reload); });
  Add(in(AddReplayCommand(arbiter, flags_.replay), kOffline),
      [this] { return RunReplay(flags_.replay); });
  Add(in(AddBreakevenCommand(arbiter, flags_.breakeven), kOffline),
      [this] { return RunBreakeven(flags_.breakeven); });
  StateCommands state = AddStateCommands(
      arbiter, flags_.state_export, flags_.state_import, flags_.state_reset);
  in(state.export_->get_parent(), kOffline);
  Add(state.export_, [this] { return RunStateExport(flags_.state_export); });
  Add(state.import, [this] { return RunStateImport(flags_.state_import); });
  Add(state.reset, [this] { return RunStateReset(flags_.state_reset); });
  CLI::App* keys_create = AddKeysCreateCommand(arbiter, flags_.keys_create);
  in(keys_create->get_parent(), kOffline);
  Add(keys_create, [this] { return RunKeysCreate(flags_.keys_create); });
}

CommandLine::~CommandLine() = default;

void CommandLine::Add(CLI::App* app, std::function<int()> run) {
  // Commands under a command (index add) list under "Commands".
  if (app->get_parent() != app_.get()) app->group("Commands");
  commands_.push_back({app, std::move(run)});
}

CommandLine::Parsed CommandLine::Parse(const std::vector<std::string>& argv) {
  std::vector<std::string> words = argv;
  if (words.empty()) words.push_back("arbiter");
  if (words.size() >= 2 && words[1] == "help") {
    words.erase(words.begin() + 1);
    words.push_back("--help");
  }
  std::vector<const char*> c_words;
  for (const std::string& word : words) c_words.push_back(word.c_str());

  try {
    app_->parse(static_cast<int>(c_words.size()), c_words.data());
  } catch (const CLI::CallForHelp&) {
    return {Outcome::kHelp, app_->help()};
  } catch (const CLI::CallForAllHelp&) {
    return {Outcome::kHelp, app_->help("", CLI::AppFormatMode::All)};
  } catch (const CLI::ParseError& error) {
    const std::vector<const CLI::App*> chain = ChosenChain(*app_);
    // Words CLI11 could not place come first: they explain what follows
    // (a flag before its command leaves the command without it).
    for (size_t i = 0; i < chain.size(); ++i) {
      const CLI::App& at = *chain[i];
      const std::vector<std::string> left = at.remaining();
      if (left.empty()) continue;
      const std::string& word = left.front();
      const std::string path = PathOf(at);
      if (LooksLikeFlag(word)) {
        const std::string flag = word.substr(0, word.find('='));
        for (size_t j = i + 1; j < chain.size(); ++j) {
          if (HasFlag(*chain[j], flag)) {
            return {Outcome::kUsageError,
                    UsageLine(path, absl::StrCat(flag, " belongs after \"",
                                                 chain[j]->get_name(), "\""))};
          }
        }
        const std::vector<std::string> flags = FlagNames(at);
        std::string valid =
            flags.empty()
                ? absl::StrCat("it takes no flags", CommandNames(at).empty()
                                                        ? ""
                                                        : " before its command")
                : absl::StrCat("its flags: ", absl::StrJoin(flags, ", "));
        return {Outcome::kUsageError,
                UsageLine(path,
                          absl::StrCat("unknown flag ", flag,
                                       Suggestion(flag, flags), "; ", valid))};
      }
      const std::vector<std::string> commands = CommandNames(at);
      if (i + 1 == chain.size() && !commands.empty()) {
        return {Outcome::kUsageError,
                UsageLine(path, absl::StrCat("unknown command \"", word, "\"",
                                             Suggestion(word, commands),
                                             "; the commands: ",
                                             absl::StrJoin(commands, ", ")))};
      }
      return {Outcome::kUsageError,
              UsageLine(path, absl::StrCat("unexpected argument \"", word,
                                           "\" (quote a text with spaces)"))};
    }
    const CLI::App& leaf = *chain.back();
    std::string message = error.what();
    if (dynamic_cast<const CLI::RequiredError*>(&error) != nullptr &&
        message == "A subcommand is required") {
      message = absl::StrCat("a command is required: ",
                             absl::StrJoin(CommandNames(leaf), ", "));
    } else if (dynamic_cast<const CLI::ArgumentMismatch*>(&error) != nullptr) {
      // "--task: 1 required TEXT missing".
      message =
          absl::StrCat(message.substr(0, message.find(':')), " needs a value");
    }
    return {Outcome::kUsageError, UsageLine(PathOf(leaf), message)};
  } catch (const CLI::Error& error) {
    return {Outcome::kUsageError, UsageLine("", error.what())};
  }

  const CLI::App* leaf = ChosenChain(*app_).back();
  for (const Command& command : commands_) {
    if (command.app == leaf) {
      command_ = PathOf(*leaf);
      run_ = command.run;
      return {Outcome::kRun, ""};
    }
  }
  // CLI11 requires a command under each level, so this is not reached.
  return {Outcome::kUsageError,
          UsageLine(PathOf(*leaf), "a command is required")};
}

int CommandLine::Run() { return run_ ? run_() : kUsageExitCode; }

int CommandLine::Main(int argc, char** argv) {
  const Parsed parsed = Parse(std::vector<std::string>(argv, argv + argc));
  switch (parsed.outcome) {
    case Outcome::kHelp:
      std::cout << parsed.text << std::flush;
      return 0;
    case Outcome::kUsageError:
      std::cerr << parsed.text << "\n";
      return kUsageExitCode;
    case Outcome::kRun:
      break;
  }
  // The commands report errors as statuses; this is the last stop for an
  // exception from a library, so it ends with a message, not an abort.
  try {
    return Run();
  } catch (const std::exception& e) {
    return Fail(absl::StrCat(command_, ": unexpected error: ", e.what()));
  }
}

}  // namespace arbiter::cli
