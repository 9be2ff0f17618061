#pragma once

// Offline fine-tuning break-even: what each option costs per request and per
// correct answer at a planned volume, and when a fine-tune's savings repay
// its training. Pure: the start date is passed in.
//
//   BreakEvenInputs in;
//   in.baseline.input_tokens = 1200;  // At $0.5/M: $0.0006.
//   in.baseline.input_usd_per_mtok = 0.5;
//   in.baseline.output_tokens = 200;  // At $1.5/M: $0.0003.
//   in.baseline.output_usd_per_mtok = 1.5;
//   in.baseline.accuracy = 0.82;
//   in.fine_tuned = ...;  // $0.0003 per request.
//   in.training.usd = 48;
//   in.requests_per_day = 5000;
//   in.start = absl::CivilDay(2026, 12, 1);
//   absl::StatusOr<BreakEvenReport> report = PlanBreakEven(in);
//   // report->vs_baseline.per_request.count == 80000 (requests),
//   // report->vs_baseline.per_request.date == 2026-12-16.

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/civil_time.h"
#include "policy/economics.h"

namespace arbiter::policy {

// Monthly figures are for this many days at the planned volume.
inline constexpr int kDaysPerMonth = 30;

// One way of answering a request, priced per request for planning. Token
// counts are per-request averages; prices follow v1::Pricing.
struct OptionCosts {
  std::string name;  // For display; empty takes the role's name.
  double input_tokens = 0;
  double output_tokens = 0;
  double input_usd_per_mtok = 0;
  double output_usd_per_mtok = 0;
  double request_usd = 0;  // Fixed fee per request.
  double retrieval_usd_per_query = 0;
  // Retrieved context added to the prompt (RAG), billed at the input price.
  double extra_context_tokens = 0;
  double embedding_tokens = 0;  // Query tokens embedded for retrieval.
  double embedding_usd_per_ktok = 0;
  // A dedicated deployment, paid by the hour whatever the volume.
  double hosting_usd_per_hour = 0;
  double accuracy = 0;  // Share of answers that are correct, in (0, 1].
};

// What training the fine-tune costs, once: either `usd`, or all of tokens,
// epochs and usd_per_mtok (tokens * epochs * usd_per_mtok / 1e6).
struct TrainingCost {
  std::optional<double> usd;
  std::optional<double> tokens;
  std::optional<double> epochs;
  std::optional<double> usd_per_mtok;
};

struct BreakEvenInputs {
  OptionCosts baseline;    // The prompted base model the fine-tune replaces.
  OptionCosts fine_tuned;  // Pays `training` once.
  TrainingCost training;
  std::optional<OptionCosts> rag;  // No training cost.
  double requests_per_day = 0;
  absl::CivilDay start;  // Day one of the traffic.
};

// One option's figures at the planned volume.
struct OptionFigures {
  std::string name;
  RequestCost request_cost;         // Tokens and fees of one request.
  double hosting_usd = 0;           // Hosting spread over a day's requests.
  double cost_per_request_usd = 0;  // request_cost + hosting_usd.
  double accuracy = 0;
  double cost_per_correct_usd = 0;  // cost_per_request_usd / accuracy.
  double monthly_usd = 0;  // kDaysPerMonth days, hosting in, training out.
  double one_off_usd = 0;  // Training, for the fine-tune.
};

// When the fine-tune's savings repay its training, counted in requests or
// in correct answers. Either `count` is set (with requests and days) or
// `never_reason` says why it never breaks even; never NaN or infinity.
struct BreakEvenPoint {
  // What the fine-tune saves per request (or per correct answer); <= 0 when
  // it saves nothing.
  double savings_usd = 0;
  std::optional<double> count;     // Requests or correct answers, whole.
  std::optional<double> requests;  // Fine-tune requests served by then.
  std::optional<double> days;      // requests / requests_per_day.
  // The day the break-even request is served, `start` being the first;
  // absent only when it falls after 9999-12-31.
  std::optional<absl::CivilDay> date;
  std::string never_reason;

  [[nodiscard]] bool never() const { return !count.has_value(); }
};

// The fine-tune measured against one alternative.
struct Comparison {
  std::string against;
  BreakEvenPoint per_request;  // N* = ceil(training / savings per request).
  BreakEvenPoint per_correct;  // In correct answers, at equal output.
  std::string verdict;         // Which is better by each measure, and why.
};

struct BreakEvenReport {
  double requests_per_day = 0;
  absl::CivilDay start;
  double training_usd = 0;
  OptionFigures baseline;
  OptionFigures fine_tuned;
  std::optional<OptionFigures> rag;
  Comparison vs_baseline;
  std::optional<Comparison> vs_rag;
  // Names of the cheapest options; ties go to the one without training.
  std::string cheapest_per_request;
  std::string cheapest_per_correct;
};

// INVALID_ARGUMENT naming the field ("fine_tuned.accuracy: must be in
// (0, 1], got 1.2"): negative or non-finite prices and tokens, accuracy
// outside (0, 1], requests_per_day <= 0, a missing or doubly given training
// cost.
[[nodiscard]] absl::Status ValidateBreakEvenInputs(const BreakEvenInputs& in);

// The one-off training cost in USD; errors as ValidateBreakEvenInputs.
[[nodiscard]] absl::StatusOr<double> TrainingUsd(const TrainingCost& training);

// Every figure of the plan, after validating `in`.
[[nodiscard]] absl::StatusOr<BreakEvenReport> PlanBreakEven(
    const BreakEvenInputs& in);

}  // namespace arbiter::policy
