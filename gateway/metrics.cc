#include "gateway/metrics.h"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "absl/strings/ascii.h"
#include "gateway/config.h"

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
                    .Help("Requests refused at once, by gRPC status code "
                          "and the bound or check that refused them.")
                    .Register(registry)) {
  auto& requests = BuildCounter()
                       .Name("arbiter_requests_total")
                       .Help("Requests that reached a route, by outcome.")
                       .Register(registry);
  decisions_ = &BuildCounter()
                    .Name("arbiter_decisions_total")
                    .Help(
                        "Routing decisions, by chosen route, policy and "
                        "reason class (requested, fixed, explore, exploit, "
                        "experiment).")
                    .Register(registry);
  auto& tokens = BuildCounter()
                     .Name("arbiter_tokens_total")
                     .Help("Tokens billed, by direction (input or output).")
                     .Register(registry);
  auto& cost = BuildCounter()
                   .Name("arbiter_cost_usd_total")
                   .Help(
                       "Cost of answered requests in US dollars, by component "
                       "(input_tokens, output_tokens, request_fee, retrieval, "
                       "embedding).")
                   .Register(registry);
  auto& cancelled_cost =
      BuildCounter()
          .Name("arbiter_cancelled_cost_usd_total")
          .Help(
              "Cost in US dollars of what was produced for requests whose "
              "caller went away mid-answer (also in arbiter_cost_usd_total).")
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
                                {"kind", EnumName(route.kind())},
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
      cell.cancelled = &requests.Add(with("outcome", "cancelled"));
      cell.cancelled_cost = &cancelled_cost.Add(with("outcome", "cancelled"));
      cell.labels = labels;
      cell.input_tokens = &tokens.Add(with("direction", "input"));
      cell.output_tokens = &tokens.Add(with("direction", "output"));
      cell.cost_input = &cost.Add(with("component", "input_tokens"));
      cell.cost_output = &cost.Add(with("component", "output_tokens"));
      cell.cost_fee = &cost.Add(with("component", "request_fee"));
      cell.cost_retrieval = &cost.Add(with("component", "retrieval"));
      cell.cost_embedding = &cost.Add(with("component", "embedding"));
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
  for (const v1::Route& route : config.routes()) {
    route_names_.push_back(route.name());
  }
  fallbacks_ = &BuildCounter()
                    .Name("arbiter_fallbacks_total")
                    .Help(
                        "Failed attempts tried again on another route, by "
                        "from_route, to_route and reason (unavailable, "
                        "timeout, rate_limited, server_error).")
                    .Register(registry);
  retries_ = &BuildCounter()
                  .Name("arbiter_retries_total")
                  .Help(
                      "Failed attempts tried again on the same backend "
                      "(backends[].retry), by backend and reason "
                      "(unavailable, rate_limited, server_error).")
                  .Register(registry);
  attempts_ = &BuildHistogram()
                   .Name("arbiter_request_attempts")
                   .Help(
                       "Attempts per request that reached a route (1: no "
                       "fallback).")
                   .Register(registry)
                   .Add({}, Histogram::BucketBoundaries{1, 2, 3, 5, 10});
  retry_budget_exhausted_ =
      &BuildCounter()
           .Name("arbiter_retry_budget_exhausted_total")
           .Help(
               "Fallbacks and retries not made because the retry budget was "
               "spent "
               "(server.retry_budget).")
           .Register(registry)
           .Add({});
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
  auto& state_batches =
      BuildCounter()
          .Name("arbiter_state_batches_total")
          .Help(
              "Batches of changes the state store's writer committed (ok) "
              "or could not commit (failed; kept and retried).")
          .Register(registry);
  state_committed_ = &state_batches.Add({{"result", "ok"}});
  state_failed_ = &state_batches.Add({{"result", "failed"}});
  state_last_commit_ = &BuildGauge()
                            .Name("arbiter_state_last_commit_seconds")
                            .Help(
                                "How long the state store's last commit "
                                "took.")
                            .Register(registry)
                            .Add({});
  auto& pool_threads =
      BuildGauge()
          .Name("arbiter_worker_pool_threads")
          .Help("Threads of a worker pool (retrieval reads or ingest).")
          .Register(registry);
  auto& pool_capacity =
      BuildGauge()
          .Name("arbiter_worker_pool_queue_capacity")
          .Help("Tasks a worker pool lets wait before it refuses more.")
          .Register(registry);
  auto& pool_queued = BuildGauge()
                          .Name("arbiter_worker_pool_queued_tasks")
                          .Help("Tasks waiting for a worker pool's thread.")
                          .Register(registry);
  auto& pool_busy = BuildGauge()
                        .Name("arbiter_worker_pool_busy_threads")
                        .Help("Threads of a worker pool running a task.")
                        .Register(registry);
  auto& pool_rejected =
      BuildCounter()
          .Name("arbiter_worker_pool_rejected_total")
          .Help(
              "Tasks a worker pool refused with RESOURCE_EXHAUSTED because "
              "its queue was full.")
          .Register(registry);
  const v1::Server& server = config.server();
  for (auto [pool, name, threads, capacity] :
       {std::tuple{Pool::kRetrieval, "retrieval", server.retrieval_threads(),
                   server.retrieval_queue()},
        std::tuple{Pool::kIngest, "ingest", server.ingest_threads(),
                   server.ingest_queue()}}) {
    const prometheus::Labels labels{{"pool", name}};
    pool_threads.Add(labels).Set(threads);
    pool_capacity.Add(labels).Set(capacity);
    pools_[static_cast<int>(pool)] = {&pool_queued.Add(labels),
                                      &pool_busy.Add(labels),
                                      &pool_rejected.Add(labels)};
  }
  auto& feedback_rejected =
      BuildCounter()
          .Name("arbiter_feedback_rejected_total")
          .Help(
              "Feedback refused for its request id: not_issued_here (not "
              "signed by this deployment's keys), expired (older than the "
              "feedback window), from_the_future (beyond the clock skew), "
              "duplicate (its feedback was counted already), unanswered (the "
              "request failed or was cancelled).")
          .Register(registry);
  feedback_duplicate_ = &feedback_rejected.Add({{"reason", "duplicate"}});
  feedback_unanswered_ = &feedback_rejected.Add({{"reason", "unanswered"}});
  for (RequestIdRejection reason :
       {RequestIdRejection::kNotIssuedHere, RequestIdRejection::kExpired,
        RequestIdRejection::kFromTheFuture}) {
    feedback_rejected_[static_cast<int>(reason)] = &feedback_rejected.Add(
        {{"reason", std::string(RejectionName(reason))}});
  }
  auto& auth_failures =
      BuildCounter()
          .Name("arbiter_auth_failures_total")
          .Help(
              "Calls refused as UNAUTHENTICATED (HTTP 401) by why: missing "
              "(no authorization), malformed (not Bearer <key>), unknown "
              "(no configured key has its hash), expired.")
          .Register(registry);
  for (auto [reason, name] : {std::pair{AuthFailure::kMissing, "missing"},
                              std::pair{AuthFailure::kMalformed, "malformed"},
                              std::pair{AuthFailure::kUnknown, "unknown"},
                              std::pair{AuthFailure::kExpired, "expired"}}) {
    auth_failures_[static_cast<int>(reason)] =
        &auth_failures.Add({{"reason", name}});
  }
  RegisterEconomics(registry, config);
  BuildGauge()
      .Name("arbiter_build_info")
      .Help("Always 1; the version label tells which build is running.")
      .Register(registry)
      .Add({{"version", "0.1.0"}})
      .Set(1);
}

