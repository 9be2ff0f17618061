// infer, feedback and stats: one call each to a running gateway.

#include <iostream>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "gateway/cli/client.h"
#include "gateway/cli/commands.h"
#include "gateway/cli/flags.h"

namespace arbiter::cli {

CLI::App* AddInferCommand(CLI::App& arbiter, InferFlags& flags) {
  CLI::App* infer = AddCommand(
      arbiter, "infer",
      "Send one request.\nPrints the answer, the route and its kind, the "
      "model, tokens, cost, latency, the\npolicy's decision, and the request "
      "id to give `arbiter feedback`.",
      "arbiter infer --task faq \"How do I reset my password?\"\n"
      "  arbiter infer -- \"-h is a text, not a flag, after --\"");
  AddTarget(*infer, flags.target, flags.api_key_file);
  infer->add_option("--task", flags.task, "the request's task class")
      ->type_name("T")
      ->default_str("the config's default_task");
  infer->add_option("--route", flags.route, "pin a route")
      ->type_name("R")
      ->default_str("the policy chooses");
  infer
      ->add_option("--unit-id", flags.unit_id,
                   "experiment unit (a user), for sticky assignment")
      ->type_name("U");
  infer
      ->add_option("--max-cost-usd", flags.max_cost_usd,
                   "only routes expected to cost at most this; 0: no cap")
      ->type_name("X")
      ->capture_default_str()
      ->check(Number())
      ->check(AtLeast(0));
  infer
      ->add_option("--min-accuracy", flags.min_accuracy,
                   "only routes at least this accurate; 0: no floor")
      ->type_name("X")
      ->capture_default_str()
      ->check(Number())
      ->check(Between(0, 1));
  infer
      ->add_option("--max-tokens", flags.max_tokens,
                   "cap on output tokens; 0: the route's")
      ->type_name("N")
      ->capture_default_str()
      ->check(Integer())
      ->check(AtLeast(0));
  infer
      ->add_option("--timeout", flags.timeout_seconds,
                   "seconds to wait for the answer")
      ->type_name("SECONDS")
      ->capture_default_str()
      ->check(Number())
      ->check(GreaterThan(0));
  infer->add_option("TEXT", flags.text, "the user's message")->required();
  return infer;
}

CLI::App* AddFeedbackCommand(CLI::App& arbiter, FeedbackFlags& flags) {
  CLI::App* feedback = AddCommand(
      arbiter, "feedback",
      "Record the outcome of an answered request.\nGive exactly one of "
      "--correct, --incorrect or --score.",
      "arbiter feedback 'AAECAw...' --correct");
  AddTarget(*feedback, flags.target, flags.api_key_file);
  feedback->add_flag("--correct", flags.correct, "the answer was right");
  feedback->add_flag("--incorrect", flags.incorrect, "the answer was wrong");
  feedback->add_option("--score", flags.score, "a graded outcome, 0 to 1")
      ->type_name("X")
      ->check(Number())
      ->check(Between(0, 1));
  feedback
      ->add_option("REQUEST_ID", flags.request_id,
                   "the request id `arbiter infer` printed")
      ->required();
  return feedback;
}

CLI::App* AddStatsCommand(CLI::App& arbiter, StatsFlags& flags) {
  CLI::App* stats = AddCommand(
      arbiter, "stats",
      "Live statistics per route and task.\nRequests, errors, feedback, "
      "accuracy, cost per request and per correct answer,\nlatency "
      "(Admin/GetRouteStats).",
      "arbiter stats --route rag");
  AddTarget(*stats, flags.target, flags.api_key_file);
  stats->add_option("--route", flags.route, "only this route")
      ->type_name("R")
      ->default_str("every route");
  return stats;
}

CLI::App* AddExperimentShowCommand(CLI::App& arbiter,
                                   ExperimentShowFlags& flags) {
  CLI::App* experiment = arbiter.add_subcommand(
      "experiment",
      "Live experiments of the gateway.\nNeeds a running gateway (`arbiter "
      "serve`) at --target.");
  experiment->require_subcommand(1);
  experiment->footer(
      "Example:\n  arbiter experiment show prompt-vs-rag\n"
      "`arbiter experiment show --help` shows its flags.");
  CLI::App* show = AddCommand(
      *experiment, "show",
      "Per-arm analysis of a live experiment, with a verdict.\nRequests, "
      "accuracy with its interval, cost, latency, errors, and the "
      "difference\nfrom the control with an always-valid confidence sequence "
      "(Admin/GetExperiment).",
      "arbiter experiment show prompt-vs-rag");
  AddTarget(*show, flags.target, flags.api_key_file);
  show->add_option("NAME", flags.name, "the experiment's name in the config")
      ->required();
  return show;
}

int RunInfer(const InferFlags& flags) {
  v1::InferRequest request;
  v1::ChatMessage* message = request.add_messages();
  message->set_role(v1::ROLE_USER);
  message->set_content(flags.text);
  request.set_task(flags.task);
  request.set_route(flags.route);
  request.set_unit_id(flags.unit_id);
  request.mutable_constraints()->set_max_cost_usd(flags.max_cost_usd);
  request.mutable_constraints()->set_min_accuracy(flags.min_accuracy);
  request.mutable_limits()->set_max_output_tokens(flags.max_tokens);

  auto credentials = CredentialsOf(flags.api_key_file);
  if (!credentials.ok()) return Fail(credentials.status());
  GatewayChannel channel(flags.target, *credentials);
  auto stub = v1::Gateway::NewStub(channel.get());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(
                           static_cast<int64_t>(flags.timeout_seconds * 1000)));
  v1::InferResponse response;
  grpc::Status status = stub->Infer(&context, request, &response);
  if (!status.ok()) return channel.Fail(status);
  std::cout << response.text() << "\n\n";
  std::cout << absl::StrFormat("route       %s (%s)\n", response.route(),
                               response.route_kind());
  std::cout << absl::StrFormat("model       %s on %s\n", response.model(),
                               response.backend());
  std::cout << absl::StrFormat("task        %s\n", response.task());
  std::cout << absl::StrFormat(
      "tokens      %d in, %d out%s\n", response.usage().input_tokens(),
      response.usage().output_tokens(),
      response.usage().estimated() ? " (counted)" : "");
  std::cout << absl::StrFormat("cost        $%.6f\n", response.cost_usd());
  std::cout << absl::StrFormat("latency     %.1f ms\n",
                               response.latency_seconds() * 1000);
  std::cout << absl::StrFormat(
      "decision    %s, p=%.3f: %s\n", response.decision().policy(),
      response.decision().propensity(), response.decision().reason());
  for (const v1::Citation& citation : response.citations()) {
    std::cout << absl::StrFormat("cited       %s %s chunk %d (score %.3f)\n",
                                 citation.marker(), citation.doc_id(),
                                 citation.chunk_id(), citation.score());
  }
  std::cout << absl::StrFormat("request id  %s\n", response.request_id());
  return 0;
}

