#pragma once

// Building blocks for the subcommands' flags, on CLI11: value checks whose
// messages name the flag and the value ("--qps: must be > 0, got 0"), the
// --target flag every client of a running gateway shares, and usage errors
// found after parsing. CLI11 reports a bad value by exception; the checks
// here only return its message, and CommandLine catches the exception.
//
//   CLI::App* infer = AddCommand(arbiter, "infer", "One request.",
//                                "arbiter infer --task faq \"Hi\"");
//   AddTarget(*infer, flags.target);
//   infer->add_option("--max-tokens", flags.max_tokens, "...")
//       ->type_name("N")
//       ->check(Integer())
//       ->check(AtLeast(0));

#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/string_view.h"

namespace arbiter::cli {

// A finite number: "not a number: \"abc\"".
[[nodiscard]] CLI::Validator Number();
// An integer that fits an int: "not an integer: \"2.5\"".
[[nodiscard]] CLI::Validator Integer();
// Bounds on a number (checked after Number or Integer).
[[nodiscard]] CLI::Validator GreaterThan(double bound);
[[nodiscard]] CLI::Validator AtLeast(double bound);
[[nodiscard]] CLI::Validator Between(double low, double high);
// One of `choices`: "must be one of hybrid, keyword, vector; got \"x\"".
[[nodiscard]] CLI::Validator OneOf(std::vector<std::string> choices);
// host:port with a port in [0, 65535].
[[nodiscard]] CLI::Validator HostPort();
// A duration such as 60s, 2m or 1h30m, above zero.
[[nodiscard]] CLI::Validator PositiveDuration();

// A subcommand of `parent`; `example` is printed at the end of its help.
CLI::App* AddCommand(CLI::App& parent, const std::string& name,
                     const std::string& description,
                     const std::string& example);

// For the clients of a running gateway: --target ADDR (default
// 127.0.0.1:50051), --api-key-file PATH (else $ARBITER_API_KEY; see
// ApiKeyOf), and a line in the help saying the command needs `arbiter
// serve` running there.
CLI::Option* AddTarget(CLI::App& command, std::string& target,
                       std::string& api_key_file);

// What a command says when its flags parse but do not fit together: prints
// "arbiter <command>: <message> (see arbiter <command> --help)" to stderr and
// returns the usage exit code, 2.
int UsageError(absl::string_view command, absl::string_view message);

inline constexpr int kUsageExitCode = 2;

}  // namespace arbiter::cli