void Metrics::RecordDecision(int route, int task, absl::string_view policy,
                             absl::string_view reason_class) {
  prometheus::Labels labels = At(route, task).labels;
  labels["policy"] = std::string(policy);
  labels["reason"] = std::string(reason_class);
  // Policies and reason classes are few: the family keeps one series each.
  decisions_->Add(labels).Increment();
}

void Metrics::RecordCompletion(int route, int task, int64_t input_tokens,
                               int64_t output_tokens,
                               const policy::RequestCost& cost,
                               double latency_seconds) {
  Cell& cell = At(route, task);
  cell.ok->Increment();
  Bill(cell, input_tokens, output_tokens, cost, latency_seconds);
}

void Metrics::Bill(Cell& cell, int64_t input_tokens, int64_t output_tokens,
                   const policy::RequestCost& cost, double latency_seconds) {
  BillTokens(cell, input_tokens, output_tokens, cost);
  cell.duration->Observe(latency_seconds);
}

void Metrics::BillTokens(Cell& cell, int64_t input_tokens,
                         int64_t output_tokens,
                         const policy::RequestCost& cost) {
  cell.input_tokens->Increment(static_cast<double>(input_tokens));
  cell.output_tokens->Increment(static_cast<double>(output_tokens));
  cell.cost_input->Increment(cost.input_usd);
  cell.cost_output->Increment(cost.output_usd);
  cell.cost_fee->Increment(cost.request_usd);
  cell.cost_retrieval->Increment(cost.retrieval_usd);
  cell.cost_embedding->Increment(cost.embedding_usd);
}

