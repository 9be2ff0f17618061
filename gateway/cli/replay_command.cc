// replay: a policy over a logged outcome table, as it would learn live.

#include <iostream>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/json.h"
#include "gateway/cli/client.h"
#include "gateway/cli/commands.h"
#include "gateway/cli/flags.h"
#include "gateway/config.h"
#include "gateway/file_source.h"
#include "nlohmann/json.hpp"
#include "policy/replay.h"

namespace arbiter::cli {
namespace {

using nlohmann::json;

// An id given as a string ("r1") or a number (17).
absl::StatusOr<std::string> IdOf(const arbiter::json::View& id) {
  if (id.get() != nullptr && id.get()->is_number()) {
    return arbiter::json::Dump(*id.get());
  }
  return id.String();
}

absl::StatusOr<policy::LoggedOutcome> OutcomeOf(
    const arbiter::json::View& value) {
  if (absl::Status s = value.RequireObject(); !s.ok()) return s;
  policy::LoggedOutcome outcome;
  auto correct = value["correct"].OptionalBool();
  if (!correct.ok()) return correct.status();
  auto score = value["score"].OptionalNumber();
  if (!score.ok()) return score.status();
  if (correct->has_value()) {
    outcome.score = **correct ? 1 : 0;
  } else if (score->has_value()) {
    outcome.score = **score;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(value.path(),
                     ": needs \"correct\" (a boolean) or \"score\" (a "
                     "number)"));
  }
  auto input_tokens = value["input_tokens"].OptionalInt();
  if (!input_tokens.ok()) return input_tokens.status();
  auto output_tokens = value["output_tokens"].OptionalInt();
  if (!output_tokens.ok()) return output_tokens.status();
  auto latency_ms = value["latency_ms"].OptionalNumber();
  if (!latency_ms.ok()) return latency_ms.status();
  outcome.input_tokens = input_tokens->value_or(0);
  outcome.output_tokens = output_tokens->value_or(0);
  outcome.latency_seconds = latency_ms->value_or(0) / 1000;
  if (outcome.input_tokens < 0 || outcome.output_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(value.path(), ": negative tokens"));
  }
  return outcome;
}

absl::StatusOr<policy::LoggedRequest> RequestOf(absl::string_view line) {
  auto parsed = arbiter::json::Parse(line);
  if (!parsed.ok()) return parsed.status();
  const arbiter::json::View item(*parsed);
  if (!item.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected a JSON object, got ", arbiter::json::TypeName(*parsed)));
  }
  policy::LoggedRequest request;
  if (item["id"].exists()) {
    auto id = IdOf(item["id"]);
    if (!id.ok()) return id.status();
    request.id = *std::move(id);
  }
  auto task = item["task"].OptionalString();
  if (!task.ok()) return task.status();
  request.task = task->value_or("");
  auto prompt = item["prompt"].OptionalString();
  if (!prompt.ok()) return prompt.status();
  request.prompt = prompt->value_or("");
  const arbiter::json::View outcomes = item["outcomes"];
  if (absl::Status s = outcomes.RequireObject(); !s.ok()) return s;
  if (outcomes.size() == 0) {
    return absl::InvalidArgumentError(
        "outcomes: must map at least one route to its outcome");
  }
  for (const auto& [route, unused] : outcomes.get()->items()) {
    auto outcome = OutcomeOf(outcomes[route]);
    if (!outcome.ok()) return outcome.status();
    request.outcomes[route] = *outcome;
  }
  return request;
}

}  // namespace

absl::StatusOr<std::vector<policy::LoggedRequest>> ParseOutcomeLog(
    absl::string_view jsonl) {
  std::vector<policy::LoggedRequest> log;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(jsonl, '\n')) {
    ++line_number;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    auto request = RequestOf(line);
    if (!request.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_number, ": ", request.status().message()));
    }
    log.push_back(*std::move(request));
  }
  return log;
}

namespace {

json ResultJson(const policy::ReplayResult& result) {
  return {{"name", result.name},
          {"requests", result.requests},
          {"accuracy", result.accuracy},
          {"total_cost_usd", result.total_cost_usd},
          {"cost_per_request_usd", result.cost_per_request_usd},
          {"cost_per_correct_usd", result.cost_per_correct_usd},
          {"traffic_share", result.traffic_share}};
}

std::string Row(const policy::ReplayResult& result) {
  std::vector<std::string> shares;
  for (const auto& [route, share] : result.traffic_share) {
    shares.push_back(absl::StrFormat("%s %.0f%%", route, share * 100));
  }
  return absl::StrFormat("%-14s %8d %9.3f %11.4f %12.6f %12.6f   %s\n",
                         result.name, result.requests, result.accuracy,
                         result.total_cost_usd, result.cost_per_request_usd,
                         result.cost_per_correct_usd,
                         absl::StrJoin(shares, ", "));
}

}  // namespace

