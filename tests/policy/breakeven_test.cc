#include "policy/breakeven.h"

#include <cmath>

#include "absl/time/civil_time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbiter::policy {
namespace {

using ::testing::HasSubstr;

constexpr double kUsd = 1e-12;  // Figures are exact to well below this.

// A priced option without fees, retrieval or hosting.
OptionCosts Option(double input_tokens, double output_tokens,
                   double input_usd_per_mtok, double output_usd_per_mtok,
                   double accuracy) {
  OptionCosts option;
  option.input_tokens = input_tokens;
  option.output_tokens = output_tokens;
  option.input_usd_per_mtok = input_usd_per_mtok;
  option.output_usd_per_mtok = output_usd_per_mtok;
  option.accuracy = accuracy;
  return option;
}

TrainingCost TrainingOf(double usd) {
  TrainingCost training;
  training.usd = usd;
  return training;
}

// Prompted: 1200 in @ $0.5/M = $0.0006, 200 out @ $1.5/M = $0.0003.
// $0.0009 per request; accuracy 0.82.
OptionCosts Prompted() { return Option(1200, 200, 0.5, 1.5, 0.82); }

// Fine-tuned: 300 in @ $0.5/M = $0.00015, 200 out @ $0.75/M = $0.00015.
// $0.0003 per request; accuracy 0.88.
OptionCosts FineTuned() { return Option(300, 200, 0.5, 0.75, 0.88); }

// 2M tokens x 3 epochs x $8/M = $48; 5000 requests/day from 2026-12-01.
BreakEvenInputs Example() {
  BreakEvenInputs in;
  in.baseline = Prompted();
  in.fine_tuned = FineTuned();
  in.training.tokens = 2'000'000;
  in.training.epochs = 3;
  in.training.usd_per_mtok = 8;
  in.requests_per_day = 5000;
  in.start = absl::CivilDay(2026, 12, 1);
  return in;
}

void ExpectFinite(const BreakEvenPoint& point) {
  EXPECT_TRUE(std::isfinite(point.savings_usd));
  for (const auto& value : {point.count, point.requests, point.days}) {
    if (value) {
      EXPECT_TRUE(std::isfinite(*value));
    }
  }
}

TEST(BreakEvenTest, HandComputedFineTuneAgainstPrompted) {
  auto report = PlanBreakEven(Example());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->start, absl::CivilDay(2026, 12, 1));
  EXPECT_NEAR(report->training_usd, 48, kUsd);  // 2e6 * 3 * 8 / 1e6.

  const OptionFigures& base = report->baseline;
  EXPECT_EQ(base.name, "prompted");
  EXPECT_NEAR(base.request_cost.input_usd, 0.0006, kUsd);
  EXPECT_NEAR(base.request_cost.output_usd, 0.0003, kUsd);
  EXPECT_NEAR(base.hosting_usd, 0, kUsd);
  EXPECT_NEAR(base.cost_per_request_usd, 0.0009, kUsd);
  // 0.0009 / 0.82 = 9/8200.
  EXPECT_NEAR(base.cost_per_correct_usd, 9.0 / 8200, kUsd);
  EXPECT_NEAR(base.cost_per_correct_usd, 0.00109756097561, 1e-14);
  // 0.0009 * 5000 * 30 = 135.
  EXPECT_NEAR(base.monthly_usd, 135, 1e-9);
  EXPECT_EQ(base.one_off_usd, 0);

  const OptionFigures& tuned = report->fine_tuned;
  EXPECT_EQ(tuned.name, "fine-tuned");
  EXPECT_NEAR(tuned.cost_per_request_usd, 0.0003, kUsd);
  // 0.0003 / 0.88 = 3/8800.
  EXPECT_NEAR(tuned.cost_per_correct_usd, 3.0 / 8800, kUsd);
  EXPECT_NEAR(tuned.monthly_usd, 45, 1e-9);  // 0.0003 * 5000 * 30.
  EXPECT_NEAR(tuned.one_off_usd, 48, kUsd);