void Metrics::RecordCancelled(int route, int task, int64_t input_tokens,
                              int64_t output_tokens,
                              const policy::RequestCost& cost,
                              double latency_seconds) {
  Cell& cell = At(route, task);
  cell.cancelled->Increment();
  cell.cancelled_cost->Increment(cost.total_usd());
  Bill(cell, input_tokens, output_tokens, cost, latency_seconds);
}

void Metrics::RecordFallback(int from_route, int to_route,
                             absl::string_view reason) {
  fallbacks_
      ->Add({{"from_route", route_names_[from_route]},
             {"to_route", route_names_[to_route]},
             {"reason", std::string(reason)}})
      .Increment();
}

void Metrics::RecordRetry(absl::string_view backend, absl::string_view reason) {
  retries_
      ->Add(
          {{"backend", std::string(backend)}, {"reason", std::string(reason)}})
      .Increment();
}

void Metrics::RecordAttempts(int attempts) { attempts_->Observe(attempts); }

void Metrics::RecordRetryBudgetExhausted() {
  retry_budget_exhausted_->Increment();
}

void Metrics::RecordFailedAttemptBill(int route, int task, int64_t input_tokens,
                                      int64_t output_tokens,
                                      const policy::RequestCost& cost) {
  BillTokens(At(route, task), input_tokens, output_tokens, cost);
}