CLI::App* AddReplayCommand(CLI::App& arbiter, ReplayFlags& flags) {
  CLI::App* replay = AddCommand(
      arbiter, "replay",
      "Run a config's policy over logged outcomes, offline.\nThe policy "
      "learns from each outcome as it would live; it is compared with each\n"
      "route alone and the per-request oracle. No gateway needed.",
      "arbiter replay --log outcomes.jsonl --config policy.yaml --json");
  replay
      ->add_option("--log", flags.log,
                   "JSON Lines: {\"id\", \"task\", \"prompt\", "
                   "\"outcomes\": {ROUTE: {\"correct\" or\n\"score\", "
                   "\"input_tokens\", \"output_tokens\", \"latency_ms\"}}}")
      ->type_name("FILE")
      ->required();
  replay
      ->add_option("--config", flags.config,
                   "the config whose policy and prices to use")
      ->type_name("FILE")
      ->required();
  replay->add_option("--seed", flags.seed, "seed of the policy's randomness")
      ->type_name("N")
      ->capture_default_str()
      ->check(Integer());
  replay->add_flag("--json", flags.json, "the same figures as JSON");
  return replay;
}

int RunReplay(const ReplayFlags& flags) {
  auto loaded = LoadConfigFile(flags.config);
  if (!loaded.ok()) return Fail(loaded.status().message());
  auto text = MakeDiskFileSource(".")->Read(flags.log);
  if (!text.ok()) return Fail(text.status().message());
  auto log = ParseOutcomeLog(*text);
  if (!log.ok()) {
    return Fail(absl::StrCat(flags.log, ": ", log.status().message()));
  }
  auto report = policy::Replay(loaded->config, *log, flags.seed);
  if (!report.ok()) {
    return Fail(absl::StrCat(flags.log, ": ", report.status().message()));
  }
  if (flags.json) {
    json out = {{"policy", ResultJson(report->policy)},
                {"oracle", ResultJson(report->oracle)},
                {"routes", json::array()}};
    for (const auto& route : report->routes) {
      out["routes"].push_back(ResultJson(route));
    }
    if (report->routing.has_value()) {
      const policy::RoutingMetrics& m = *report->routing;
      json curve = json::array();
      for (auto [share, pgr] : m.curve) curve.push_back({share, pgr});
      out["routing"] = {{"weak_route", m.weak_route},
                        {"strong_route", m.strong_route},
                        {"pgr", m.pgr},
                        {"strong_share", m.strong_share},
                        {"apgr", m.apgr},
                        {"cpt50", m.cpt50 ? json(*m.cpt50) : json(nullptr)},
                        {"cpt80", m.cpt80 ? json(*m.cpt80) : json(nullptr)},
                        {"curve", curve}};
    }
    std::cout << arbiter::json::Dump(out, 2) << "\n";
    return 0;
  }
  std::cout << absl::StrFormat("replay of %d requests from %s\n", log->size(),
                               flags.log);
  std::cout << absl::StrFormat("%-14s %8s %9s %11s %12s %12s   %s\n", "",
                               "requests", "accuracy", "total $", "$/request",
                               "$/correct", "traffic");
  std::cout << Row(report->policy);
  for (const auto& route : report->routes) std::cout << Row(route);
  std::cout << Row(report->oracle);
  if (report->routing.has_value()) {
    const policy::RoutingMetrics& m = *report->routing;
    auto cpt = [](const std::optional<double>& value) {
      return value ? absl::StrFormat("%.1f%%", *value * 100)
                   : std::string("not reached");
    };
    std::cout << absl::StrFormat(
        "\nrouting (weak %s, strong %s): PGR %.3f at %.1f%% strong calls; "
        "APGR %.3f; CPT(50%%) %s; CPT(80%%) %s\n",
        m.weak_route, m.strong_route, m.pgr, m.strong_share * 100, m.apgr,
        cpt(m.cpt50), cpt(m.cpt80));
  }
  return 0;
}

}  // namespace arbiter::cli
