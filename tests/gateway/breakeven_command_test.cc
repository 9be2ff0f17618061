#include <string>
#include <vector>

#include "absl/time/civil_time.h"
#include "gateway/cli/command_line.h"
#include "gateway/cli/commands.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace arbiter::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const absl::CivilDay kToday(2026, 12, 1);

// `arbiter breakeven WORDS...` as the binary would parse and plan it: the
// help, the plan, or the usage error as INVALID_ARGUMENT.
absl::StatusOr<std::string> Breakeven(const std::vector<std::string>& words) {
  std::vector<std::string> argv = {"arbiter", "breakeven"};
  argv.insert(argv.end(), words.begin(), words.end());
  CommandLine command_line;
  CommandLine::Parsed parsed = command_line.Parse(argv);
  if (parsed.outcome == CommandLine::Outcome::kHelp) return parsed.text;
  if (parsed.outcome == CommandLine::Outcome::kUsageError) {
    return absl::InvalidArgumentError(parsed.text);
  }
  return BreakevenOutput(command_line.flags().breakeven, kToday);
}

// The policy test's first example: $0.0009 against $0.0003 per request, $48
// of training, 5000 requests/day.
std::vector<std::string> Example() {
  return {"--requests-per-day",
          "5000",
          "--training-tokens",
          "2000000",
          "--training-epochs",
          "3",
          "--training-usd-per-mtok",
          "8",
          "--base-input-tokens",
          "1200",
          "--base-output-tokens",
          "200",
          "--base-input-usd-per-mtok",
          "0.5",
          "--base-output-usd-per-mtok=1.5",
          "--base-accuracy",
          "0.82",
          "--tuned-input-tokens",
          "300",
          "--tuned-output-tokens",
          "200",
          "--tuned-input-usd-per-mtok",
          "0.5",
          "--tuned-output-usd-per-mtok",
          "0.75",
          "--tuned-accuracy",
          "0.88"};
}

std::vector<std::string> With(std::vector<std::string> words,
                              const std::vector<std::string>& more) {
  words.insert(words.end(), more.begin(), more.end());
  return words;
}

TEST(BreakevenCommandTest, JsonCarriesEveryFigureAsNumbers) {
  auto out = Breakeven(With(Example(), {"--json"}));
  ASSERT_TRUE(out.ok()) << out.status();
  auto json = nlohmann::json::parse(*out);
  EXPECT_EQ(json["start"], "2026-12-01");  // Today by default.
  EXPECT_EQ(json["requests_per_day"], 5000);
  EXPECT_EQ(json["days_per_month"], 30);
  EXPECT_NEAR(json["training_usd"].get<double>(), 48, 1e-12);
  const auto& base = json["options"]["prompted"];
  EXPECT_NEAR(base["cost_per_request_usd"].get<double>(), 0.0009, 1e-12);
  EXPECT_NEAR(base["cost_per_correct_usd"].get<double>(), 9.0 / 8200, 1e-12);
  EXPECT_NEAR(base["monthly_usd"].get<double>(), 135, 1e-9);
  const auto& tuned = json["options"]["fine_tuned"];
  EXPECT_NEAR(tuned["cost_per_request_usd"].get<double>(), 0.0003, 1e-12);
  EXPECT_NEAR(tuned["monthly_usd"].get<double>(), 45, 1e-9);
  EXPECT_NEAR(tuned["one_off_usd"].get<double>(), 48, 1e-12);
  const auto& per_request = json["breakeven"]["vs_prompted"]["per_request"];
  EXPECT_EQ(per_request["requests"], 80000);
  EXPECT_TRUE(per_request["requests"].is_number_integer());
  EXPECT_NEAR(per_request["days"].get<double>(), 16, 1e-12);
  EXPECT_EQ(per_request["date"], "2026-12-16");
  EXPECT_EQ(per_request["never"], false);
  EXPECT_TRUE(per_request["reason"].is_null());
  const auto& per_correct = json["breakeven"]["vs_prompted"]["per_correct"];
  EXPECT_EQ(per_correct["correct_answers"], 63438);
  EXPECT_EQ(per_correct["requests"], 72089);
  EXPECT_EQ(per_correct["date"], "2026-12-15");
  EXPECT_EQ(json["cheapest_per_correct"], "fine-tuned");
  EXPECT_FALSE(json["options"].contains("rag"));
}