void Metrics::RegisterEconomics(prometheus::Registry& registry,
                                const v1::Config& config) {
  auto& fixed = BuildCounter()
                    .Name("arbiter_fixed_cost_usd_total")
                    .Help(
                        "Costs accrued by time rather than by request, in US "
                        "dollars, by component: hosting (the route's "
                        "deployment per hour) and training (its one-time "
                        "cost amortised evenly over its amortisation "
                        "period).")
                    .Register(registry);
  auto& training = BuildGauge()
                       .Name("arbiter_training_cost_usd")
                       .Help("One-time training cost of a fine-tuned route.")
                       .Register(registry);
  cost_per_correct_ =
      &BuildGauge()
           .Name("arbiter_cost_per_correct_answer_usd")
           .Help(
               "Cost per correct answer of a route on a task (request costs "
               "plus the task's share of hosting and amortised training, "
               "over answers judged correct), over the recent window (1h by "
               "default) or all time since start; absent until one answer "
               "is judged correct.")
           .Register(registry);
  route_cost_per_correct_ =
      &BuildGauge()
           .Name("arbiter_route_cost_per_correct_answer_usd")
           .Help(
               "Cost per correct answer of a route over all its tasks, fixed "
               "costs included; absent until one answer is judged correct.")
           .Register(registry);
  auto gauge = [&](const char* name, const char* help) {
    return &BuildGauge().Name(name).Help(help).Register(registry);
  };
  recovered_ = gauge("arbiter_breakeven_recovered_ratio",
                     "Share of a fine-tune's training cost recovered by its "
                     "savings against its baseline so far (0 to 1).");
  savings_ = gauge("arbiter_breakeven_savings_usd",
                   "A fine-tune's savings against its baseline since start, "
                   "net of its hosting; negative while it costs more.");
  savings_per_request_ =
      gauge("arbiter_breakeven_savings_per_request_usd",
            "What the baseline would have cost per request on the "
            "fine-tune's traffic minus what the fine-tune cost.");
  remaining_ = gauge("arbiter_breakeven_remaining_usd",
                     "Training cost a fine-tune has still to recover.");
  requests_remaining_ =
      gauge("arbiter_breakeven_requests_remaining",
            "Requests until a fine-tune breaks even at today's rate; absent "
            "when it never does.");
  days_remaining_ = gauge("arbiter_breakeven_days_remaining",
                          "Days until a fine-tune breaks even at today's "
                          "request rate; absent when it never does.");
  never_ = gauge("arbiter_breakeven_never",
                 "1 when a fine-tune never breaks even at today's rate "
                 "(costs more per request, hosting outruns savings, or no "
                 "traffic), else 0.");
  auto& floor = BuildGauge()
                    .Name("arbiter_accuracy_floor")
                    .Help(
                        "Accuracy a cheapest_meeting_accuracy policy holds a "
                        "route to on a task.")
                    .Register(registry);
  for (int r = 0; r < config.routes_size(); ++r) {
    const v1::Route& route = config.routes(r);
    RouteGauges gauges;
    gauges.route = route.name();
    gauges.hosting = &fixed.Add({{"route", route.name()},
                                 {"kind", EnumName(route.kind())},
                                 {"component", "hosting"}});
    gauges.training = &fixed.Add({{"route", route.name()},
                                  {"kind", EnumName(route.kind())},
                                  {"component", "training"}});
    if (route.has_training()) {
      training.Add({{"route", route.name()}}).Set(route.training().cost_usd());
      gauges.baseline = route.training().baseline_route();
    }
    routes_.push_back(std::move(gauges));
    for (const std::string& task : config.tasks()) {
      const v1::Policy& policy = config.task_policies().contains(task)
                                     ? config.task_policies().at(task)
                                     : config.policy();
      if (policy.has_cheapest_meeting_accuracy()) {
        floor.Add({{"route", route.name()}, {"task", task}})
            .Set(policy.cheapest_meeting_accuracy().accuracy_floor());
      }
    }
  }
  for (const std::string& task : config.tasks()) task_names_.push_back(task);
  if (config.economics().budget_usd_per_day() > 0) {
    BuildGauge()
        .Name("arbiter_budget_usd_per_day")
        .Help("The configured spend budget per day, in US dollars.")
        .Register(registry)
        .Add({})
        .Set(config.economics().budget_usd_per_day());
  }
}

namespace {

// Sets the series to `value`, or removes it when there is no value, so a
// dashboard shows a gap rather than a made-up zero.
void SetOrRemove(prometheus::Family<prometheus::Gauge>& family,
                 const prometheus::Labels& labels,
                 const std::optional<double>& value) {
  if (value.has_value() && std::isfinite(*value)) {
    family.Add(labels).Set(*value);
  } else if (family.Has(labels)) {
    family.Remove(&family.Add(labels));
  }
}

}  // namespace

