// replay: a policy over a logged outcome table, as it would learn live.

#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gateway/cli/args.h"
#include "gateway/cli/client.h"
#include "gateway/cli/commands.h"
#include "gateway/config.h"
#include "gateway/file_source.h"
#include "nlohmann/json.hpp"
#include "policy/replay.h"

namespace arbiter::cli {
namespace {

using nlohmann::json;

}  // namespace

absl::StatusOr<std::vector<policy::LoggedRequest>> ParseOutcomeLog(
    absl::string_view jsonl) {
  std::vector<policy::LoggedRequest> log;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(jsonl, '\n')) {
    ++line_number;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    auto error = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_number, ": ", what));
    };
    json item = json::parse(line, nullptr, false);
    if (item.is_discarded() || !item.is_object()) {
      return error("not a JSON object");
    }
    policy::LoggedRequest request;
    if (item.contains("id")) {
      request.id = item["id"].is_string() ? item["id"].get<std::string>()
                                          : item["id"].dump();
    }
    if (item.contains("task") && item["task"].is_string()) {
      request.task = item["task"].get<std::string>();
    }
    if (item.contains("prompt") && item["prompt"].is_string()) {
      request.prompt = item["prompt"].get<std::string>();
    }
    auto outcomes = item.find("outcomes");
    if (outcomes == item.end() || !outcomes->is_object() || outcomes->empty()) {
      return error("\"outcomes\" must be an object of route -> outcome");
    }
    for (const auto& [route, value] : outcomes->items()) {
      if (!value.is_object()) {
        return error(absl::StrCat("outcomes.", route, ": must be an object"));
      }
      policy::LoggedOutcome outcome;
      if (value.contains("correct") && value["correct"].is_boolean()) {
        outcome.score = value["correct"].get<bool>() ? 1 : 0;
      } else if (value.contains("score") && value["score"].is_number()) {
        outcome.score = value["score"].get<double>();
      } else {
        return error(absl::StrCat("outcomes.", route,
                                  ": needs \"correct\" (bool) or \"score\""));
      }
      outcome.input_tokens = value.value("input_tokens", int64_t{0});
      outcome.output_tokens = value.value("output_tokens", int64_t{0});
      outcome.latency_seconds = value.value("latency_ms", 0.0) / 1000;
      if (outcome.input_tokens < 0 || outcome.output_tokens < 0) {
        return error(absl::StrCat("outcomes.", route, ": negative tokens"));
      }
      request.outcomes[route] = outcome;
    }
    log.push_back(std::move(request));
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

int RunReplay(int argc, char** argv) {
  auto args = Args::Parse(argc, argv, {"log", "config", "seed"}, {"json"});
  if (!args.ok()) return Fail(args.status().message());
  if (!args->Has("log") || !args->Has("config")) {
    std::cerr << "usage: arbiter replay --log outcomes.jsonl --config "
                 "policy.yaml [--seed N] [--json]\n";
    return 2;
  }
  auto seed = args->GetInt("seed", 1);
  if (!seed.ok()) return Fail(seed.status().message());
  auto loaded = LoadConfigFile(args->Get("config"));
  if (!loaded.ok()) return Fail(loaded.status().message());
  auto text = MakeDiskFileSource(".")->Read(args->Get("log"));
  if (!text.ok()) return Fail(text.status().message());
  auto log = ParseOutcomeLog(*text);
  if (!log.ok()) {
    return Fail(absl::StrCat(args->Get("log"), ": ", log.status().message()));
  }
  auto report = policy::Replay(loaded->config, *log, *seed);
  if (!report.ok()) {
    return Fail(
        absl::StrCat(args->Get("log"), ": ", report.status().message()));
  }
  if (args->Has("json")) {
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
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << absl::StrFormat("replay of %d requests from %s\n", log->size(),
                               args->Get("log"));
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
