// loadgen: labeled traffic at a fixed rate, scored against expected answers,
// with a live per-route table.

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <iostream>
#include <map>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "gateway/cli/args.h"
#include "gateway/cli/client.h"
#include "gateway/cli/commands.h"
#include "gateway/file_source.h"
#include "gateway/sim/simulator.h"

namespace arbiter::cli {
namespace {

// Bounds memory when the gateway falls behind the offered rate.
constexpr int kMaxInFlight = 10000;

struct RouteTally {
  int64_t requests = 0;
  int64_t scored = 0;
  int64_t correct = 0;
  double cost_usd = 0;
  std::vector<double> latencies_ms;
};

double Quantile(std::vector<double>& values, double q) {
  if (values.empty()) return 0;
  size_t k = static_cast<size_t>(q * (values.size() - 1));
  std::nth_element(values.begin(), values.begin() + k, values.end());
  return values[k];
}

class Loadgen final {
 public:
  Loadgen(std::shared_ptr<grpc::Channel> channel, bool send_feedback)
      : gateway_(v1::Gateway::NewStub(channel)),
        send_feedback_(send_feedback) {}

  void Send(const sim::LabeledQuestion& question, const std::string& unit) {
    if (in_flight_.load() >= kMaxInFlight) {
      absl::MutexLock lock(&mu_);
      ++dropped_;
      return;
    }
    ++in_flight_;
    auto* call = new InferCall;
    call->question = &question;
    call->start = absl::Now();
    call->context.set_deadline(std::chrono::system_clock::now() +
                               std::chrono::seconds(60));
    v1::ChatMessage* message = call->request.add_messages();
    message->set_role(v1::ROLE_USER);
    message->set_content(question.question);
    call->request.set_task(question.task);
    call->request.set_unit_id(unit);
    gateway_->async()->Infer(
        &call->context, &call->request, &call->response,
        [this, call](grpc::Status status) { OnInferDone(call, status); });
  }

  void WaitForInFlight(absl::Duration limit) {
    absl::Time deadline = absl::Now() + limit;
    while (in_flight_.load() > 0 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(20));
    }
  }

  // The table, one row per route plus a total.
  std::string Table(absl::Duration elapsed) {
    absl::MutexLock lock(&mu_);
    std::string out = absl::StrFormat(
        "t=%5.1fs  sent %d  ok %d  errors %d  dropped %d  in flight %d\n",
        absl::ToDoubleSeconds(elapsed), sent_, ok_, errors_total_, dropped_,
        in_flight_.load());
    absl::StrAppendFormat(&out, "%-14s %8s %9s %12s %12s %9s %9s\n", "route",
                          "requests", "accuracy", "$/request", "$/correct",
                          "p50 ms", "p99 ms");
    RouteTally total;
    auto row = [&](const std::string& name, RouteTally& tally) {
      double accuracy = tally.scored > 0
                            ? static_cast<double>(tally.correct) / tally.scored
                            : 0;
      double per_request =
          tally.requests > 0 ? tally.cost_usd / tally.requests : 0;
      double per_correct =
          tally.correct > 0 ? tally.cost_usd / tally.correct : 0;
      absl::StrAppendFormat(&out, "%-14s %8d %9.3f %12.6f %12.6f %9.1f %9.1f\n",
                            name, tally.requests, accuracy, per_request,
                            per_correct, Quantile(tally.latencies_ms, 0.5),
                            Quantile(tally.latencies_ms, 0.99));
    };
    for (auto& [route, tally] : routes_) {
      row(route, tally);
      total.requests += tally.requests;
      total.scored += tally.scored;
      total.correct += tally.correct;
      total.cost_usd += tally.cost_usd;
      total.latencies_ms.insert(total.latencies_ms.end(),
                                tally.latencies_ms.begin(),
                                tally.latencies_ms.end());
    }
    row("TOTAL", total);
    for (const auto& [error, count] : errors_) {
      absl::StrAppendFormat(&out, "error x%d: %s\n", count, error);
    }
    return out;
  }

  void CountSent() {
    absl::MutexLock lock(&mu_);
    ++sent_;
  }

  [[nodiscard]] int64_t errors() {
    absl::MutexLock lock(&mu_);
    return errors_total_;
  }

 private:
  struct InferCall {
    const sim::LabeledQuestion* question;
    absl::Time start;
    grpc::ClientContext context;
    v1::InferRequest request;
    v1::InferResponse response;
  };
  struct FeedbackCall {
    grpc::ClientContext context;
    v1::FeedbackRequest request;
    v1::FeedbackResponse response;
  };

