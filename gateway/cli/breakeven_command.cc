// arbiter breakeven: plan, offline, whether a fine-tune pays for itself.

#include <algorithm>
#include <cmath>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "gateway/cli/args.h"
#include "gateway/cli/client.h"
#include "gateway/cli/commands.h"
#include "nlohmann/json.hpp"
#include "policy/breakeven.h"

namespace arbiter::cli {
namespace {

using nlohmann::json;
using policy::OptionCosts;

constexpr char kUsage[] =
    R"(usage: arbiter breakeven --requests-per-day N TRAINING BASE TUNED [RAG]
                        [--start YYYY-MM-DD] [--json]

Plans, before anything is deployed, whether fine-tuning pays: each option's
cost per request and per correct answer, its monthly cost at N requests/day
(30 days), and when the fine-tune's savings repay its training, counted in
requests and, at equal correct output, in correct answers.

TRAINING, the fine-tune's one-off cost; one of:
  --training-usd X                   what it costs, or
  --training-tokens N --training-epochs E --training-usd-per-mtok X
                                     N tokens x E epochs at X USD per million
BASE (--base-*, the prompted base model) and TUNED (--tuned-*, the
fine-tuned model), per request:
  --{base,tuned}-input-tokens N          required; prompt tokens
  --{base,tuned}-output-tokens N         required; completion tokens
  --{base,tuned}-input-usd-per-mtok X    required
  --{base,tuned}-output-usd-per-mtok X   required
  --{base,tuned}-accuracy A              required; share correct, in (0, 1]
  --{base,tuned}-request-usd X           fixed fee per request; default 0
  --{base,tuned}-hosting-usd-per-hour X  dedicated deployment; default 0
RAG, the base model plus retrieved context (any --rag-* flag adds it):
  --rag-context-tokens N                 required; retrieved tokens added to
                                         the prompt, at the input price
  --rag-accuracy A                       required
  --rag-retrieval-usd-per-query X        default 0
  --rag-embedding-tokens N               query tokens embedded; default 0
  --rag-embedding-usd-per-ktok X         default 0
  --rag-input-tokens, --rag-output-tokens, --rag-input-usd-per-mtok,
  --rag-output-usd-per-mtok, --rag-request-usd, --rag-hosting-usd-per-hour
                                         default to the --base-* values
Other:
  --requests-per-day N                   required; the planned volume
  --start YYYY-MM-DD                     day one of the traffic; default today
  --json                                 the same figures as JSON ("never"
                                         is null, with a "reason")

Example:
  arbiter breakeven --requests-per-day 5000 --training-usd 48 \
    --base-input-tokens 1200 --base-output-tokens 200 \
    --base-input-usd-per-mtok 0.5 --base-output-usd-per-mtok 1.5 \
    --base-accuracy 0.82 --tuned-input-tokens 300 --tuned-output-tokens 200 \
    --tuned-input-usd-per-mtok 0.5 --tuned-output-usd-per-mtok 0.75 \
    --tuned-accuracy 0.88
)";

// A per-option flag: --base-<suffix>, --tuned-<suffix> or --rag-<suffix>.
struct OptionFlag {
  const char* suffix;
  const char* field;  // The OptionCosts field, as the library names it.
  double OptionCosts::*member;
  bool required;  // For base and tuned; RAG takes the base's value instead.
};

constexpr OptionFlag kOptionFlags[] = {
    {"input-tokens", "input_tokens", &OptionCosts::input_tokens, true},
    {"output-tokens", "output_tokens", &OptionCosts::output_tokens, true},
    {"input-usd-per-mtok", "input_usd_per_mtok",
     &OptionCosts::input_usd_per_mtok, true},
    {"output-usd-per-mtok", "output_usd_per_mtok",
     &OptionCosts::output_usd_per_mtok, true},
    {"request-usd", "request_usd", &OptionCosts::request_usd, false},
    {"hosting-usd-per-hour", "hosting_usd_per_hour",
     &OptionCosts::hosting_usd_per_hour, false},
    {"accuracy", "accuracy", &OptionCosts::accuracy, true},
};

// RAG only; context tokens are required, the rest default to 0.
constexpr OptionFlag kRagFlags[] = {
    {"context-tokens", "extra_context_tokens",
     &OptionCosts::extra_context_tokens, true},
    {"retrieval-usd-per-query", "retrieval_usd_per_query",
     &OptionCosts::retrieval_usd_per_query, false},
    {"embedding-tokens", "embedding_tokens", &OptionCosts::embedding_tokens,
     false},
    {"embedding-usd-per-ktok", "embedding_usd_per_ktok",
     &OptionCosts::embedding_usd_per_ktok, false},
};

constexpr const char* kTrainingParts[] = {"training-tokens", "training-epochs",
                                          "training-usd-per-mtok"};

// The library's field path for each flag, so its errors name the flag.
const std::map<std::string, std::string>& FlagsByPath() {
  static const auto* flags = [] {
    auto* map = new std::map<std::string, std::string>{
        {"training.usd", "--training-usd"},
        {"training.tokens", "--training-tokens"},
        {"training.epochs", "--training-epochs"},
        {"training.usd_per_mtok", "--training-usd-per-mtok"},
        {"requests_per_day", "--requests-per-day"},
        {"start", "--start"}};
    for (auto [role, prefix] : {std::pair{"baseline", "base"},
                                {"fine_tuned", "tuned"},
                                {"rag", "rag"}}) {
      for (const OptionFlag& flag : kOptionFlags) {
        (*map)[absl::StrCat(role, ".", flag.field)] =
            absl::StrCat("--", prefix, "-", flag.suffix);
      }
    }
    for (const OptionFlag& flag : kRagFlags) {
      (*map)[absl::StrCat("rag.", flag.field)] =
          absl::StrCat("--rag-", flag.suffix);
    }
    return map;
  }();
  return *flags;
}

// "fine_tuned.accuracy: must be ..." -> "--tuned-accuracy: must be ...".
absl::Status NameFlag(const absl::Status& status) {
  const std::string message(status.message());
  const size_t colon = message.find(": ");
  if (colon == std::string::npos) return status;
  auto it = FlagsByPath().find(message.substr(0, colon));
  if (it == FlagsByPath().end()) return status;
  return absl::Status(status.code(),
                      absl::StrCat(it->second, message.substr(colon)));
}

std::vector<std::string> ValueFlags() {
  std::vector<std::string> flags = {"training-usd", "requests-per-day",
                                    "start"};
  flags.insert(flags.end(), std::begin(kTrainingParts),
               std::end(kTrainingParts));
  for (const char* prefix : {"base", "tuned", "rag"}) {
    for (const OptionFlag& flag : kOptionFlags) {
      flags.push_back(absl::StrCat(prefix, "-", flag.suffix));
    }
  }
  for (const OptionFlag& flag : kRagFlags) {
    flags.push_back(absl::StrCat("rag-", flag.suffix));
  }
  return flags;
}

// Reads --<prefix>-<suffix> into each field; a field without its flag keeps
// its value in `option`, and is listed in `missing` if `check_required` and
// the flag is required.
absl::Status ReadOption(const Args& args, absl::string_view prefix,
                        absl::Span<const OptionFlag> flags, bool check_required,
                        OptionCosts& option,
                        std::vector<std::string>& missing) {
  for (const OptionFlag& flag : flags) {
    const std::string name = absl::StrCat(prefix, "-", flag.suffix);
    if (!args.Has(name)) {
      if (check_required && flag.required) {
        missing.push_back(absl::StrCat("--", name));
      }
      continue;
    }
    absl::StatusOr<double> value = args.GetDouble(name, 0);
    if (!value.ok()) return value.status();
    option.*flag.member = *value;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<double>> OptionalDouble(const Args& args,
                                                     const std::string& name) {
  if (!args.Has(name)) return std::optional<double>();
  absl::StatusOr<double> value = args.GetDouble(name, 0);
  if (!value.ok()) return value.status();
  return std::optional<double>(*value);
}

absl::StatusOr<policy::BreakEvenInputs> ParseInputs(const Args& args,
                                                    absl::CivilDay today) {
  if (!args.positional().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected argument \"", args.positional().front(),
                     "\" (see arbiter breakeven --help)"));
  }
  policy::BreakEvenInputs in;
  std::vector<std::string> missing;
  if (!args.Has("requests-per-day")) missing.push_back("--requests-per-day");
  absl::StatusOr<double> rpd = args.GetDouble("requests-per-day", 0);
  if (!rpd.ok()) return rpd.status();
  in.requests_per_day = *rpd;

  const bool any_part = args.Has("training-tokens") ||
                        args.Has("training-epochs") ||
                        args.Has("training-usd-per-mtok");
  if (args.Has("training-usd") && any_part) {
    return absl::InvalidArgumentError(
        "give either --training-usd, or --training-tokens, --training-epochs "
        "and --training-usd-per-mtok, not both");
  }
  if (!args.Has("training-usd") && !any_part) {
    missing.push_back(
        "--training-usd (or --training-tokens, --training-epochs and "
        "--training-usd-per-mtok)");
  } else if (any_part) {
    for (const char* part : kTrainingParts) {
      if (!args.Has(part)) missing.push_back(absl::StrCat("--", part));
    }
  }
  std::optional<double>* training_fields[] = {
      &in.training.usd, &in.training.tokens, &in.training.epochs,
      &in.training.usd_per_mtok};
  const char* training_flags[] = {"training-usd", kTrainingParts[0],
                                  kTrainingParts[1], kTrainingParts[2]};
  for (int i = 0; i < 4; ++i) {
    auto value = OptionalDouble(args, training_flags[i]);
    if (!value.ok()) return value.status();
    *training_fields[i] = *value;
  }

  for (auto [prefix, option] :
       {std::pair{"base", &in.baseline}, {"tuned", &in.fine_tuned}}) {
    if (absl::Status s =
            ReadOption(args, prefix, kOptionFlags, true, *option, missing);
        !s.ok()) {
      return s;
    }
  }
  bool any_rag = false;
  for (const std::string& flag : ValueFlags()) {
    if (flag.rfind("rag-", 0) == 0 && args.Has(flag)) any_rag = true;
  }
  if (any_rag) {
    OptionCosts rag = in.baseline;  // The same model, plus context.
    rag.accuracy = 0;
    if (!args.Has("rag-accuracy")) missing.push_back("--rag-accuracy");
    absl::Status s = ReadOption(args, "rag", kOptionFlags, false, rag, missing);
    if (s.ok()) s = ReadOption(args, "rag", kRagFlags, true, rag, missing);
    if (!s.ok()) return s;
    in.rag = rag;
  }

  in.start = today;
  if (args.Has("start") &&
      !absl::ParseCivilTime(args.Get("start"), &in.start)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--start: not a date YYYY-MM-DD: \"", args.Get("start"), "\""));
  }
  if (!missing.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "missing required ", missing.size() == 1 ? "flag" : "flags", ": ",
        absl::StrJoin(missing, ", "), " (see arbiter breakeven --help)"));
  }
  return in;
}

