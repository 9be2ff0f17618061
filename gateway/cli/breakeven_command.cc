// arbiter breakeven: plan, offline, whether a fine-tune pays for itself.

#include <algorithm>
#include <cmath>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/json.h"
#include "gateway/cli/client.h"
#include "gateway/cli/commands.h"
#include "gateway/cli/flags.h"
#include "nlohmann/json.hpp"
#include "policy/breakeven.h"

namespace arbiter::cli {
namespace {

using nlohmann::json;
using policy::OptionCosts;

constexpr char kDescription[] =
    R"(Plan, offline, when a fine-tune repays its training.
Each option's cost per request and per correct answer, its monthly cost at N
requests/day (30 days), and when the fine-tune's savings repay its training,
counted in requests and, at equal correct output, in correct answers. The
options: BASE (--base-*, the prompted base model), TUNED (--tuned-*, the
fine-tuned model) and, if any --rag-* flag is given, RAG (the base model plus
retrieved context). No gateway needed.)";

constexpr char kExample[] =
    R"(arbiter breakeven --requests-per-day 5000 --training-usd 48 \
    --base-input-tokens 1200 --base-output-tokens 200 \
    --base-input-usd-per-mtok 0.5 --base-output-usd-per-mtok 1.5 \
    --base-accuracy 0.82 --tuned-input-tokens 300 --tuned-output-tokens 200 \
    --tuned-input-usd-per-mtok 0.5 --tuned-output-usd-per-mtok 0.75 \
    --tuned-accuracy 0.88)";

// A per-option flag: --base-<suffix>, --tuned-<suffix> or --rag-<suffix>.
struct OptionFlag {
  const char* suffix;
  const char* field;  // The OptionCosts field, as the library names it.
  double OptionCosts::*member;
  bool required;  // For base and tuned; RAG takes the base's value instead.
  const char* help;
};

constexpr OptionFlag kOptionFlags[] = {
    {"input-tokens", "input_tokens", &OptionCosts::input_tokens, true,
     "prompt tokens"},
    {"output-tokens", "output_tokens", &OptionCosts::output_tokens, true,
     "completion tokens"},
    {"input-usd-per-mtok", "input_usd_per_mtok",
     &OptionCosts::input_usd_per_mtok, true,
     "input price, USD per million tokens"},
    {"output-usd-per-mtok", "output_usd_per_mtok",
     &OptionCosts::output_usd_per_mtok, true,
     "output price, USD per million tokens"},
    {"request-usd", "request_usd", &OptionCosts::request_usd, false,
     "fixed fee per request"},
    {"hosting-usd-per-hour", "hosting_usd_per_hour",
     &OptionCosts::hosting_usd_per_hour, false, "a dedicated deployment"},
    {"accuracy", "accuracy", &OptionCosts::accuracy, true,
     "share of answers correct, in (0, 1]"},
};

// RAG only; context tokens are required, the rest default to 0.
constexpr OptionFlag kRagFlags[] = {
    {"context-tokens", "extra_context_tokens",
     &OptionCosts::extra_context_tokens, true,
     "retrieved tokens added to the prompt, at the input price"},
    {"retrieval-usd-per-query", "retrieval_usd_per_query",
     &OptionCosts::retrieval_usd_per_query, false, "the search's fee"},
    {"embedding-tokens", "embedding_tokens", &OptionCosts::embedding_tokens,
     false, "query tokens embedded"},
    {"embedding-usd-per-ktok", "embedding_usd_per_ktok",
     &OptionCosts::embedding_usd_per_ktok, false,
     "embedding price, USD per thousand tokens"},
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

// Reads --<prefix>-<suffix> into each field; a field without its flag keeps
// its value in `option`, and is listed in `missing` if `check_required` and
// the flag is required.
void ReadOption(const std::map<std::string, double>& values,
                absl::string_view prefix, absl::Span<const OptionFlag> flags,
                bool check_required, OptionCosts& option,
                std::vector<std::string>& missing) {
  for (const OptionFlag& flag : flags) {
    const std::string name = absl::StrCat(prefix, "-", flag.suffix);
    auto value = values.find(name);
    if (value == values.end()) {
      if (check_required && flag.required) {
        missing.push_back(absl::StrCat("--", name));
      }
      continue;
    }
    option.*flag.member = value->second;
  }
}

std::optional<double> OptionalValue(const std::map<std::string, double>& values,
                                    const std::string& name) {
  auto value = values.find(name);
  if (value == values.end()) return std::nullopt;
  return value->second;
}

absl::StatusOr<policy::BreakEvenInputs> ParseInputs(const BreakevenFlags& flags,
                                                    absl::CivilDay today) {
  const std::map<std::string, double>& values = flags.values;
  auto has = [&values](const std::string& name) {
    return values.contains(name);
  };
  policy::BreakEvenInputs in;
  std::vector<std::string> missing;
  if (!has("requests-per-day")) missing.push_back("--requests-per-day");
  in.requests_per_day = OptionalValue(values, "requests-per-day").value_or(0);

  const bool any_part = has("training-tokens") || has("training-epochs") ||
                        has("training-usd-per-mtok");
  if (has("training-usd") && any_part) {
    return absl::InvalidArgumentError(
        "give either --training-usd, or --training-tokens, --training-epochs "
        "and --training-usd-per-mtok, not both");
  }
  if (!has("training-usd") && !any_part) {
    missing.push_back(
        "--training-usd (or --training-tokens, --training-epochs and "
        "--training-usd-per-mtok)");
  } else if (any_part) {
    for (const char* part : kTrainingParts) {
      if (!has(part)) missing.push_back(absl::StrCat("--", part));
    }
  }
  in.training.usd = OptionalValue(values, "training-usd");
  in.training.tokens = OptionalValue(values, kTrainingParts[0]);
  in.training.epochs = OptionalValue(values, kTrainingParts[1]);
  in.training.usd_per_mtok = OptionalValue(values, kTrainingParts[2]);

  for (auto [prefix, option] :
       {std::pair{"base", &in.baseline}, {"tuned", &in.fine_tuned}}) {
    ReadOption(values, prefix, kOptionFlags, true, *option, missing);
  }
  const bool any_rag = std::any_of(
      values.begin(), values.end(),
      [](const auto& entry) { return entry.first.rfind("rag-", 0) == 0; });
  if (any_rag) {
    OptionCosts rag = in.baseline;  // The same model, plus context.
    rag.accuracy = 0;
    if (!has("rag-accuracy")) missing.push_back("--rag-accuracy");
    ReadOption(values, "rag", kOptionFlags, false, rag, missing);
    ReadOption(values, "rag", kRagFlags, true, rag, missing);
    in.rag = rag;
  }

  in.start = today;
  if (!flags.start.empty() && !absl::ParseCivilTime(flags.start, &in.start)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--start: not a date YYYY-MM-DD: \"", flags.start, "\""));
  }
  if (!missing.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "missing required ", missing.size() == 1 ? "flag" : "flags", ": ",
        absl::StrJoin(missing, ", ")));
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
  return arbiter::json::Dump(out, 2) + "\n";
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