int RunFeedback(const FeedbackFlags& flags) {
  const int outcomes =
      flags.correct + flags.incorrect + flags.score.has_value();
  if (outcomes != 1) {
    return UsageError("feedback",
                      "give exactly one of --correct, --incorrect or --score");
  }
  v1::FeedbackRequest request;
  request.set_request_id(flags.request_id);
  if (flags.score.has_value()) {
    request.set_score(*flags.score);
  } else {
    request.set_correct(flags.correct);
  }
  auto credentials = CredentialsOf(flags.api_key_file);
  if (!credentials.ok()) return Fail(credentials.status());
  GatewayChannel channel(flags.target, *credentials);
  auto stub = v1::Gateway::NewStub(channel.get());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  v1::FeedbackResponse response;
  grpc::Status status = stub->Feedback(&context, request, &response);
  if (!status.ok()) return channel.Fail(status);
  std::cout << "recorded for route " << response.route() << ", task "
            << response.task() << "\n";
  return 0;
}

int RunStats(const StatsFlags& flags) {
  auto credentials = CredentialsOf(flags.api_key_file);
  if (!credentials.ok()) return Fail(credentials.status());
  GatewayChannel channel(flags.target, *credentials);
  auto stub = v1::Admin::NewStub(channel.get());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  v1::GetRouteStatsRequest request;
  request.set_route(flags.route);
  v1::GetRouteStatsResponse response;
  grpc::Status status = stub->GetRouteStats(&context, request, &response);
  if (!status.ok()) return channel.Fail(status);
  std::cout << absl::StrFormat(
      "%-14s %-16s %8s %7s %9s %9s %9s %12s %12s %8s %8s\n", "route", "task",
      "requests", "errors", "feedback", "accuracy", "estimate", "$/request",
      "$/correct", "p50 ms", "p95 ms");
  for (const v1::RouteTaskStats& row : response.stats()) {
    std::cout << absl::StrFormat(
        "%-14s %-16s %8d %7d %9d %9.3f %9.3f %12.6f %12.6f %8.1f %8.1f\n",
        row.route(), row.task(), row.requests(), row.errors(),
        row.feedback_count(), row.accuracy(), row.estimated_accuracy(),
        row.cost_per_request_usd(), row.cost_per_correct_usd(),
        row.latency_p50_seconds() * 1000, row.latency_p95_seconds() * 1000);
  }
  if (!response.backends().empty()) std::cout << "\nbackend        health\n";
  for (const v1::BackendStatus& backend : response.backends()) {
    std::cout << absl::StrFormat("%-14s %s\n", backend.name(),
                                 backend.health());
  }
  return 0;
}

