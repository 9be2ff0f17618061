// infer, feedback and stats: one call each to a running gateway.

#include <iostream>

#include "absl/strings/str_format.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "gateway/cli/args.h"
#include "gateway/cli/client.h"
#include "gateway/cli/commands.h"

namespace arbiter::cli {
int RunInfer(int argc, char** argv) {
  auto args = Args::Parse(argc, argv,
                          {"target", "task", "route", "unit-id", "max-cost-usd",
                           "min-accuracy", "max-tokens", "timeout"},
                          {});
  if (!args.ok()) return Fail(args.status());
  if (args->positional().size() != 1) {
    std::cerr << "usage: arbiter infer [--task T] [--route R] TEXT\n";
    return 2;
  }
  v1::InferRequest request;
  v1::ChatMessage* message = request.add_messages();
  message->set_role(v1::ROLE_USER);
  message->set_content(args->positional().front());
  request.set_task(args->Get("task"));
  request.set_route(args->Get("route"));
  request.set_unit_id(args->Get("unit-id"));
  auto max_cost = args->GetDouble("max-cost-usd", 0);
  auto min_accuracy = args->GetDouble("min-accuracy", 0);
  auto max_tokens = args->GetInt("max-tokens", 0);
  auto timeout = args->GetDouble("timeout", 60);
  for (const absl::Status& status : {max_cost.status(), min_accuracy.status(),
                                     max_tokens.status(), timeout.status()}) {
    if (!status.ok()) return Fail(status);
  }
  request.mutable_constraints()->set_max_cost_usd(*max_cost);
  request.mutable_constraints()->set_min_accuracy(*min_accuracy);
  request.mutable_limits()->set_max_output_tokens(*max_tokens);

  auto stub =
      v1::Gateway::NewStub(Connect(args->Get("target", kDefaultTarget)));
  grpc::ClientContext context;
  context.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(*timeout * 1000)));
  v1::InferResponse response;
  grpc::Status status = stub->Infer(&context, request, &response);
  if (!status.ok()) return FailRpc(status);
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

int RunFeedback(int argc, char** argv) {
  auto args =
      Args::Parse(argc, argv, {"target", "score"}, {"correct", "incorrect"});
  if (!args.ok()) return Fail(args.status());
  int outcomes =
      args->Has("correct") + args->Has("incorrect") + args->Has("score");
  if (args->positional().size() != 1 || outcomes != 1) {
    std::cerr << "usage: arbiter feedback REQUEST_ID (--correct | --incorrect "
                 "| --score X)\n";
    return 2;
  }
  v1::FeedbackRequest request;
  request.set_request_id(args->positional().front());
  if (args->Has("score")) {
    auto score = args->GetDouble("score", 0);
    if (!score.ok()) return Fail(score.status());
    request.set_score(*score);
  } else {
    request.set_correct(args->Has("correct"));
  }
  auto stub =
      v1::Gateway::NewStub(Connect(args->Get("target", kDefaultTarget)));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  v1::FeedbackResponse response;
  grpc::Status status = stub->Feedback(&context, request, &response);
  if (!status.ok()) return FailRpc(status);
  std::cout << "recorded for route " << response.route() << ", task "
            << response.task() << "\n";
  return 0;
}

int RunStats(int argc, char** argv) {
  auto args = Args::Parse(argc, argv, {"target", "route"}, {});
  if (!args.ok()) return Fail(args.status());
  auto stub = v1::Admin::NewStub(Connect(args->Get("target", kDefaultTarget)));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  v1::GetRouteStatsRequest request;
  request.set_route(args->Get("route"));
  v1::GetRouteStatsResponse response;
  grpc::Status status = stub->GetRouteStats(&context, request, &response);
  if (!status.ok()) return FailRpc(status);
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
  return 0;
}

int RunExperiment(int argc, char** argv) {
  auto args = Args::Parse(argc, argv, {"target"}, {});
  if (!args.ok()) return Fail(args.status());
  if (args->positional().size() != 2 || args->positional()[0] != "show") {
    std::cerr << "usage: arbiter experiment show NAME [--target ADDR]\n";
    return 2;
  }
  auto stub = v1::Admin::NewStub(Connect(args->Get("target", kDefaultTarget)));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  v1::GetExperimentRequest request;
  request.set_name(args->positional()[1]);
  v1::ExperimentAnalysis analysis;
  grpc::Status status = stub->GetExperiment(&context, request, &analysis);
  if (!status.ok()) return FailRpc(status);
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
