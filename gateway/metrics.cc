#include "gateway/metrics.h"

#include "absl/strings/ascii.h"

namespace arbiter {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

const Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* buckets = new Histogram::BucketBoundaries{
      0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  return *buckets;
}

}  // namespace

Metrics::Metrics(prometheus::Registry& registry, const v1::Config& config)
    : num_tasks_(config.tasks_size()),
      rejected_(BuildCounter()
                    .Name("arbiter_rejected_requests_total")
                    .Help("Requests refused before reaching a route, by gRPC "
                          "status code.")
                    .Register(registry)) {
  auto& requests = BuildCounter()
                       .Name("arbiter_requests_total")
                       .Help("Requests that reached a route, by outcome.")
                       .Register(registry);
  auto& decisions = BuildCounter()
                        .Name("arbiter_decisions_total")
                        .Help("Routing decisions, by chosen route.")
                        .Register(registry);
  auto& tokens = BuildCounter()
                     .Name("arbiter_tokens_total")
                     .Help("Tokens billed, by direction (input or output).")
                     .Register(registry);
  auto& cost = BuildCounter()
                   .Name("arbiter_cost_usd_total")
                   .Help("Cost of answered requests in US dollars.")
                   .Register(registry);
  auto& duration = BuildHistogram()
                       .Name("arbiter_request_duration_seconds")
                       .Help("Time from request to answer, per route.")
                       .Register(registry);
  auto& feedback = BuildCounter()
                       .Name("arbiter_feedback_total")
                       .Help(
                           "Feedback received, by outcome (correct, "
                           "incorrect, graded).")
                       .Register(registry);
  auto& feedback_score =
      BuildCounter()
          .Name("arbiter_feedback_score_total")
          .Help(
              "Sum of feedback scores (correct = 1, incorrect = 0, graded "
              "= the score); divided by arbiter_feedback_total it is the "
              "accuracy.")
          .Register(registry);
  for (const v1::Route& route : config.routes()) {
    for (const std::string& task : config.tasks()) {
      prometheus::Labels labels{{"route", route.name()},
                                {"kind", route.kind()},
                                {"backend", route.backend()},
                                {"task", task}};
      auto with = [&](const char* key, const char* value) {
        prometheus::Labels extended = labels;
        extended[key] = value;
        return extended;
      };
      Cell cell;
      cell.ok = &requests.Add(with("outcome", "ok"));
      cell.unavailable = &requests.Add(with("outcome", "unavailable"));
      cell.timeout = &requests.Add(with("outcome", "timeout"));
      cell.error = &requests.Add(with("outcome", "error"));
      cell.decisions = &decisions.Add(labels);
      cell.input_tokens = &tokens.Add(with("direction", "input"));
      cell.output_tokens = &tokens.Add(with("direction", "output"));
      cell.cost_usd = &cost.Add(labels);
      cell.duration = &duration.Add(labels, LatencyBuckets());
      cell.feedback_correct = &feedback.Add(with("outcome", "correct"));
      cell.feedback_incorrect = &feedback.Add(with("outcome", "incorrect"));
      cell.feedback_graded = &feedback.Add(with("outcome", "graded"));
      cell.feedback_score = &feedback_score.Add(labels);
      cells_.push_back(cell);
    }
  }
  auto& experiment_requests =
      BuildCounter()
          .Name("arbiter_experiment_requests_total")
          .Help("Requests assigned to an experiment arm, by outcome.")
          .Register(registry);
  auto& experiment_feedback =
      BuildCounter()
          .Name("arbiter_experiment_feedback_total")
          .Help("Feedback received for an experiment arm's requests.")
          .Register(registry);
  auto& experiment_score =
      BuildCounter()
          .Name("arbiter_experiment_feedback_score_total")
          .Help(
              "Sum of feedback scores of an experiment arm; divided by "
              "arbiter_experiment_feedback_total it is the arm's accuracy.")
          .Register(registry);
  for (const v1::Experiment& experiment : config.experiments()) {
    std::vector<ArmCounters> arms;
    for (const v1::ExperimentArm& arm : experiment.arms()) {
      prometheus::Labels labels{{"experiment", experiment.name()},
                                {"arm", arm.name()}};
      prometheus::Labels ok = labels;
      ok["outcome"] = "ok";
      prometheus::Labels error = labels;
      error["outcome"] = "error";
      arms.push_back(
          {&experiment_requests.Add(ok), &experiment_requests.Add(error),
           &experiment_feedback.Add(labels), &experiment_score.Add(labels)});
    }
    experiment_arms_.push_back(std::move(arms));
  }
  retrieval_duration_ =
      &BuildHistogram()
           .Name("arbiter_retrieval_duration_seconds")
           .Help("Time to retrieve the context of a rag request.")
           .Register(registry)
           .Add({}, Histogram::BucketBoundaries{0.0001, 0.00025, 0.0005, 0.001,
                                                0.0025, 0.005, 0.01, 0.025,
                                                0.05, 0.1});
  auto& corpus = BuildGauge()
                     .Name("arbiter_corpus_items")
                     .Help(
                         "Items in the retrieval corpus, by kind "
                         "(documents or chunks).")
                     .Register(registry);
  corpus_documents_ = &corpus.Add({{"item", "documents"}});
  corpus_chunks_ = &corpus.Add({{"item", "chunks"}});
  BuildGauge()
      .Name("arbiter_build_info")
      .Help("Always 1; the version label tells which build is running.")
      .Register(registry)
      .Add({{"version", "0.1.0"}})
      .Set(1);
}