int RunExperimentShow(const ExperimentShowFlags& flags) {
  auto credentials = CredentialsOf(flags.api_key_file);
  if (!credentials.ok()) return Fail(credentials.status());
  GatewayChannel channel(flags.target, *credentials);
  auto stub = v1::Admin::NewStub(channel.get());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  v1::GetExperimentRequest request;
  request.set_name(flags.name);
  v1::ExperimentAnalysis analysis;
  grpc::Status status = stub->GetExperiment(&context, request, &analysis);
  if (!status.ok()) return channel.Fail(status);
  std::cout << absl::StrFormat("experiment %s (control %s)\n", analysis.name(),
                               analysis.control());
  std::cout << absl::StrFormat(
      "%-10s %6s %9s %9s %-24s %11s %11s %8s %8s %7s  %s\n", "arm", "share",
      "requests", "feedback", "accuracy [CI]", "$/request", "$/correct",
      "p50 ms", "p95 ms", "errors", "vs control");
  for (const v1::ArmAnalysis& arm : analysis.arms()) {
    std::string versus =
        arm.compared()
            ? absl::StrFormat(
                  "%+.1f pp [%.1f, %.1f] p=%.3f%s", arm.difference() * 100,
                  arm.difference_low() * 100, arm.difference_high() * 100,
                  arm.p_value(), arm.significant() ? " *" : "")
            : std::string("(control)");
    std::cout << absl::StrFormat(
        "%-10s %5.0f%% %9d %9d %-24s %11.6f %11.6f %8.1f %8.1f %6.1f%%  %s\n",
        arm.name(), arm.weight_share() * 100, arm.requests(), arm.feedback(),
        absl::StrFormat("%.3f [%.3f, %.3f]", arm.accuracy(), arm.accuracy_low(),
                        arm.accuracy_high()),
        arm.cost_per_request_usd(), arm.cost_per_correct_usd(),
        arm.latency_p50_seconds() * 1000, arm.latency_p95_seconds() * 1000,
        arm.error_rate() * 100, versus);
  }
  std::cout << "verdict: " << analysis.verdict() << "\n";
  return 0;
}

}  // namespace arbiter::cli