CLI::App* AddBreakevenCommand(CLI::App& arbiter, BreakevenFlags& flags) {
  CLI::App* breakeven =
      AddCommand(arbiter, "breakeven", kDescription, kExample);
  std::map<std::string, double>& values = flags.values;
  // Each numeric flag lands in `values` only when given, so the planner can
  // tell a missing flag from a zero.
  auto number = [&](const std::string& group, const std::string& name,
                    const std::string& help, const std::string& fallback) {
    CLI::Option* option = breakeven->add_option_function<double>(
        absl::StrCat("--", name),
        [&values, name](const double& value) { values[name] = value; }, help);
    // Counts are N, prices and shares X.
    const bool count = absl::EndsWith(name, "-tokens") ||
                       absl::EndsWith(name, "-epochs") ||
                       name == "requests-per-day";
    option->type_name(count ? "N" : "X")->check(Number())->group(group);
    if (!fallback.empty()) option->default_str(fallback);
  };
  const std::string other = "Options";
  number(other, "requests-per-day", "required: the planned volume", "");
  breakeven
      ->add_option("--start", flags.start, "day one of the traffic, YYYY-MM-DD")
      ->type_name("DATE")
      ->default_str("today")
      ->group(other);
  breakeven
      ->add_flag("--json", flags.json,
                 "the same figures as JSON (\"never\" is null, with a "
                 "\"reason\")")
      ->group(other);

  const std::string training =
      "TRAINING, the fine-tune's one-off cost: --training-usd, or the other "
      "three";
  number(training, "training-usd", "what it costs", "");
  number(training, "training-tokens", "training tokens per epoch", "");
  number(training, "training-epochs", "epochs", "");
  number(training, "training-usd-per-mtok",
         "training price, USD per million tokens", "");

  for (auto [prefix, group] :
       {std::pair{"base", "BASE, the prompted base model, per request"},
        {"tuned", "TUNED, the fine-tuned model, per request"}}) {
    for (const OptionFlag& flag : kOptionFlags) {
      number(group, absl::StrCat(prefix, "-", flag.suffix),
             flag.required ? absl::StrCat("required: ", flag.help) : flag.help,
             flag.required ? "" : "0");
    }
  }
  const std::string rag =
      "RAG, the base model plus retrieved context (any --rag-* flag adds it)";
  for (const OptionFlag& flag : kRagFlags) {
    number(rag, absl::StrCat("rag-", flag.suffix),
           flag.required ? absl::StrCat("required: ", flag.help) : flag.help,
           flag.required ? "" : "0");
  }
  for (const OptionFlag& flag : kOptionFlags) {
    const bool accuracy = std::string(flag.suffix) == "accuracy";
    number(rag, absl::StrCat("rag-", flag.suffix),
           accuracy ? absl::StrCat("required: ", flag.help) : flag.help,
           accuracy ? "" : absl::StrCat("the --base-", flag.suffix, " value"));
  }
  return breakeven;
}

absl::StatusOr<std::string> BreakevenOutput(const BreakevenFlags& flags,
                                            absl::CivilDay today) {
  auto inputs = ParseInputs(flags, today);
  if (!inputs.ok()) return inputs.status();
  auto report = policy::PlanBreakEven(*inputs);
  if (!report.ok()) return NameFlag(report.status());
  return flags.json ? ReportJson(*report) : ReportTable(*report);
}

int RunBreakeven(const BreakevenFlags& flags) {
  // The planner's calendar: today where it runs.
  const absl::CivilDay today =
      absl::ToCivilDay(absl::Now(), absl::LocalTimeZone());
  auto output = BreakevenOutput(flags, today);
  // Every error is about the flags: a usage error.
  if (!output.ok()) return UsageError("breakeven", output.status().message());
  std::cout << *output;
  return 0;
}

}  // namespace arbiter::cli
