#pragma once

// The whole `arbiter` command line on CLI11: every command with its flags,
// help and example. CLI11 reports parse errors by exception; Parse catches
// them, and nothing else does. A parse ends in one of three ways: a command
// to run, help to print (exit 0), or a one-line usage error (exit 2) that
// names what is wrong and, for an unknown flag, the valid ones.
//
//   int main(int argc, char** argv) {
//     arbiter::cli::CommandLine command_line;
//     return command_line.Main(argc, argv);
//   }

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gateway/cli/commands.h"

namespace CLI {
class App;
}  // namespace CLI

namespace arbiter::cli {

class CommandLine final {
 public:
  CommandLine();
  ~CommandLine();

  CommandLine(const CommandLine&) = delete;
  CommandLine& operator=(const CommandLine&) = delete;

  enum class Outcome { kRun, kHelp, kUsageError };
  struct Parsed {
    Outcome outcome;
    // kHelp: the help; kUsageError: "arbiter infer: TEXT is required (see
    // arbiter infer --help)", one line without its newline.
    std::string text;
  };

  // Parses once; argv[0] is the program, as main gets it. "arbiter help
  // [COMMAND...]" is "arbiter [COMMAND...] --help".
  [[nodiscard]] Parsed Parse(const std::vector<std::string>& argv);

  // After a kRun parse: the command chosen ("index add") and every flag.
  [[nodiscard]] const std::string& command() const { return command_; }
  [[nodiscard]] const Flags& flags() const { return flags_; }

  // Runs the command of a kRun parse; its exit code.
  int Run();

  // Parse, then print the help to stdout (0), the usage error to stderr (2),
  // or run the command.
  int Main(int argc, char** argv);

 private:
  struct Command {
    CLI::App* app;
    std::function<int()> run;
  };
  void Add(CLI::App* app, std::function<int()> run);
  // The command's path below `arbiter`: "index add".
  static std::string PathOf(const CLI::App& app);

  Flags flags_;
  std::unique_ptr<CLI::App> app_;
  std::vector<Command> commands_;
  std::string command_;
  std::function<int()> run_;
};

}  // namespace arbiter::cli
