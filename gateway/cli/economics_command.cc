// arbiter economics: the live unit economics from Admin/GetEconomics.

#include <chrono>
#include <iostream>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "gateway/cli/client.h"
#include "gateway/cli/commands.h"
#include "gateway/cli/flags.h"
#include "google/protobuf/util/json_util.h"

namespace arbiter::cli {
namespace {

// "$0.001234", or "-" when the figure does not exist (nothing to divide by).
template <typename Message, typename Has, typename Get>
std::string Usd(const Message& message, Has has, Get get) {
  return (message.*has)() ? absl::StrFormat("$%.6f", (message.*get)()) : "-";
}

std::string Share(bool present, double value) {
  return present ? absl::StrFormat("%.3f", value) : "-";
}

void PrintBreakEven(const v1::RouteEconomics& route) {
  const v1::BreakEven& be = route.breakeven();
  std::cout << absl::StrFormat(
      "%s (fine-tuned) against %s: trained %s for $%.2f\n", route.route(),
      be.baseline_route(), be.training_date(), be.training_cost_usd());
  if (be.has_savings_per_request_usd()) {
    std::cout << absl::StrFormat(
        "  per request: baseline $%.6f, saving $%.6f\n",
        be.baseline_cost_per_request_usd(), be.savings_per_request_usd());
  }
  std::cout << absl::StrFormat(
      "  saved so far (net of hosting): $%.4f; to recover: $%.4f (%.1f%% "
      "recovered)\n",
      be.savings_usd(), be.remaining_usd(), 100 * be.recovered_share());
  if (be.recovered()) {
    std::cout << "  break-even: reached\n";
  } else if (be.never()) {
    std::cout << "  break-even: never at today's rate: " << be.never_reason()
              << "\n";
  } else {
    std::cout << absl::StrFormat(
        "  break-even: in %.0f requests, %.1f days at %.0f requests/day "
        "(about %s)\n",
        be.requests_remaining(), be.days_remaining(), route.requests_per_day(),
        be.break_even_date());
  }
  std::cout << absl::StrFormat(
      "  per correct answer: %s against %s: %s\n",
      Usd(be, &v1::BreakEven::has_cost_per_correct_usd,
          &v1::BreakEven::cost_per_correct_usd),
      Usd(be, &v1::BreakEven::has_baseline_cost_per_correct_usd,
          &v1::BreakEven::baseline_cost_per_correct_usd),
      be.verdict());
}

}  // namespace

CLI::App* AddEconomicsCommand(CLI::App& arbiter, EconomicsFlags& flags) {
  CLI::App* economics = AddCommand(
      arbiter, "economics",
      "Live unit economics per route and task.\nCost per request and per "
      "correct answer, hosting and amortised training, and\nwhen each "
      "fine-tune breaks even (Admin/GetEconomics).",
      "arbiter economics --route fine-tuned --json");
  AddTarget(*economics, flags.target, flags.api_key_file);
  economics->add_option("--route", flags.route, "only this route")
      ->type_name("R")
      ->default_str("every route");
  economics->add_flag("--json", flags.json,
                      "the same figures as JSON (the API's field names)");
  return economics;
}

int RunEconomics(const EconomicsFlags& flags) {
  auto credentials = CredentialsOf(flags.api_key_file);
  if (!credentials.ok()) return Fail(credentials.status());
  GatewayChannel channel(flags.target, *credentials);
  auto stub = v1::Admin::NewStub(channel.get());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  v1::GetEconomicsRequest request;
  request.set_route(flags.route);
  v1::GetEconomicsResponse response;
  grpc::Status status = stub->GetEconomics(&context, request, &response);
  if (!status.ok()) return channel.Fail(status);
  if (flags.json) {
    std::string json;
    google::protobuf::util::JsonPrintOptions options;
    options.add_whitespace = true;
    options.preserve_proto_field_names = true;
    options.always_print_primitive_fields = true;
    if (!google::protobuf::util::MessageToJsonString(response, &json, options)
             .ok()) {
      return Fail("could not format the answer as JSON");
    }
    std::cout << json << "\n";
    return 0;
  }
  std::cout << absl::StrFormat(
      "unit economics as of %s (up %.0f s; window %.0f min)\n\n",
      response.as_of(), response.uptime_seconds(),
      response.window_seconds() / 60);
  std::cout << absl::StrFormat(
      "%-14s %-10s %8s %11s %10s %10s %11s %8s %11s %11s %9s\n", "route",
      "kind", "requests", "requests $", "hosting $", "training $", "$/request",
      "accuracy", "$/correct", "$/correct*", "req/day");
  for (const v1::RouteEconomics& route : response.routes()) {
    std::cout << absl::StrFormat(
        "%-14s %-10s %8d %11.4f %10.4f %10.4f %11s %8s %11s %11s %9.0f\n",
        route.route(), route.kind(), route.requests(),
        route.request_cost().total_usd(), route.hosting_usd(),
        route.training_amortized_usd(),
        Usd(route, &v1::RouteEconomics::has_cost_per_request_usd,
            &v1::RouteEconomics::cost_per_request_usd),
        Share(route.has_accuracy(), route.accuracy()),
        Usd(route, &v1::RouteEconomics::has_cost_per_correct_usd,
            &v1::RouteEconomics::cost_per_correct_usd),
        Usd(route, &v1::RouteEconomics::has_window_cost_per_correct_usd,
            &v1::RouteEconomics::window_cost_per_correct_usd),
        route.requests_per_day());
  }
  std::cout << "(* over the window; $ figures include hosting and amortised "
               "training)\n";
  bool first = true;
  for (const v1::RouteEconomics& route : response.routes()) {
    if (!route.has_breakeven()) continue;
    std::cout << (first ? "\nbreak-even\n" : "\n");
    first = false;
    PrintBreakEven(route);
  }
  std::cout << absl::StrFormat(
      "\n%-14s %-16s %8s %11s %9s %8s %11s %11s\n", "route", "task", "requests",
      "$/request", "fixed $", "accuracy", "$/correct", "$/correct*");
  for (const v1::TaskEconomics& task : response.tasks()) {
    std::cout << absl::StrFormat(
        "%-14s %-16s %8d %11s %9.4f %8s %11s %11s\n", task.route(), task.task(),
        task.requests(),
        Usd(task, &v1::TaskEconomics::has_cost_per_request_usd,
            &v1::TaskEconomics::cost_per_request_usd),
        task.fixed_usd(), Share(task.has_accuracy(), task.accuracy()),
        Usd(task, &v1::TaskEconomics::has_cost_per_correct_usd,
            &v1::TaskEconomics::cost_per_correct_usd),
        Usd(task, &v1::TaskEconomics::has_window_cost_per_correct_usd,
            &v1::TaskEconomics::window_cost_per_correct_usd));
  }
  return 0;
}

}  // namespace arbiter::cli
