#include "policy/breakeven.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace arbiter::policy {
namespace {

absl::Status Invalid(absl::string_view path, absl::string_view what,
                     double value) {
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": ", what, ", got ", value));
}

absl::Status CheckNonNegative(absl::string_view path, double value) {
  if (std::isfinite(value) && value >= 0) return absl::OkStatus();
  return Invalid(path, "must be a finite number >= 0", value);
}

absl::Status CheckPositive(absl::string_view path, double value) {
  if (std::isfinite(value) && value > 0) return absl::OkStatus();
  return Invalid(path, "must be a finite number > 0", value);
}

absl::Status ValidateOption(absl::string_view role, const OptionCosts& o) {
  const std::pair<const char*, double> fields[] = {
      {"input_tokens", o.input_tokens},
      {"output_tokens", o.output_tokens},
      {"input_usd_per_mtok", o.input_usd_per_mtok},
      {"output_usd_per_mtok", o.output_usd_per_mtok},
      {"request_usd", o.request_usd},
      {"retrieval_usd_per_query", o.retrieval_usd_per_query},
      {"extra_context_tokens", o.extra_context_tokens},
      {"embedding_tokens", o.embedding_tokens},
      {"embedding_usd_per_ktok", o.embedding_usd_per_ktok},
      {"hosting_usd_per_hour", o.hosting_usd_per_hour},
  };
  for (const auto& [field, value] : fields) {
    if (absl::Status s =
            CheckNonNegative(absl::StrCat(role, ".", field), value);
        !s.ok()) {
      return s;
    }
  }
  // Written so that NaN fails too.
  if (!(o.accuracy > 0 && o.accuracy <= 1)) {
    return Invalid(absl::StrCat(role, ".accuracy"), "must be in (0, 1]",
                   o.accuracy);
  }
  return absl::OkStatus();
}

// Quotients like 48 / 0.0006 land a hair off a whole number in binary
// floating point; that must not cost an extra request.
double CeilCount(double x) {
  const double nearest = std::round(x);
  if (std::abs(x - nearest) <= 1e-9 * std::max(1.0, std::abs(x))) {
    return nearest;
  }
  return std::ceil(x);
}

// The sign of a saving, with differences at rounding-error level counted
// as ties: two sums of the same figures must not "break even" in 1e20
// requests.
int SignOf(double savings, double scale) {
  if (std::abs(savings) <= 1e-12 * scale) return 0;
  return savings > 0 ? 1 : -1;
}

OptionFigures Figures(const OptionCosts& o, absl::string_view default_name,
                      double requests_per_day, double one_off_usd) {
  OptionFigures f;
  f.name = o.name.empty() ? std::string(default_name) : o.name;
  f.request_cost.input_usd =
      (o.input_tokens + o.extra_context_tokens) * o.input_usd_per_mtok / 1e6;
  f.request_cost.output_usd = o.output_tokens * o.output_usd_per_mtok / 1e6;
  f.request_cost.request_usd = o.request_usd;
  f.request_cost.retrieval_usd = o.retrieval_usd_per_query;
  f.request_cost.embedding_usd =
      o.embedding_tokens * o.embedding_usd_per_ktok / 1e3;
  const double hosting_per_day = o.hosting_usd_per_hour * 24;
  f.hosting_usd = hosting_per_day / requests_per_day;
  f.cost_per_request_usd = f.request_cost.total_usd() + f.hosting_usd;
  f.accuracy = o.accuracy;
  f.cost_per_correct_usd = f.cost_per_request_usd / o.accuracy;
  f.monthly_usd =
      (f.request_cost.total_usd() * requests_per_day + hosting_per_day) *
      kDaysPerMonth;
  f.one_off_usd = one_off_usd;
  return f;
}

absl::Status CheckFinite(const OptionFigures& f) {
  for (double value :
       {f.cost_per_request_usd, f.cost_per_correct_usd, f.monthly_usd}) {
    if (!std::isfinite(value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          f.name, ": its costs overflow; check the magnitudes of its inputs"));
    }
  }
  return absl::OkStatus();
}

std::string Usd(double usd) { return absl::StrFormat("$%.6f", usd); }

// Sets count, requests, days and date once the break-even request count is
// known; `count` is in the point's own unit.
void Schedule(double count, double requests, const BreakEvenInputs& in,
              BreakEvenPoint& point) {
  const double days = requests / in.requests_per_day;
  if (!std::isfinite(count) || !std::isfinite(requests) ||
      !std::isfinite(days)) {
    point.never_reason = absl::StrFormat(
        "it saves too little (%s) to repay its training in any plannable "
        "time",
        Usd(point.savings_usd));
    return;
  }
  point.count = count;
  point.requests = requests;
  point.days = days;
  // Day k (from 0) serves requests k*rpd+1 .. (k+1)*rpd.
  const double day_index =
      requests > 0 ? CeilCount(requests / in.requests_per_day) - 1 : 0;
  const absl::civil_diff_t last = absl::CivilDay(9999, 12, 31) - in.start;
  if (day_index <= static_cast<double>(last)) {
    point.date = in.start + static_cast<absl::civil_diff_t>(day_index);
  }
}