void Metrics::UpdateEconomics(const policy::EconomicsSnapshot& snapshot) {
  std::lock_guard lock(economics_mu_);
  for (const policy::RouteEconomics& route : snapshot.routes) {
    RouteGauges& gauges = routes_[route.route];
    // Counters take what accrued since the last update.
    gauges.hosting->Increment(
        std::max(0.0, route.hosting_usd - gauges.hosting->Value()));
    gauges.training->Increment(
        std::max(0.0, route.training_amortized_usd - gauges.training->Value()));
    for (const auto& [window, value] :
         {std::pair{"all", route.cost_per_correct_usd},
          std::pair{"1h", route.window_cost_per_correct_usd}}) {
      SetOrRemove(*route_cost_per_correct_,
                  {{"route", gauges.route}, {"window", window}}, value);
    }
    if (!route.breakeven.has_value()) continue;
    const policy::BreakEven& be = *route.breakeven;
    const prometheus::Labels labels{{"route", gauges.route},
                                    {"baseline", gauges.baseline}};
    recovered_->Add(labels).Set(be.recovered_share);
    savings_->Add(labels).Set(be.savings_usd);
    SetOrRemove(*savings_per_request_, labels, be.savings_per_request_usd);
    remaining_->Add(labels).Set(be.remaining_usd);
    SetOrRemove(*requests_remaining_, labels, be.requests_remaining);
    SetOrRemove(*days_remaining_, labels, be.days_remaining);
    never_->Add(labels).Set(be.never ? 1 : 0);
  }
  for (const policy::TaskEconomics& task : snapshot.tasks) {
    for (const auto& [window, value] :
         {std::pair{"all", task.cost_per_correct_usd},
          std::pair{"1h", task.window_cost_per_correct_usd}}) {
      SetOrRemove(*cost_per_correct_,
                  {{"route", routes_[task.route].route},
                   {"task", task_names_[task.task]},
                   {"window", window}},
                  value);
    }
  }
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
    case Outcome::kCancelled:
      cell.cancelled->Increment();
      break;
  }
  cell.duration->Observe(latency_seconds);
}

absl::string_view RejectReasonName(RejectReason reason) {
  switch (reason) {
    case RejectReason::kInvalidRequest:
      return "invalid_request";
    case RejectReason::kNoRoute:
      return "no_route";
    case RejectReason::kMaxInFlight:
      return "max_in_flight";
    case RejectReason::kRetrievalQueue:
      return "retrieval_queue";
    case RejectReason::kBackendQueue:
      return "backend_queue";
    case RejectReason::kNotPermitted:
      return "not_permitted";
  }
  return "unknown";
}

void Metrics::RecordRejected(absl::string_view code, RejectReason reason) {
  rejected_
      .Add({{"code", absl::AsciiStrToLower(code)},
            {"reason", std::string(RejectReasonName(reason))}})
      .Increment();
}

void Metrics::RecordAuthFailure(AuthFailure reason) {
  auth_failures_[static_cast<int>(reason)]->Increment();
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

void Metrics::RecordFeedbackRejected(RequestIdRejection reason) {
  feedback_rejected_[static_cast<int>(reason)]->Increment();
}

void Metrics::RecordFeedbackDuplicate() { feedback_duplicate_->Increment(); }

void Metrics::RecordFeedbackUnanswered() { feedback_unanswered_->Increment(); }

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

void Metrics::SetStateWrites(int64_t committed, int64_t failed,
                             double last_commit_seconds) {
  state_committed_->Increment(std::max(
      0.0, static_cast<double>(committed) - state_committed_->Value()));
  state_failed_->Increment(
      std::max(0.0, static_cast<double>(failed) - state_failed_->Value()));
  state_last_commit_->Set(last_commit_seconds);
}

void Metrics::SetPoolLoad(Pool pool, size_t queued, size_t busy) {
  PoolSeries& series = pools_[static_cast<int>(pool)];
  series.queued->Set(static_cast<double>(queued));
  series.busy->Set(static_cast<double>(busy));
}

void Metrics::RecordPoolRejected(Pool pool) {
  pools_[static_cast<int>(pool)].rejected->Increment();
}

}  // namespace arbiter
