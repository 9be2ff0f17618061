// loadgen: labeled traffic at a fixed rate, scored against expected answers,
// with a live per-route table.

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <iostream>
#include <map>

#include "CLI/CLI.hpp"
#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "gateway/cli/client.h"
#include "gateway/cli/commands.h"
#include "gateway/cli/error_tally.h"
#include "gateway/cli/flags.h"
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

  // One line of counts.
  std::string Progress(absl::Duration elapsed) {
    absl::MutexLock lock(&mu_);
    return ProgressLocked(elapsed);
  }

  // The progress line, then one row per route plus a total.
  std::string Table(absl::Duration elapsed) {
    absl::MutexLock lock(&mu_);
    std::string out = ProgressLocked(elapsed);
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
    absl::StrAppend(&out, errors_.Render());
    return out;
  }

  void CountSent() {
    absl::MutexLock lock(&mu_);
    ++sent_;
  }

  [[nodiscard]] int64_t errors() {
    absl::MutexLock lock(&mu_);
    return errors_.total();
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

  std::string ProgressLocked(absl::Duration elapsed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return absl::StrFormat(
        "t=%5.1fs  sent %d  ok %d  errors %d  dropped %d  in flight %d\n",
        absl::ToDoubleSeconds(elapsed), sent_, ok_, errors_.total(), dropped_,
        in_flight_.load());
  }

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
        errors_.Add(StatusCodeName(status.error_code()),
                    status.error_message());
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
              errors_.Add(absl::StrCat("feedback ",
                                       StatusCodeName(status.error_code())),
                          status.error_message());
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
  ErrorTally errors_ ABSL_GUARDED_BY(mu_);
  int64_t sent_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t ok_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

CLI::App* AddLoadgenCommand(CLI::App& arbiter, LoadgenFlags& flags) {
  CLI::App* loadgen = AddCommand(
      arbiter, "loadgen",
      "Send labeled traffic at a fixed rate and score the answers.\nEach "
      "answer is scored against its question's expected answer. A per-route "
      "table\n(requests, accuracy, cost per request and per correct answer, "
      "p50/p99 latency)\nis redrawn live on a terminal; elsewhere a line of "
      "counts each second, and the\ntable at the end. Exits 3 if any request "
      "failed.",
      "arbiter loadgen --qps 50 --duration 60s --feedback");
  AddTarget(*loadgen, flags.target, flags.api_key_file);
  loadgen
      ->add_option("--dataset", flags.dataset,
                   "JSON Lines of {\"id\", \"task\", \"question\", "
                   "\"answer\"}")
      ->type_name("FILE")
      ->default_str("the quickstart question set");
  loadgen->add_option("--qps", flags.qps, "requests per second")
      ->type_name("N")
      ->capture_default_str()
      ->check(Number())
      ->check(GreaterThan(0));
  loadgen
      ->add_option("--duration", flags.duration,
                   "how long to send, e.g. 90s, 2m, 1h")
      ->type_name("D")
      ->capture_default_str()
      ->check(PositiveDuration());
  loadgen->add_flag("--feedback", flags.feedback,
                    "send each scored outcome as feedback");
  loadgen->add_option("--task", flags.task, "only this task's questions")
      ->type_name("T")
      ->default_str("every task");
  loadgen
      ->add_option("--units", flags.units,
                   "simulated users (experiment units) the traffic comes from")
      ->type_name("N")
      ->capture_default_str()
      ->check(Integer())
      ->check(AtLeast(1));
  loadgen->add_option("--seed", flags.seed, "seed of the question order")
      ->type_name("N")
      ->capture_default_str()
      ->check(Integer());
  return loadgen;
}

int RunLoadgen(const LoadgenFlags& flags) {
  absl::Duration duration;
  if (!absl::ParseDuration(flags.duration, &duration)) {
    return UsageError("loadgen", "--duration: not a duration");  // Checked.
  }
  absl::StatusOr<std::string> text =
      !flags.dataset.empty()
          ? MakeDiskFileSource(".")->Read(flags.dataset)
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
  if (!flags.task.empty()) {
    std::erase_if(*questions, [&](const sim::LabeledQuestion& q) {
      return q.task != flags.task;
    });
  }
  if (questions->empty()) {
    std::cerr << "arbiter: --dataset: no questions to send\n";
    return 1;
  }
  auto credentials = CredentialsOf(flags.api_key_file);
  if (!credentials.ok()) return Fail(credentials.status());
  GatewayChannel channel(flags.target, *credentials);
  if (absl::Status reached = channel.WaitUntilConnected(absl::Seconds(10));
      !reached.ok()) {
    return Fail(reached);
  }
  Loadgen loadgen(channel.get(), flags.feedback);
  absl::BitGen gen(std::seed_seq{flags.seed});
  // The live table redraws itself with cursor moves: only on a terminal.
  // Elsewhere (a file, a pipe) a line of counts a second, the table at the
  // end.
  const bool tty = isatty(STDOUT_FILENO);
  const absl::Time start = absl::Now();
  const absl::Duration interval = absl::Seconds(1.0 / flags.qps);
  absl::Time next_send = start;
  absl::Time next_print = start + absl::Seconds(1);
  int printed_lines = 0;
  auto print = [&](bool final) {
    if (!tty && !final) {
      std::cout << loadgen.Progress(absl::Now() - start) << std::flush;
      return;
    }
    std::string table = loadgen.Table(absl::Now() - start);
    if (tty && printed_lines > 0 && !final) {
      std::cout << "\033[" << printed_lines << "A\033[J";
    }
    std::cout << table << std::flush;
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
    loadgen.Send(question, absl::StrCat("user-", absl::Uniform<int>(
                                                     gen, 0, flags.units)));
    loadgen.CountSent();
    next_send += interval;
  }
  loadgen.WaitForInFlight(absl::Seconds(60));
  std::cout << "\nfinal:\n";
  print(true);
  return loadgen.errors() > 0 ? 3 : 0;
}

}  // namespace arbiter::cli