// 80000 -> "80,000".
std::string Count(double value) {
  if (!(std::abs(value) < 1e15)) return absl::StrFormat("%.3g", value);
  std::string digits = absl::StrFormat("%.0f", std::abs(value));
  for (int i = static_cast<int>(digits.size()) - 3; i > 0; i -= 3) {
    digits.insert(i, ",");
  }
  return value < 0 ? absl::StrCat("-", digits) : digits;
}

// Enough decimals for three significant digits, and at least six.
std::string PerUnitUsd(double usd) {
  int decimals = 6;
  if (usd != 0) {
    decimals = std::clamp(
        2 - static_cast<int>(std::floor(std::log10(std::abs(usd)))), 6, 12);
  }
  return absl::StrFormat("%s$%.*f", usd < 0 ? "-" : "", decimals,
                         std::abs(usd));
}

// 1485 -> "$1,485.00".
std::string Dollars(double usd) {
  const double cents = std::round(std::abs(usd) * 100);
  return absl::StrFormat("%s$%s.%02d", usd < 0 && cents > 0 ? "-" : "",
                         Count(std::floor(cents / 100)),
                         static_cast<int>(std::fmod(cents, 100)));
}

std::string Date(const std::optional<absl::CivilDay>& date) {
  return date ? absl::FormatCivilTime(*date) : "after 9999-12-31";
}

