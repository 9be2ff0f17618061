#include "gateway/cli/flags.h"

#include <cmath>
#include <iostream>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "gateway/cli/client.h"

namespace arbiter::cli {
namespace {

// A validator with no text of its own in the help.
CLI::Validator Check(std::function<std::string(const std::string&)> check) {
  return CLI::Validator(
      [check = std::move(check)](std::string& value) { return check(value); },
      "");
}

// 0.5 as "0.5", 10 as "10".
std::string Shortest(double value) { return absl::StrCat(value); }

}  // namespace

CLI::Validator Number() {
  return Check([](const std::string& value) -> std::string {
    double number;
    if (!absl::SimpleAtod(value, &number) || !std::isfinite(number)) {
      return absl::StrCat("not a number: \"", value, "\"");
    }
    return "";
  });
}

CLI::Validator Integer() {
  return Check([](const std::string& value) -> std::string {
    int number;
    if (!absl::SimpleAtoi(value, &number)) {
      return absl::StrCat("not an integer: \"", value, "\"");
    }
    return "";
  });
}

namespace {

CLI::Validator Bounded(double low, bool low_open, double high) {
  return Check([=](const std::string& value) -> std::string {
    double number;
    if (!absl::SimpleAtod(value, &number)) return "";  // Number() says why.
    const bool above = low_open ? number > low : number >= low;
    if (above && number <= high) return "";
    if (high == std::numeric_limits<double>::infinity()) {
      return absl::StrCat("must be ", low_open ? "> " : ">= ", Shortest(low),
                          ", got ", value);
    }
    return absl::StrCat("must be in [", Shortest(low), ", ", Shortest(high),
                        "], got ", value);
  });
}

}  // namespace

CLI::Validator GreaterThan(double bound) {
  return Bounded(bound, true, std::numeric_limits<double>::infinity());
}

CLI::Validator AtLeast(double bound) {
  return Bounded(bound, false, std::numeric_limits<double>::infinity());
}

CLI::Validator Between(double low, double high) {
  return Bounded(low, false, high);
}

CLI::Validator OneOf(std::vector<std::string> choices) {
  return Check(
      [choices = std::move(choices)](const std::string& value) -> std::string {
        for (const std::string& choice : choices) {
          if (value == choice) return "";
        }
        return absl::StrCat("must be one of ", absl::StrJoin(choices, ", "),
                            "; got \"", value, "\"");
      });
}

CLI::Validator HostPort() {
  return Check([](const std::string& value) -> std::string {
    const size_t colon = value.rfind(':');
    int port;
    if (colon == std::string::npos || colon == 0 ||
        !absl::SimpleAtoi(value.substr(colon + 1), &port) || port < 0 ||
        port > 65535) {
      return absl::StrCat("not host:port: \"", value, "\"");
    }
    return "";
  });
}

CLI::Validator PositiveDuration() {
  return Check([](const std::string& value) -> std::string {
    absl::Duration duration;
    if (!absl::ParseDuration(value, &duration) ||
        duration <= absl::ZeroDuration()) {
      return absl::StrCat("not a duration above zero such as 60s or 2m: \"",
                          value, "\"");
    }
    return "";
  });
}

CLI::App* AddCommand(CLI::App& parent, const std::string& name,
                     const std::string& description,
                     const std::string& example) {
  CLI::App* command = parent.add_subcommand(name, description);
  command->footer(absl::StrCat("Example:\n  ", example));
  return command;
}

CLI::Option* AddTarget(CLI::App& command, std::string& target,
                       std::string& api_key_file) {
  command.description(
      absl::StrCat(command.get_description(),
                   "\nNeeds a running gateway (`arbiter serve`) at --target."));
  CLI::Option* option =
      command.add_option("--target", target, "the gateway's gRPC address")
          ->type_name("ADDR")
          ->capture_default_str();
  command
      .add_option("--api-key-file", api_key_file,
                  "a file holding the API key to send (default: "
                  "$ARBITER_API_KEY)")
      ->type_name("PATH");
  return option;
}

int UsageError(absl::string_view command, absl::string_view message) {
  std::cerr << "arbiter " << command << ": " << message << " (see arbiter "
            << command << " --help)\n";
  return kUsageExitCode;
}

}  // namespace arbiter::cli