  void OnInferDone(InferCall* call, const grpc::Status& status) {
    double latency_ms = absl::ToDoubleMilliseconds(absl::Now() - call->start);
    bool correct = status.ok() && absl::StrContains(call->response.text(),
                                                    call->question->answer);
    {
      absl::MutexLock lock(&mu_);
      if (status.ok()) {
        ++ok_;
        RouteTally& tally = routes_[call->response.route()];
        ++tally.requests;
        ++tally.scored;
        tally.correct += correct;
        tally.cost_usd += call->response.cost_usd();
        tally.latencies_ms.push_back(latency_ms);
      } else {
        ++errors_total_;
        ++errors_[absl::StrCat(StatusCodeName(status.error_code()), ": ",
                               status.error_message())];
      }
    }
    if (status.ok() && send_feedback_) {
      auto* feedback = new FeedbackCall;
      feedback->request.set_request_id(call->response.request_id());
      feedback->request.set_correct(correct);
      feedback->context.set_deadline(std::chrono::system_clock::now() +
                                     std::chrono::seconds(10));
      ++in_flight_;
      gateway_->async()->Feedback(
          &feedback->context, &feedback->request, &feedback->response,
          [this, feedback](grpc::Status status) {
            if (!status.ok()) {
              absl::MutexLock lock(&mu_);
              ++errors_total_;
              ++errors_[absl::StrCat("feedback ",
                                     StatusCodeName(status.error_code()), ": ",
                                     status.error_message())];
            }
            delete feedback;
            --in_flight_;
          });
    }
    delete call;
    --in_flight_;
  }

  std::unique_ptr<v1::Gateway::Stub> gateway_;
  const bool send_feedback_;
  std::atomic<int> in_flight_{0};
  absl::Mutex mu_;
  std::map<std::string, RouteTally> routes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> errors_ ABSL_GUARDED_BY(mu_);
  int64_t sent_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t ok_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t errors_total_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

int RunLoadgen(int argc, char** argv) {
  auto args = Args::Parse(
      argc, argv,
      {"target", "dataset", "qps", "duration", "task", "seed", "units"},
      {"feedback"});
  if (!args.ok()) {
    std::cerr << "arbiter: " << args.status().message() << "\n";
    return 2;
  }
  auto qps = args->GetDouble("qps", 50);
  auto seed = args->GetInt("seed", 1);
  // Simulated users: each request comes from one of this many unit ids, so
  // experiments see sticky assignment.
  auto units = args->GetInt("units", 1000);
  absl::Duration duration;
  if (!qps.ok() || !seed.ok() || !units.ok() || *units < 1 || !(*qps > 0) ||
      !absl::ParseDuration(args->Get("duration", "60s"), &duration) ||
      duration <= absl::ZeroDuration()) {
    std::cerr << "arbiter: --qps must be > 0, --units >= 1 and --duration a "
                 "duration such as 60s or 2m\n";
    return 2;
  }
  absl::StatusOr<std::string> text =
      args->Has("dataset") ? MakeDiskFileSource(".")->Read(args->Get("dataset"))
                           : MakeEmbeddedFileSource()->Read("questions.jsonl");
  if (!text.ok()) {
    std::cerr << "arbiter: --dataset: " << text.status().message() << "\n";
    return 1;
  }
  auto questions = sim::ParseQuestionSet(*text);
  if (!questions.ok()) {
    std::cerr << "arbiter: --dataset: " << questions.status().message() << "\n";
    return 1;
  }
  if (args->Has("task")) {
    std::erase_if(*questions, [&](const sim::LabeledQuestion& q) {
      return q.task != args->Get("task");
    });
  }
  if (questions->empty()) {
    std::cerr << "arbiter: --dataset: no questions to send\n";
    return 1;
  }
  Loadgen loadgen(Connect(args->Get("target", kDefaultTarget)),
                  args->Has("feedback"));
  absl::BitGen gen(std::seed_seq{*seed});
  const bool tty = isatty(STDOUT_FILENO);
  const absl::Time start = absl::Now();
  const absl::Duration interval = absl::Seconds(1.0 / *qps);
  absl::Time next_send = start;
  absl::Time next_print = start + absl::Seconds(1);
  int printed_lines = 0;
  auto print = [&](bool final) {
    std::string table = loadgen.Table(absl::Now() - start);
    if (tty && printed_lines > 0 && !final) {
      std::cout << "\033[" << printed_lines << "A\033[J";
    }
    std::cout << table << (tty ? "" : "\n") << std::flush;
    printed_lines =
        static_cast<int>(std::count(table.begin(), table.end(), '\n'));
  };
  while (next_send < start + duration) {
    absl::Time now = absl::Now();
    if (now >= next_print) {
      print(false);
      next_print += absl::Seconds(1);
    }
    if (now < next_send) {
      absl::SleepFor(std::min(next_send, next_print) - now);
      continue;
    }
    const auto& question =
        (*questions)[absl::Uniform<size_t>(gen, 0, questions->size())];
    loadgen.Send(question,
                 absl::StrCat("user-", absl::Uniform<int>(gen, 0, *units)));
    loadgen.CountSent();
    next_send += interval;
  }
  loadgen.WaitForInFlight(absl::Seconds(60));
  std::cout << "\nfinal:\n";
  print(true);
  return loadgen.errors() > 0 ? 3 : 0;
}

}  // namespace arbiter::cli