BreakEvenPoint PerRequest(const OptionFigures& ref, const OptionFigures& tuned,
                          double training_usd, const BreakEvenInputs& in) {
  BreakEvenPoint point;
  point.savings_usd = ref.cost_per_request_usd - tuned.cost_per_request_usd;
  const int sign =
      SignOf(point.savings_usd,
             std::max(ref.cost_per_request_usd, tuned.cost_per_request_usd));
  if (sign > 0) {
    const double requests = CeilCount(training_usd / point.savings_usd);
    Schedule(requests, requests, in, point);
    return point;
  }
  const double variable_savings =
      ref.request_cost.total_usd() - tuned.request_cost.total_usd();
  const double hosting_gap_per_day =
      (tuned.hosting_usd - ref.hosting_usd) * in.requests_per_day;
  if (SignOf(variable_savings, std::max(ref.request_cost.total_usd(),
                                        tuned.request_cost.total_usd())) > 0) {
    // Cheaper tokens, but the extra hosting eats the savings at this volume.
    point.never_reason = absl::StrFormat(
        "its hosting ($%.2f/day more than %s's) exceeds its token savings "
        "at %.0f requests/day ($%.2f/day); it needs over %.0f requests/day",
        hosting_gap_per_day, ref.name, in.requests_per_day,
        variable_savings * in.requests_per_day,
        hosting_gap_per_day / variable_savings);
  } else if (sign == 0) {
    point.never_reason =
        absl::StrCat("it costs the same per request as ", ref.name, " (",
                     Usd(tuned.cost_per_request_usd), ")");
  } else {
    point.never_reason = absl::StrCat(
        "it costs ", Usd(-point.savings_usd), " more per request than ",
        ref.name, " (", Usd(tuned.cost_per_request_usd), " against ",
        Usd(ref.cost_per_request_usd), ")");
  }
  if (sign == 0) point.savings_usd = 0;
  return point;
}

// At equal correct output: K correct answers cost K * cost per correct on
// each, plus training on the fine-tune.
BreakEvenPoint PerCorrect(const OptionFigures& ref, const OptionFigures& tuned,
                          double training_usd, const BreakEvenInputs& in) {
  BreakEvenPoint point;
  point.savings_usd = ref.cost_per_correct_usd - tuned.cost_per_correct_usd;
  const int sign =
      SignOf(point.savings_usd,
             std::max(ref.cost_per_correct_usd, tuned.cost_per_correct_usd));
  if (sign > 0) {
    const double correct = CeilCount(training_usd / point.savings_usd);
    Schedule(correct, CeilCount(correct / tuned.accuracy), in, point);
  } else if (sign == 0) {
    point.savings_usd = 0;
    point.never_reason =
        absl::StrCat("it costs the same per correct answer as ", ref.name, " (",
                     Usd(tuned.cost_per_correct_usd), ")");
  } else {
    point.never_reason = absl::StrCat(
        "it costs ", Usd(-point.savings_usd), " more per correct answer than ",
        ref.name, " (", Usd(tuned.cost_per_correct_usd), " against ",
        Usd(ref.cost_per_correct_usd), ")");
  }
  return point;
}

std::string When(const BreakEvenPoint& point) {
  return absl::StrFormat(
      "%.1f days, %s", *point.days,
      point.date ? absl::StrCat("on ", absl::FormatCivilTime(*point.date))
                 : std::string("after 9999-12-31"));
}

std::string Verdict(const OptionFigures& ref, const OptionFigures& tuned,
                    double training_usd, const Comparison& c) {
  auto word = [](double savings) {
    return savings > 0 ? "cheaper" : savings < 0 ? "dearer" : "no cheaper";
  };
  const bool cheaper = c.per_request.savings_usd > 0;
  const bool cheaper_correct = c.per_correct.savings_usd > 0;
  std::string verdict =
      absl::StrCat(tuned.name, " is ", word(c.per_request.savings_usd),
                   " than ", ref.name, " per request and ",
                   word(c.per_correct.savings_usd), " per correct answer");
  if (cheaper && !cheaper_correct) {
    absl::StrAppend(&verdict, ": it is less accurate than it is cheap");
  } else if (!cheaper && cheaper_correct) {
    absl::StrAppend(&verdict, ": its accuracy pays for it");
  }
  if (training_usd <= 0) {
    absl::StrAppend(&verdict, "; it has no training cost to repay");
  } else if (!c.per_request.never()) {
    absl::StrAppend(
        &verdict, absl::StrFormat(
                      "; it repays its $%.2f training after %.0f requests "
                      "(%s)",
                      training_usd, *c.per_request.count, When(c.per_request)));
  } else if (!c.per_correct.never()) {
    absl::StrAppend(
        &verdict,
        absl::StrFormat("; it never repays its $%.2f training per request, "
                        "but at equal correct output it does after %.0f "
                        "correct answers (%.0f requests, %s)",
                        training_usd, *c.per_correct.count,
                        *c.per_correct.requests, When(c.per_correct)));
  } else {
    absl::StrAppend(
        &verdict,
        absl::StrFormat("; it never repays its $%.2f training", training_usd));
  }
  return verdict;
}