TEST(BreakevenCommandTest, NeverIsNullWithAReason) {
  auto out =
      Breakeven(With(Example(), {"--tuned-input-tokens", "3000", "--json"}));
  ASSERT_TRUE(out.ok()) << out.status();
  auto json = nlohmann::json::parse(*out);
  const auto& per_request = json["breakeven"]["vs_prompted"]["per_request"];
  EXPECT_EQ(per_request["never"], true);
  EXPECT_TRUE(per_request["requests"].is_null());
  EXPECT_TRUE(per_request["days"].is_null());
  EXPECT_TRUE(per_request["date"].is_null());
  EXPECT_THAT(per_request["reason"].get<std::string>(),
              HasSubstr("more per request than prompted"));
  EXPECT_THAT(*out, Not(HasSubstr("nan")));
  EXPECT_THAT(*out, Not(HasSubstr("inf")));
}

TEST(BreakevenCommandTest, TablePrintsEachFigure) {
  auto out = Breakeven(With(Example(), {"--start", "2027-03-01"}));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(*out, HasSubstr("5,000 requests/day from 2027-03-01"));
  EXPECT_THAT(*out, HasSubstr("$0.000900"));
  EXPECT_THAT(*out, HasSubstr("$135.00"));
  EXPECT_THAT(*out, HasSubstr("$48.00"));
  EXPECT_THAT(*out, HasSubstr("80,000"));
  EXPECT_THAT(*out, HasSubstr("2027-03-16"));
  EXPECT_THAT(*out, HasSubstr("cheapest per request: fine-tuned"));
}

TEST(BreakevenCommandTest, TableSaysNeverAndWhy) {
  // $2/h of hosting is $0.0096 per request at 5000/day.
  auto out = Breakeven(With(Example(), {"--tuned-hosting-usd-per-hour", "2"}));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(*out, HasSubstr("of which hosting"));
  EXPECT_THAT(*out, HasSubstr("-$0.009000"));
  EXPECT_THAT(*out, HasSubstr("$1,485.00"));
  EXPECT_THAT(*out, HasSubstr("never"));
  EXPECT_THAT(*out, HasSubstr("it needs over 80000 requests/day"));
}

TEST(BreakevenCommandTest, RagInheritsTheBaseModel) {
  auto out =
      Breakeven(With(Example(), {"--rag-context-tokens", "800",
                                 "--rag-retrieval-usd-per-query", "0.0004",
                                 "--rag-accuracy", "0.9", "--json"}));
  ASSERT_TRUE(out.ok()) << out.status();
  auto json = nlohmann::json::parse(*out);
  // (1200 + 800) * 0.5/M + 200 * 1.5/M + 0.0004 = 0.001 + 0.0003 + 0.0004.
  EXPECT_NEAR(json["options"]["rag"]["cost_per_request_usd"].get<double>(),
              0.0017, 1e-12);
  EXPECT_EQ(json["breakeven"]["vs_rag"]["against"], "rag");
  // 48 / (0.0017 - 0.0003) = 34,285.7 -> 34,286.
  EXPECT_EQ(json["breakeven"]["vs_rag"]["per_request"]["requests"], 34286);
}