  // Saves 0.0009 - 0.0003 = 0.0006 per request: 48 / 0.0006 = 80,000
  // requests = 16 days at 5000/day, the 16th day being 2026-12-16.
  const BreakEvenPoint& per_request = report->vs_baseline.per_request;
  EXPECT_EQ(report->vs_baseline.against, "prompted");
  EXPECT_NEAR(per_request.savings_usd, 0.0006, kUsd);
  ASSERT_FALSE(per_request.never());
  EXPECT_EQ(*per_request.count, 80'000);  // Not 80,001 from rounding.
  EXPECT_EQ(*per_request.requests, 80'000);
  EXPECT_NEAR(*per_request.days, 16, 1e-12);
  EXPECT_EQ(per_request.date, absl::CivilDay(2026, 12, 16));
  EXPECT_EQ(per_request.never_reason, "");

  // Per correct answer: 9/8200 - 3/8800 = (396 - 123)/360800 = 273/360800.
  // 48 / (273/360800) = 63,437.36 -> 63,438 correct answers; / 0.88 =
  // 72,088.6 -> 72,089 requests = 14.4178 days, served on the 15th day.
  const BreakEvenPoint& per_correct = report->vs_baseline.per_correct;
  EXPECT_NEAR(per_correct.savings_usd, 273.0 / 360800, kUsd);
  ASSERT_FALSE(per_correct.never());
  EXPECT_EQ(*per_correct.count, 63'438);
  EXPECT_EQ(*per_correct.requests, 72'089);
  EXPECT_NEAR(*per_correct.days, 14.4178, 1e-12);
  EXPECT_EQ(per_correct.date, absl::CivilDay(2026, 12, 15));

  EXPECT_EQ(report->vs_baseline.verdict,
            "fine-tuned is cheaper than prompted per request and cheaper per "
            "correct answer; it repays its $48.00 training after 80000 "
            "requests (16.0 days, on 2026-12-16)");
  EXPECT_EQ(report->cheapest_per_request, "fine-tuned");
  EXPECT_EQ(report->cheapest_per_correct, "fine-tuned");
  EXPECT_FALSE(report->rag.has_value());
  EXPECT_FALSE(report->vs_rag.has_value());
}

TEST(BreakEvenTest, HostingFoldsIntoCostAndAccuracyVerdictDiffers) {
  BreakEvenInputs in;
  // Prompted: 1000 in @ $1/M = $0.001, 100 out @ $2/M = $0.0002: $0.0012;
  // accuracy 0.9, so $0.0012 / 0.9 = $0.0013333 per correct answer.
  in.baseline = Option(1000, 100, 1, 2, 0.9);
  // Fine-tuned: 500 in @ $1/M = $0.0005 + 100 out @ $2/M = $0.0002, plus
  // hosting $0.1/h * 24 = $2.40/day over 24,000 requests = $0.0001:
  // $0.0008 per request; accuracy 0.5, so $0.0016 per correct answer.
  in.fine_tuned = Option(500, 100, 1, 2, 0.5);
  in.fine_tuned.name = "ft-small";
  in.fine_tuned.hosting_usd_per_hour = 0.1;
  in.training.usd = 100;
  in.requests_per_day = 24'000;
  in.start = absl::CivilDay(2027, 1, 25);
  auto report = PlanBreakEven(in);
  ASSERT_TRUE(report.ok()) << report.status();

  EXPECT_NEAR(report->training_usd, 100, kUsd);
  EXPECT_NEAR(report->baseline.cost_per_request_usd, 0.0012, kUsd);
  EXPECT_NEAR(report->baseline.cost_per_correct_usd, 0.0012 / 0.9, kUsd);
  EXPECT_NEAR(report->baseline.monthly_usd, 864, 1e-9);  // 0.0012*24000*30.
  EXPECT_NEAR(report->fine_tuned.request_cost.total_usd(), 0.0007, kUsd);
  EXPECT_NEAR(report->fine_tuned.hosting_usd, 0.0001, kUsd);
  EXPECT_NEAR(report->fine_tuned.cost_per_request_usd, 0.0008, kUsd);
  EXPECT_NEAR(report->fine_tuned.cost_per_correct_usd, 0.0016, kUsd);
  // 0.0007 * 24000 * 30 = 504 of requests + 0.1 * 24 * 30 = 72 of hosting.
  EXPECT_NEAR(report->fine_tuned.monthly_usd, 576, 1e-9);

  // Saves $0.0004 per request: 100 / 0.0004 = 250,000 requests = 10.4167
  // days, served on the 11th day: 2027-01-25 + 10 = 2027-02-04.
  const BreakEvenPoint& per_request = report->vs_baseline.per_request;
  EXPECT_NEAR(per_request.savings_usd, 0.0004, kUsd);
  ASSERT_FALSE(per_request.never());
  EXPECT_EQ(*per_request.count, 250'000);
  EXPECT_NEAR(*per_request.days, 250'000.0 / 24'000, 1e-12);
  EXPECT_EQ(per_request.date, absl::CivilDay(2027, 2, 4));

  // Per correct answer it loses 0.0016 - 0.0013333 = $0.00026667: never.
  const BreakEvenPoint& per_correct = report->vs_baseline.per_correct;
  EXPECT_NEAR(per_correct.savings_usd, 0.0012 / 0.9 - 0.0016, kUsd);
  EXPECT_TRUE(per_correct.never());
  EXPECT_FALSE(per_correct.requests.has_value());
  EXPECT_FALSE(per_correct.date.has_value());
  EXPECT_EQ(per_correct.never_reason,
            "it costs $0.000267 more per correct answer than prompted "
            "($0.001600 against $0.001333)");
  ExpectFinite(per_correct);

  EXPECT_THAT(report->vs_baseline.verdict,
              HasSubstr("ft-small is cheaper than prompted per request and "
                        "dearer per correct answer: it is less accurate than "
                        "it is cheap"));
  EXPECT_EQ(report->cheapest_per_request, "ft-small");
  EXPECT_EQ(report->cheapest_per_correct, "prompted");
}

TEST(BreakEvenTest, AccuracyCanPayForADearerFineTune) {
  BreakEvenInputs in;
  // Prompted: 1000 in @ $1/M = $0.001; accuracy 0.5: $0.002 per correct.
  in.baseline = Option(1000, 0, 1, 0, 0.5);
  // Fine-tuned: 1000 in @ $1.2/M = $0.0012; accuracy 0.8: $0.0015.
  in.fine_tuned = Option(1000, 0, 1.2, 0, 0.8);
  in.training.usd = 10;
  in.requests_per_day = 1000;
  in.start = absl::CivilDay(2026, 1, 1);
  auto report = PlanBreakEven(in);
  ASSERT_TRUE(report.ok()) << report.status();

  const BreakEvenPoint& per_request = report->vs_baseline.per_request;
  EXPECT_NEAR(per_request.savings_usd, -0.0002, kUsd);
  EXPECT_TRUE(per_request.never());
  EXPECT_EQ(per_request.never_reason,
            "it costs $0.000200 more per request than prompted ($0.001200 "
            "against $0.001000)");
  ExpectFinite(per_request);

  // Saves 0.002 - 0.0015 = $0.0005 per correct answer: 10 / 0.0005 =
  // 20,000 correct answers = 20,000 / 0.8 = 25,000 requests = 25 days,
  // the 25th being 2026-01-25.
  const BreakEvenPoint& per_correct = report->vs_baseline.per_correct;
  EXPECT_NEAR(per_correct.savings_usd, 0.0005, kUsd);
  ASSERT_FALSE(per_correct.never());
  EXPECT_EQ(*per_correct.count, 20'000);
  EXPECT_EQ(*per_correct.requests, 25'000);
  EXPECT_NEAR(*per_correct.days, 25, 1e-12);
  EXPECT_EQ(per_correct.date, absl::CivilDay(2026, 1, 25));

  EXPECT_EQ(report->vs_baseline.verdict,
            "fine-tuned is dearer than prompted per request and cheaper per "
            "correct answer: its accuracy pays for it; it never repays its "
            "$10.00 training per request, but at equal correct output it "
            "does after 20000 correct answers (25000 requests, 25.0 days, "
            "on 2026-01-25)");
  EXPECT_EQ(report->cheapest_per_request, "prompted");
  EXPECT_EQ(report->cheapest_per_correct, "fine-tuned");
}

TEST(BreakEvenTest, RagOptionIsPricedAndComparedWithoutTraining) {
  BreakEvenInputs in = Example();
  // RAG: the prompted request ($0.0009) + 800 context tokens @ $0.5/M
  // ($0.0004) + retrieval $0.0004 + 50 embedded tokens @ $0.00002/k
  // ($0.000001) = $0.001701; accuracy 0.9: $0.00189 per correct answer.
  OptionCosts rag = Prompted();
  rag.extra_context_tokens = 800;
  rag.retrieval_usd_per_query = 0.0004;
  rag.embedding_tokens = 50;
  rag.embedding_usd_per_ktok = 0.00002;
  rag.accuracy = 0.9;
  in.rag = rag;
  auto report = PlanBreakEven(in);
  ASSERT_TRUE(report.ok()) << report.status();

  ASSERT_TRUE(report->rag.has_value());
  EXPECT_EQ(report->rag->name, "rag");
  EXPECT_NEAR(report->rag->request_cost.input_usd, 0.001, kUsd);
  EXPECT_NEAR(report->rag->request_cost.retrieval_usd, 0.0004, kUsd);
  EXPECT_NEAR(report->rag->request_cost.embedding_usd, 0.000001, kUsd);
  EXPECT_NEAR(report->rag->cost_per_request_usd, 0.001701, kUsd);
  EXPECT_NEAR(report->rag->cost_per_correct_usd, 0.00189, kUsd);
  EXPECT_NEAR(report->rag->monthly_usd, 255.15, 1e-9);  // 0.001701*150000.
  EXPECT_EQ(report->rag->one_off_usd, 0);

  // Against RAG the fine-tune saves 0.001701 - 0.0003 = $0.001401: 48 /
  // 0.001401 = 34,261.2 -> 34,262 requests = 6.8524 days, on 2026-12-07.
  ASSERT_TRUE(report->vs_rag.has_value());
  const Comparison& vs_rag = *report->vs_rag;
  EXPECT_EQ(vs_rag.against, "rag");
  EXPECT_NEAR(vs_rag.per_request.savings_usd, 0.001401, kUsd);
  EXPECT_EQ(*vs_rag.per_request.count, 34'262);
  EXPECT_NEAR(*vs_rag.per_request.days, 6.8524, 1e-12);
  EXPECT_EQ(vs_rag.per_request.date, absl::CivilDay(2026, 12, 7));
  // Per correct: 189/100000 - 3/8800 = (2079 - 375)/1100000 = 1704/1100000;
  // 48 / that = 30,985.9 -> 30,986 correct; / 0.88 = 35,211.4 -> 35,212
  // requests = 7.0424 days, on 2026-12-08.
  EXPECT_NEAR(vs_rag.per_correct.savings_usd, 1704.0 / 1'100'000, kUsd);
  EXPECT_EQ(*vs_rag.per_correct.count, 30'986);
  EXPECT_EQ(*vs_rag.per_correct.requests, 35'212);
  EXPECT_NEAR(*vs_rag.per_correct.days, 7.0424, 1e-12);
  EXPECT_EQ(vs_rag.per_correct.date, absl::CivilDay(2026, 12, 8));

  // The comparison with prompted is unchanged by adding RAG.
  EXPECT_EQ(*report->vs_baseline.per_request.count, 80'000);
  EXPECT_EQ(report->cheapest_per_request, "fine-tuned");
  EXPECT_EQ(report->cheapest_per_correct, "fine-tuned");
}

TEST(BreakEvenTest, RagCanBeCheapestPerCorrectAnswer) {
  BreakEvenInputs in = Example();
  in.fine_tuned.accuracy = 0.2;  // $0.0003 / 0.2 = $0.0015 per correct.
  // RAG with free context and retrieval: $0.0009 / 0.9 = $0.001.
  OptionCosts rag = Prompted();
  rag.accuracy = 0.9;
  in.rag = rag;
  auto report = PlanBreakEven(in);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_NEAR(report->rag->cost_per_correct_usd, 0.001, kUsd);
  EXPECT_EQ(report->cheapest_per_request, "fine-tuned");
  EXPECT_EQ(report->cheapest_per_correct, "rag");
  EXPECT_TRUE(report->vs_rag->per_correct.never());
}

TEST(BreakEvenTest, ZeroSavingsNeverBreaksEvenWithoutNaN) {
  BreakEvenInputs in = Example();
  // 600 in @ $1/M + 300 out @ $1/M = $0.0006 + $0.0003: the prompted
  // $0.0009 by another sum, at the same accuracy.
  in.fine_tuned = Option(600, 300, 1, 1, 0.82);
  auto report = PlanBreakEven(in);
  ASSERT_TRUE(report.ok()) << report.status();
  for (const BreakEvenPoint* point :
       {&report->vs_baseline.per_request, &report->vs_baseline.per_correct}) {
    EXPECT_TRUE(point->never());
    EXPECT_EQ(point->savings_usd, 0);
    EXPECT_FALSE(point->requests.has_value());
    EXPECT_FALSE(point->days.has_value());
    EXPECT_FALSE(point->date.has_value());
    ExpectFinite(*point);
  }
  EXPECT_EQ(report->vs_baseline.per_request.never_reason,
            "it costs the same per request as prompted ($0.000900)");
  EXPECT_EQ(report->vs_baseline.verdict,
            "fine-tuned is no cheaper than prompted per request and no "
            "cheaper per correct answer; it never repays its $48.00 training");
  // Ties go to the option without training.
  EXPECT_EQ(report->cheapest_per_request, "prompted");
  EXPECT_EQ(report->cheapest_per_correct, "prompted");
}

TEST(BreakEvenTest, NegativeSavingsNeverBreaksEven) {
  BreakEvenInputs in = Example();
  in.fine_tuned.input_tokens = 3000;  // $0.0015 + $0.00015 = $0.00165.
  in.fine_tuned.accuracy = 0.8;
  auto report = PlanBreakEven(in);
  ASSERT_TRUE(report.ok()) << report.status();
  const Comparison& c = report->vs_baseline;
  EXPECT_NEAR(c.per_request.savings_usd, -0.00075, kUsd);
  EXPECT_TRUE(c.per_request.never());
  EXPECT_TRUE(c.per_correct.never());
  ExpectFinite(c.per_request);
  ExpectFinite(c.per_correct);
  EXPECT_EQ(c.per_request.never_reason,
            "it costs $0.000750 more per request than prompted ($0.001650 "
            "against $0.000900)");
  EXPECT_THAT(c.verdict, HasSubstr("dearer than prompted per request and "
                                   "dearer per correct answer; it never "
                                   "repays its $48.00 training"));
}

TEST(BreakEvenTest, HostingThatEatsTheSavingsSaysWhatVolumeItNeeds) {
  BreakEvenInputs in = Example();
  // $2/h = $48/day over 5000 requests = $0.0096 per request on top of
  // $0.0003; the $0.0006 token saving covers it above 48 / 0.0006 =
  // 80,000 requests/day.
  in.fine_tuned.hosting_usd_per_hour = 2;
  auto report = PlanBreakEven(in);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_NEAR(report->fine_tuned.hosting_usd, 0.0096, kUsd);
  EXPECT_NEAR(report->fine_tuned.cost_per_request_usd, 0.0099, kUsd);
  // 45 of requests + 2 * 24 * 30 = 1440 of hosting.
  EXPECT_NEAR(report->fine_tuned.monthly_usd, 1485, 1e-9);
  const BreakEvenPoint& per_request = report->vs_baseline.per_request;
  EXPECT_TRUE(per_request.never());
  EXPECT_NEAR(per_request.savings_usd, -0.009, kUsd);
  EXPECT_EQ(per_request.never_reason,
            "its hosting ($48.00/day more than prompted's) exceeds its token "
            "savings at 5000 requests/day ($3.00/day); it needs over 80000 "
            "requests/day");
}

TEST(BreakEvenTest, FreeTrainingBreaksEvenAtOnce) {
  BreakEvenInputs in = Example();
  in.training = TrainingOf(0);
  auto report = PlanBreakEven(in);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(*report->vs_baseline.per_request.count, 0);
  EXPECT_EQ(*report->vs_baseline.per_request.days, 0);
  EXPECT_EQ(report->vs_baseline.per_request.date, absl::CivilDay(2026, 12, 1));
  EXPECT_THAT(report->vs_baseline.verdict,
              HasSubstr("it has no training cost to repay"));
}

TEST(BreakEvenTest, BreakEvenPastYear9999HasCountsButNoDate) {
  BreakEvenInputs in = Example();
  in.fine_tuned.input_tokens = 1199.99;  // Saves $0.000000005 per request.
  in.fine_tuned.output_usd_per_mtok = 1.5;
  in.requests_per_day = 1;
  auto report = PlanBreakEven(in);
  ASSERT_TRUE(report.ok()) << report.status();
  const BreakEvenPoint& per_request = report->vs_baseline.per_request;
  ASSERT_FALSE(per_request.never());
  EXPECT_NEAR(*per_request.count, 48 / 5e-9, 1e3);  // ~9.6e9 requests.
  EXPECT_FALSE(per_request.date.has_value());
  EXPECT_THAT(report->vs_baseline.verdict, HasSubstr("after 9999-12-31"));
}

TEST(BreakEvenTest, RoundsPartialRequestsUp) {
  BreakEvenInputs in = Example();
  in.training = TrainingOf(48.0003);  // 80,000.5 requests' worth -> 80,001.
  auto report = PlanBreakEven(in);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(*report->vs_baseline.per_request.count, 80'001);
  EXPECT_EQ(report->vs_baseline.per_request.date, absl::CivilDay(2026, 12, 17));
}

TEST(BreakEvenTest, ValidationNamesTheField) {
  auto error = [](auto mutate) {
    BreakEvenInputs in = Example();
    mutate(in);
    absl::Status status = PlanBreakEven(in).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    return std::string(status.message());
  };
  EXPECT_EQ(error([](BreakEvenInputs& in) { in.fine_tuned.input_tokens = -1; }),
            "fine_tuned.input_tokens: must be a finite number >= 0, got -1");
  EXPECT_EQ(error([](BreakEvenInputs& in) { in.baseline.accuracy = 0; }),
            "baseline.accuracy: must be in (0, 1], got 0");
  EXPECT_EQ(error([](BreakEvenInputs& in) { in.fine_tuned.accuracy = 1.2; }),
            "fine_tuned.accuracy: must be in (0, 1], got 1.2");
  EXPECT_THAT(error([](BreakEvenInputs& in) {
                in.baseline.output_usd_per_mtok = std::nan("");
              }),
              HasSubstr("baseline.output_usd_per_mtok: must be a finite"));
  EXPECT_EQ(error([](BreakEvenInputs& in) {
              OptionCosts rag = Prompted();
              rag.retrieval_usd_per_query = -0.1;
              in.rag = rag;
            }),
            "rag.retrieval_usd_per_query: must be a finite number >= 0, got "
            "-0.1");
  EXPECT_EQ(error([](BreakEvenInputs& in) {
              in.rag = Prompted();
              in.rag->accuracy = 0;
            }),
            "rag.accuracy: must be in (0, 1], got 0");
  EXPECT_EQ(error([](BreakEvenInputs& in) { in.requests_per_day = 0; }),
            "requests_per_day: must be a finite number > 0, got 0");
  EXPECT_THAT(error([](BreakEvenInputs& in) { in.training = {}; }),
              HasSubstr("training: missing"));
  EXPECT_THAT(error([](BreakEvenInputs& in) { in.training.usd = 48; }),
              HasSubstr("not both"));
  EXPECT_THAT(error([](BreakEvenInputs& in) { in.training.epochs.reset(); }),
              HasSubstr("training.epochs: missing"));
  EXPECT_EQ(error([](BreakEvenInputs& in) { in.training.epochs = 0; }),
            "training.epochs: must be a finite number > 0, got 0");
  EXPECT_EQ(error([](BreakEvenInputs& in) { in.training = TrainingOf(-5); }),
            "training.usd: must be a finite number >= 0, got -5");
  EXPECT_THAT(error([](BreakEvenInputs& in) {
                in.start = absl::CivilDay(10000, 1, 1);
              }),
              HasSubstr("start: must be between"));
}

}  // namespace
}  // namespace arbiter::policy