// Fifteen significant digits: 0.0099, not 0.009899999999999999.
double Round(double value) {
  double rounded = value;
  return absl::SimpleAtod(absl::StrFormat("%.15g", value), &rounded) ? rounded
                                                                     : value;
}

json Nullable(const std::optional<double>& value) {
  return value ? json(Round(*value)) : json(nullptr);
}

json OptionJson(const policy::OptionFigures& f) {
  return {{"name", f.name},
          {"cost_per_request_usd", Round(f.cost_per_request_usd)},
          {"request_cost",
           {{"input_usd", Round(f.request_cost.input_usd)},
            {"output_usd", Round(f.request_cost.output_usd)},
            {"request_usd", Round(f.request_cost.request_usd)},
            {"retrieval_usd", Round(f.request_cost.retrieval_usd)},
            {"embedding_usd", Round(f.request_cost.embedding_usd)},
            {"hosting_usd", Round(f.hosting_usd)}}},
          {"accuracy", Round(f.accuracy)},
          {"cost_per_correct_usd", Round(f.cost_per_correct_usd)},
          {"monthly_usd", Round(f.monthly_usd)},
          {"one_off_usd", Round(f.one_off_usd)}};
}

// Whole counts print as integers (80000, not 80000.0) while they are exact.
json Whole(const std::optional<double>& value) {
  if (value && std::abs(*value) < 9e15) {
    return json(static_cast<int64_t>(*value));
  }
  return Nullable(value);
}