TEST(BreakevenCommandTest, TrainingUsdReplacesTokensTimesEpochs) {
  auto out = Breakeven({"--requests-per-day",
                        "5000",
                        "--training-usd",
                        "48",
                        "--base-input-tokens",
                        "1200",
                        "--base-output-tokens",
                        "200",
                        "--base-input-usd-per-mtok",
                        "0.5",
                        "--base-output-usd-per-mtok",
                        "1.5",
                        "--base-accuracy",
                        "0.82",
                        "--tuned-input-tokens",
                        "300",
                        "--tuned-output-tokens",
                        "200",
                        "--tuned-input-usd-per-mtok",
                        "0.5",
                        "--tuned-output-usd-per-mtok",
                        "0.75",
                        "--tuned-accuracy",
                        "0.88",
                        "--json"});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(nlohmann::json::parse(
                *out)["breakeven"]["vs_prompted"]["per_request"]["requests"],
            80000);
}

TEST(BreakevenCommandTest, ErrorsNameTheFlag) {
  EXPECT_EQ(Breakeven({"--requests-per-day", "10"}).status().message(),
            "missing required flags: --training-usd (or --training-tokens, "
            "--training-epochs and --training-usd-per-mtok), "
            "--base-input-tokens, --base-output-tokens, "
            "--base-input-usd-per-mtok, --base-output-usd-per-mtok, "
            "--base-accuracy, --tuned-input-tokens, --tuned-output-tokens, "
            "--tuned-input-usd-per-mtok, --tuned-output-usd-per-mtok, "
            "--tuned-accuracy");
  EXPECT_EQ(Breakeven(With(Example(), {"--tuned-accuracy", "1.2"}))
                .status()
                .message(),
            "--tuned-accuracy: must be in (0, 1], got 1.2");
  EXPECT_EQ(Breakeven(With(Example(), {"--base-input-tokens", "-5"}))
                .status()
                .message(),
            "--base-input-tokens: must be a finite number >= 0, got -5");
  EXPECT_EQ(Breakeven(With(Example(), {"--requests-per-day", "0"}))
                .status()
                .message(),
            "--requests-per-day: must be a finite number > 0, got 0");
  EXPECT_EQ(
      Breakeven(With(Example(), {"--training-usd", "48"})).status().message(),
      "give either --training-usd, or --training-tokens, "
      "--training-epochs and --training-usd-per-mtok, not both");
  EXPECT_EQ(Breakeven(With(Example(), {"--rag-context-tokens", "800"}))
                .status()
                .message(),
            "missing required flag: --rag-accuracy");
  EXPECT_EQ(Breakeven(With(Example(), {"--rag-accuracy", "0.9",
                                       "--rag-retrieval-usd-per-query", "-1",
                                       "--rag-context-tokens", "1"}))
                .status()
                .message(),
            "--rag-retrieval-usd-per-query: must be a finite number >= 0, got "
            "-1");
  EXPECT_EQ(
      Breakeven(With(Example(), {"--start", "tomorrow"})).status().message(),
      "--start: not a date YYYY-MM-DD: \"tomorrow\"");
  EXPECT_EQ(Breakeven(With(Example(), {"--base-accuracy", "high"}))
                .status()
                .message(),
            "arbiter breakeven: --base-accuracy: not a number: \"high\" (see "
            "arbiter breakeven --help)");
  EXPECT_THAT(
      Breakeven(With(Example(), {"--epochs", "3"})).status().message(),
      HasSubstr("unknown flag --epochs (did you mean --training-epochs?)"));
  EXPECT_THAT(Breakeven(With(Example(), {"monthly"})).status().message(),
              HasSubstr("unexpected argument \"monthly\""));
}

TEST(BreakevenCommandTest, HelpDocumentsTheFlags) {
  auto out = Breakeven({"--help"});
  ASSERT_TRUE(out.ok());
  for (const char* flag :
       {"--requests-per-day", "--training-usd", "--training-epochs", "--base-",
        "--tuned-", "--rag-context-tokens", "--start", "--json"}) {
    EXPECT_THAT(*out, HasSubstr(flag));
  }
}

}  // namespace
}  // namespace arbiter::cli