void Metrics::RecordDecision(int route, int task) {
  At(route, task).decisions->Increment();
}

void Metrics::RecordCompletion(int route, int task, int64_t input_tokens,
                               int64_t output_tokens, double cost_usd,
                               double latency_seconds) {
  Cell& cell = At(route, task);
  cell.ok->Increment();
  cell.input_tokens->Increment(static_cast<double>(input_tokens));
  cell.output_tokens->Increment(static_cast<double>(output_tokens));
  cell.cost_usd->Increment(cost_usd);
  cell.duration->Observe(latency_seconds);
}

void Metrics::RecordFailure(int route, int task, Outcome outcome,
                            double latency_seconds) {
  Cell& cell = At(route, task);
  switch (outcome) {
    case Outcome::kOk:
      cell.ok->Increment();
      break;
    case Outcome::kUnavailable:
      cell.unavailable->Increment();
      break;
    case Outcome::kTimeout:
      cell.timeout->Increment();
      break;
    case Outcome::kError:
      cell.error->Increment();
      break;
  }
  cell.duration->Observe(latency_seconds);
}

void Metrics::RecordRejected(absl::string_view code) {
  rejected_.Add({{"code", absl::AsciiStrToLower(code)}}).Increment();
}

void Metrics::RecordFeedback(int route, int task, double score, bool graded) {
  Cell& cell = At(route, task);
  if (graded) {
    cell.feedback_graded->Increment();
  } else if (score >= 1) {
    cell.feedback_correct->Increment();
  } else {
    cell.feedback_incorrect->Increment();
  }
  cell.feedback_score->Increment(score);
}

void Metrics::RecordExperimentRequest(int experiment, int arm, bool ok) {
  ArmCounters& counters = experiment_arms_[experiment][arm];
  (ok ? counters.ok : counters.error)->Increment();
}

void Metrics::RecordExperimentFeedback(int experiment, int arm, double score) {
  ArmCounters& counters = experiment_arms_[experiment][arm];
  counters.feedback->Increment();
  counters.score->Increment(score);
}

void Metrics::RecordRetrieval(double seconds) {
  retrieval_duration_->Observe(seconds);
}

void Metrics::SetCorpus(size_t documents, size_t chunks) {
  corpus_documents_->Set(static_cast<double>(documents));
  corpus_chunks_->Set(static_cast<double>(chunks));
}

}  // namespace arbiter