json PointJson(const policy::BreakEvenPoint& p, const char* count_key) {
  json out = {{"savings_usd", Round(p.savings_usd)}, {"never", p.never()}};
  if (std::string(count_key) != "requests") {
    out[count_key] = Whole(p.count);
  }
  out["requests"] = Whole(p.requests);
  out["days"] = Nullable(p.days);
  out["date"] = p.date ? json(absl::FormatCivilTime(*p.date)) : json(nullptr);
  out["reason"] = p.never() ? json(p.never_reason) : json(nullptr);
  return out;
}

json ComparisonJson(const policy::Comparison& c) {
  return {{"against", c.against},
          {"per_request", PointJson(c.per_request, "requests")},
          {"per_correct", PointJson(c.per_correct, "correct_answers")},
          {"verdict", c.verdict}};
}

std::string ReportJson(const policy::BreakEvenReport& r) {
  json out = {{"requests_per_day", Round(r.requests_per_day)},
              {"start", absl::FormatCivilTime(r.start)},
              {"days_per_month", policy::kDaysPerMonth},
              {"training_usd", Round(r.training_usd)},
              {"options",
               {{"prompted", OptionJson(r.baseline)},
                {"fine_tuned", OptionJson(r.fine_tuned)}}},
              {"breakeven", {{"vs_prompted", ComparisonJson(r.vs_baseline)}}},
              {"cheapest_per_request", r.cheapest_per_request},
              {"cheapest_per_correct", r.cheapest_per_correct}};
  if (r.rag) out["options"]["rag"] = OptionJson(*r.rag);
  if (r.vs_rag) out["breakeven"]["vs_rag"] = ComparisonJson(*r.vs_rag);
  return out.dump(2) + "\n";
}