Comparison Compare(const OptionFigures& ref, const OptionFigures& tuned,
                   double training_usd, const BreakEvenInputs& in) {
  Comparison c;
  c.against = ref.name;
  c.per_request = PerRequest(ref, tuned, training_usd, in);
  c.per_correct = PerCorrect(ref, tuned, training_usd, in);
  c.verdict = Verdict(ref, tuned, training_usd, c);
  return c;
}

}  // namespace

absl::StatusOr<double> TrainingUsd(const TrainingCost& t) {
  const bool any_parts = t.tokens || t.epochs || t.usd_per_mtok;
  if (t.usd.has_value()) {
    if (any_parts) {
      return absl::InvalidArgumentError(
          "training: give either usd, or tokens, epochs and usd_per_mtok, "
          "not both");
    }
    if (absl::Status s = CheckNonNegative("training.usd", *t.usd); !s.ok()) {
      return s;
    }
    return *t.usd;
  }
  if (!any_parts) {
    return absl::InvalidArgumentError(
        "training: missing: give usd, or tokens, epochs and usd_per_mtok");
  }
  const std::pair<const char*, const std::optional<double>*> parts[] = {
      {"training.tokens", &t.tokens},
      {"training.epochs", &t.epochs},
      {"training.usd_per_mtok", &t.usd_per_mtok}};
  for (const auto& [path, part] : parts) {
    if (!part->has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": missing (give usd, or tokens, epochs and usd_per_mtok)"));
    }
  }
  if (absl::Status s = CheckPositive("training.tokens", *t.tokens); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckPositive("training.epochs", *t.epochs); !s.ok()) {
    return s;
  }
  if (absl::Status s =
          CheckNonNegative("training.usd_per_mtok", *t.usd_per_mtok);
      !s.ok()) {
    return s;
  }
  const double usd = *t.tokens * *t.epochs * *t.usd_per_mtok / 1e6;
  if (!std::isfinite(usd)) {
    return absl::InvalidArgumentError(
        "training: tokens * epochs * usd_per_mtok overflows");
  }
  return usd;
}

absl::Status ValidateBreakEvenInputs(const BreakEvenInputs& in) {
  if (absl::Status s = ValidateOption("baseline", in.baseline); !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateOption("fine_tuned", in.fine_tuned); !s.ok()) {
    return s;
  }
  if (in.rag.has_value()) {
    if (absl::Status s = ValidateOption("rag", *in.rag); !s.ok()) return s;
  }
  if (absl::Status s = TrainingUsd(in.training).status(); !s.ok()) return s;
  if (absl::Status s = CheckPositive("requests_per_day", in.requests_per_day);
      !s.ok()) {
    return s;
  }
  if (in.start < absl::CivilDay(1, 1, 1) ||
      in.start > absl::CivilDay(9999, 12, 31)) {
    return absl::InvalidArgumentError(
        absl::StrCat("start: must be between 0001-01-01 and 9999-12-31, got ",
                     absl::FormatCivilTime(in.start)));
  }
  return absl::OkStatus();
}

absl::StatusOr<BreakEvenReport> PlanBreakEven(const BreakEvenInputs& in) {
  if (absl::Status s = ValidateBreakEvenInputs(in); !s.ok()) return s;
  BreakEvenReport report;
  report.requests_per_day = in.requests_per_day;
  report.start = in.start;
  report.training_usd = *TrainingUsd(in.training);
  report.baseline = Figures(in.baseline, "prompted", in.requests_per_day, 0);
  report.fine_tuned = Figures(in.fine_tuned, "fine-tuned", in.requests_per_day,
                              report.training_usd);
  if (in.rag.has_value()) {
    report.rag = Figures(*in.rag, "rag", in.requests_per_day, 0);
  }
  // In order of preference on a tie: no training first.
  std::vector<const OptionFigures*> options = {&report.baseline};
  if (report.rag.has_value()) options.push_back(&*report.rag);
  options.push_back(&report.fine_tuned);
  for (const OptionFigures* f : options) {
    if (absl::Status s = CheckFinite(*f); !s.ok()) return s;
  }
  report.vs_baseline =
      Compare(report.baseline, report.fine_tuned, report.training_usd, in);
  if (report.rag.has_value()) {
    report.vs_rag =
        Compare(*report.rag, report.fine_tuned, report.training_usd, in);
  }
  const OptionFigures* per_request = options.front();
  const OptionFigures* per_correct = options.front();
  auto cheaper = [](double candidate, double best) {
    return SignOf(best - candidate, std::max(best, candidate)) > 0;
  };
  for (const OptionFigures* f : options) {
    if (cheaper(f->cost_per_request_usd, per_request->cost_per_request_usd)) {
      per_request = f;
    }
    if (cheaper(f->cost_per_correct_usd, per_correct->cost_per_correct_usd)) {
      per_correct = f;
    }
  }
  report.cheapest_per_request = per_request->name;
  report.cheapest_per_correct = per_correct->name;
  return report;
}

}  // namespace arbiter::policy