std::string ReportTable(const policy::BreakEvenReport& r) {
  std::vector<const policy::OptionFigures*> options = {&r.baseline,
                                                       &r.fine_tuned};
  if (r.rag) options.push_back(&*r.rag);
  std::vector<const policy::Comparison*> comparisons = {&r.vs_baseline};
  if (r.vs_rag) comparisons.push_back(&*r.vs_rag);
  std::string out = absl::StrFormat(
      "break-even plan: %s requests/day from %s; a month is %d days\n\n",
      Count(r.requests_per_day), absl::FormatCivilTime(r.start),
      policy::kDaysPerMonth);

  auto row = [&out](absl::string_view label,
                    const std::vector<std::string>& cells) {
    absl::StrAppend(&out, absl::StrFormat("%-28s", label));
    for (const std::string& cell : cells) {
      absl::StrAppend(&out, absl::StrFormat(" %14s", cell));
    }
    absl::StrAppend(&out, "\n");
  };
  auto each = [&options](auto format) {
    std::vector<std::string> cells;
    for (const policy::OptionFigures* f : options) cells.push_back(format(*f));
    return cells;
  };
  using F = policy::OptionFigures;
  row("", each([](const F& f) { return f.name; }));
  row("cost / request",
      each([](const F& f) { return PerUnitUsd(f.cost_per_request_usd); }));
  bool hosted = false;
  for (const F* f : options) hosted |= f->hosting_usd > 0;
  if (hosted) {
    row("  of which hosting",
        each([](const F& f) { return PerUnitUsd(f.hosting_usd); }));
  }
  row("accuracy",
      each([](const F& f) { return absl::StrFormat("%.3f", f.accuracy); }));
  row("cost / correct answer",
      each([](const F& f) { return PerUnitUsd(f.cost_per_correct_usd); }));
  row(absl::StrFormat("monthly cost (%d days)", policy::kDaysPerMonth),
      each([](const F& f) { return Dollars(f.monthly_usd); }));
  row("training (one-off)",
      each([](const F& f) { return Dollars(f.one_off_usd); }));

  auto cmp = [&comparisons](auto format) {
    std::vector<std::string> cells;
    for (const policy::Comparison* c : comparisons) cells.push_back(format(*c));
    return cells;
  };
  using C = policy::Comparison;
  auto never_or = [](const policy::BreakEvenPoint& p, auto format) {
    return p.never() ? std::string("never") : format(p);
  };
  absl::StrAppend(&out, "\n");
  row(absl::StrCat(r.fine_tuned.name, " against"),
      cmp([](const C& c) { return c.against; }));
  row("saving / request",
      cmp([](const C& c) { return PerUnitUsd(c.per_request.savings_usd); }));
  row("break-even requests", cmp([&](const C& c) {
        return never_or(c.per_request,
                        [](const auto& p) { return Count(*p.count); });
      }));
  row("break-even days", cmp([&](const C& c) {
        return never_or(c.per_request, [](const auto& p) {
          return absl::StrFormat("%.1f", *p.days);
        });
      }));
  row("break-even date", cmp([&](const C& c) {
        return never_or(c.per_request,
                        [](const auto& p) { return Date(p.date); });
      }));
  row("saving / correct answer",
      cmp([](const C& c) { return PerUnitUsd(c.per_correct.savings_usd); }));
  row("break-even correct answers", cmp([&](const C& c) {
        return never_or(c.per_correct,
                        [](const auto& p) { return Count(*p.count); });
      }));
  row("  = fine-tune requests", cmp([&](const C& c) {
        return never_or(c.per_correct,
                        [](const auto& p) { return Count(*p.requests); });
      }));
  row("  days", cmp([&](const C& c) {
        return never_or(c.per_correct, [](const auto& p) {
          return absl::StrFormat("%.1f", *p.days);
        });
      }));
  row("  date", cmp([&](const C& c) {
        return never_or(c.per_correct,
                        [](const auto& p) { return Date(p.date); });
      }));

  absl::StrAppend(&out, "\nverdict\n");
  for (const C* c : comparisons) {
    absl::StrAppend(&out, "  against ", c->against, ": ", c->verdict, "\n");
    if (c->per_request.never()) {
      absl::StrAppend(
          &out, "    never per request: ", c->per_request.never_reason, "\n");
    }
    if (c->per_correct.never()) {
      absl::StrAppend(&out, "    never per correct answer: ",
                      c->per_correct.never_reason, "\n");
    }
  }
  absl::StrAppend(&out, "  cheapest per request: ", r.cheapest_per_request,
                  "; per correct answer: ", r.cheapest_per_correct,
                  " (training excluded)\n");
  return out;
}

}  // namespace

absl::StatusOr<std::string> BreakevenOutput(int argc, char** argv,
                                            absl::CivilDay today) {
  auto args = Args::Parse(argc, argv, ValueFlags(), {"json", "help"});
  if (!args.ok()) return args.status();
  if (args->Has("help")) return std::string(kUsage);
  auto inputs = ParseInputs(*args, today);
  if (!inputs.ok()) return inputs.status();
  auto report = policy::PlanBreakEven(*inputs);
  if (!report.ok()) return NameFlag(report.status());
  return args->Has("json") ? ReportJson(*report) : ReportTable(*report);
}

int RunBreakeven(int argc, char** argv) {
  if (argc == 0) {
    std::cerr << kUsage;
    return 2;
  }
  // The planner's calendar: today where it runs.
  const absl::CivilDay today =
      absl::ToCivilDay(absl::Now(), absl::LocalTimeZone());
  auto output = BreakevenOutput(argc, argv, today);
  if (!output.ok()) return Fail(output.status());
  std::cout << *output;
  return 0;
}

}  // namespace arbiter::cli
