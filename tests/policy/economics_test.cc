#include "policy/economics.h"

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace arbiter::policy {
namespace {

v1::Pricing Prices(double in, double out, double request, double retrieval) {
  v1::Pricing pricing;
  pricing.set_input_usd_per_mtok(in);
  pricing.set_output_usd_per_mtok(out);
  pricing.set_request_usd(request);
  pricing.set_retrieval_usd_per_query(retrieval);
  return pricing;
}

TEST(EconomicsTest, PricesTokensPerMillion) {
  // 1,000 input tokens at $3/M = $0.003; 200 output at $15/M = $0.003.
  RequestCost cost = PriceRequest(Prices(3, 15, 0, 0), 1000, 200, false);
  EXPECT_DOUBLE_EQ(cost.input_usd, 0.003);
  EXPECT_DOUBLE_EQ(cost.output_usd, 0.003);
  EXPECT_DOUBLE_EQ(cost.total_usd(), 0.006);
}

TEST(EconomicsTest, AddsRequestFeeAndRetrievalOnlyWhenRetrieved) {
  v1::Pricing pricing = Prices(0.3, 1.2, 0.0005, 0.0001);
  // 250 * 0.3e-6 + 40 * 1.2e-6 + 0.0005 = 0.000075 + 0.000048 + 0.0005.
  EXPECT_NEAR(PriceRequest(pricing, 250, 40, false).total_usd(), 0.000623,
              1e-15);
  EXPECT_NEAR(PriceRequest(pricing, 250, 40, true).total_usd(), 0.000723,
              1e-15);
  EXPECT_DOUBLE_EQ(PriceRequest(pricing, 250, 40, true).retrieval_usd, 0.0001);
}

TEST(EconomicsTest, NoUsageCostsOnlyTheFees) {
  EXPECT_DOUBLE_EQ(
      PriceRequest(Prices(3, 15, 0.01, 0), 0, 0, false).total_usd(), 0.01);
}

// Two routes on two tasks: a prompted baseline at $0.009 per request and a
// fine-tune at $0.001, trained for $100 ten days before the gateway started,
// amortised over 100 days ($1/day), hosted at `hosting` dollars an hour.
class LedgerTest : public ::testing::Test {
 protected:
  static v1::Config Config(double hosting, double training) {
    v1::Config config;
    config.add_tasks("faq");
    config.add_tasks("billing");
    v1::Route* prompted = config.add_routes();
    prompted->set_name("prompted");
    prompted->set_kind(v1::ROUTE_KIND_PROMPTED);
    v1::Route* tuned = config.add_routes();
    tuned->set_name("tuned");
    tuned->set_kind(v1::ROUTE_KIND_FINE_TUNED);
    tuned->mutable_pricing()->set_hosting_usd_per_hour(hosting);
    tuned->mutable_training()->set_cost_usd(training);
    tuned->mutable_training()->set_date("2025-12-22");
    tuned->mutable_training()->set_baseline_route("prompted");
    tuned->mutable_training()->set_amortization_days(100);
    config.mutable_economics()->set_window_minutes(60);
    return config;
  }
  static RequestCost Costing(double usd) {
    RequestCost cost;
    cost.input_usd = usd;
    return cost;
  }
  // Twelve hours after the start; traffic came half an hour ago.
  void Fill(EconomicsLedger& ledger, double tuned_usd = 0.001) {
    const absl::Time at = now_ - absl::Minutes(30);
    for (int i = 0; i < 10; ++i) ledger.RecordRequest(0, 0, Costing(0.009), at);
    for (int i = 0; i < 10; ++i) ledger.RecordFeedback(0, 0, i < 8, at);
    for (int i = 0; i < 100; ++i) {
      ledger.RecordRequest(1, 0, Costing(tuned_usd), at);
    }
    for (int i = 0; i < 10; ++i) ledger.RecordFeedback(1, 0, i < 9, at);
  }
  const absl::Time start_ =
      absl::FromCivil(absl::CivilSecond(2026, 1, 1), absl::UTCTimeZone());
  const absl::Time now_ = start_ + absl::Hours(12);
};

TEST_F(LedgerTest, CostPerCorrectAnswerIncludesHostingAndTraining) {
  EconomicsLedger ledger(Config(1, 100), start_, {0.009, 0.001});
  Fill(ledger);
  const EconomicsSnapshot snapshot = ledger.Snapshot(now_);
  const RouteEconomics& prompted = snapshot.routes[0];
  // 10 x $0.009 = $0.09; 8 correct of 10: $0.01125 per correct answer.
  EXPECT_NEAR(prompted.request_cost.total_usd(), 0.09, 1e-12);
  EXPECT_NEAR(*prompted.cost_per_request_usd, 0.009, 1e-12);
  EXPECT_NEAR(*prompted.cost_per_correct_usd, 0.01125, 1e-12);
  EXPECT_NEAR(*prompted.accuracy, 0.8, 1e-12);
  const RouteEconomics& tuned = snapshot.routes[1];
  // Requests $0.10 + hosting 12 h x $1 + training 12 h of $1/day = $0.50.
  EXPECT_NEAR(tuned.hosting_usd, 12, 1e-9);
  EXPECT_NEAR(tuned.training_amortized_usd, 0.5, 1e-9);
  EXPECT_NEAR(tuned.total_usd(), 12.6, 1e-9);
  EXPECT_NEAR(*tuned.cost_per_request_usd, 0.126, 1e-9);
  EXPECT_NEAR(*tuned.cost_per_correct_usd, 1.4, 1e-9);  // 12.6 / 9.
  // The last hour: $0.10 + $1 hosting + $1/24 training, over 9 correct.
  EXPECT_NEAR(*tuned.window_cost_per_correct_usd, (0.1 + 1 + 1.0 / 24) / 9,
              1e-9);
  // 100 requests in the last hour: 2,400 a day.
  EXPECT_NEAR(tuned.requests_per_day, 2400, 1e-9);
  // The faq task carries all of the route's fixed costs (all its traffic).
  const TaskEconomics& faq = snapshot.tasks[2];
  ASSERT_EQ(faq.route, 1);
  ASSERT_EQ(faq.task, 0);
  EXPECT_NEAR(faq.fixed_usd, 12.5, 1e-9);
  EXPECT_NEAR(*faq.cost_per_correct_usd, 1.4, 1e-9);
  // No traffic, no feedback: no figure rather than a division by zero.
  const TaskEconomics& billing = snapshot.tasks[3];
  EXPECT_FALSE(billing.cost_per_request_usd.has_value());
  EXPECT_FALSE(billing.cost_per_correct_usd.has_value());
  EXPECT_FALSE(billing.accuracy.has_value());
  EXPECT_EQ(billing.fixed_usd, 0);
}

TEST_F(LedgerTest, HostingThatOutrunsSavingsNeverBreaksEven) {
  EconomicsLedger ledger(Config(1, 100), start_, {0.009, 0.001});
  Fill(ledger);
  const EconomicsSnapshot snapshot = ledger.Snapshot(now_);
  const BreakEven& be = *snapshot.routes[1].breakeven;
  EXPECT_EQ(be.baseline, 0);
  // 100 requests x ($0.009 - $0.001) = $0.80 saved, less $12 of hosting.
  EXPECT_NEAR(*be.savings_per_request_usd, 0.008, 1e-12);
  EXPECT_NEAR(*be.baseline_cost_per_request_usd, 0.009, 1e-12);
  EXPECT_NEAR(be.savings_usd, -11.2, 1e-9);
  EXPECT_NEAR(be.remaining_usd, 111.2, 1e-9);
  EXPECT_EQ(be.recovered_share, 0);
  // 2,400/day x $0.008 = $19.20/day saved against $24/day of hosting.
  EXPECT_TRUE(be.never);
  EXPECT_EQ(be.never_reason,
            "hosting ($24.00/day) exceeds its savings at today's rate "
            "($19.20/day)");
  EXPECT_FALSE(be.days_remaining.has_value());
  EXPECT_FALSE(be.requests_remaining.has_value());
}

TEST_F(LedgerTest, SavingsPayBackTheTrainingAtTodaysRate) {
  EconomicsLedger ledger(Config(0, 100), start_, {0.009, 0.001});
  Fill(ledger);
  const EconomicsSnapshot snapshot = ledger.Snapshot(now_);
  const BreakEven& be = *snapshot.routes[1].breakeven;
  EXPECT_NEAR(be.savings_usd, 0.8, 1e-9);
  EXPECT_NEAR(be.remaining_usd, 99.2, 1e-9);
  EXPECT_NEAR(be.recovered_share, 0.008, 1e-12);
  EXPECT_FALSE(be.never);
  // $99.20 left at $19.20/day: 5.1667 days, 12,400 requests at $0.008.
  EXPECT_NEAR(*be.days_remaining, 99.2 / 19.2, 1e-9);
  EXPECT_NEAR(*be.requests_remaining, 12400, 1);
  // $0.60 / 9 correct = $0.0667 against the baseline's $0.01125.
  EXPECT_NEAR(*be.cost_per_correct_usd, 0.6 / 9, 1e-9);
  EXPECT_NEAR(*be.baseline_cost_per_correct_usd, 0.01125, 1e-12);
  EXPECT_EQ(be.verdict,
            "cheaper per request but dearer per correct answer: it is less "
            "accurate than it is cheap");
}

TEST_F(LedgerTest, CheapTrainingIsRecovered) {
  EconomicsLedger ledger(Config(0, 0.5), start_, {0.009, 0.001});
  Fill(ledger);
  const EconomicsSnapshot snapshot = ledger.Snapshot(now_);
  const BreakEven& be = *snapshot.routes[1].breakeven;
  EXPECT_TRUE(be.recovered);
  EXPECT_EQ(be.recovered_share, 1);
  EXPECT_EQ(be.remaining_usd, 0);
  EXPECT_EQ(*be.requests_remaining, 0);
  EXPECT_EQ(*be.days_remaining, 0);
}

TEST_F(LedgerTest, AFineTuneThatCostsMoreNeverBreaksEven) {
  EconomicsLedger ledger(Config(0, 100), start_, {0.009, 0.001});
  Fill(ledger, /*tuned_usd=*/0.010);
  const EconomicsSnapshot snapshot = ledger.Snapshot(now_);
  const BreakEven& be = *snapshot.routes[1].breakeven;
  EXPECT_NEAR(*be.savings_per_request_usd, -0.001, 1e-12);
  EXPECT_TRUE(be.never);
  EXPECT_EQ(be.never_reason,
            "it costs $0.001000 more per request than its baseline");
  EXPECT_EQ(be.recovered_share, 0);
}

TEST_F(LedgerTest, NoTrafficIsNeverWithAReasonNotANan) {
  EconomicsLedger ledger(Config(1, 100), start_, {0.009, 0.001});
  const EconomicsSnapshot snapshot = ledger.Snapshot(now_);
  const BreakEven& be = *snapshot.routes[1].breakeven;
  EXPECT_TRUE(be.never);
  EXPECT_EQ(be.never_reason, "no requests in the recent window");
  EXPECT_FALSE(be.savings_per_request_usd.has_value());
  EXPECT_EQ(be.verdict, "no traffic yet");
  EXPECT_FALSE(snapshot.routes[1].cost_per_correct_usd.has_value());
  EXPECT_FALSE(snapshot.routes[0].breakeven.has_value());  // Not trained.
}

TEST_F(LedgerTest, BaselineWithoutTrafficOnTheTaskUsesItsOverallMean) {
  EconomicsLedger ledger(Config(0, 100), start_, {0.02, 0.001});
  const absl::Time at = now_ - absl::Minutes(5);
  ledger.RecordRequest(0, 0, Costing(0.009), at);  // Baseline: faq only.
  ledger.RecordRequest(1, 1, Costing(0.001), at);  // Fine-tune: billing.
  const EconomicsSnapshot snapshot = ledger.Snapshot(now_);
  const BreakEven& be = *snapshot.routes[1].breakeven;
  EXPECT_NEAR(*be.baseline_cost_per_request_usd, 0.009, 1e-12);
  // With no baseline traffic at all, its prior cost stands in.
  EconomicsLedger cold(Config(0, 100), start_, {0.02, 0.001});
  cold.RecordRequest(1, 1, Costing(0.001), at);
  EXPECT_NEAR(*cold.Snapshot(now_).routes[1].breakeven->savings_per_request_usd,
              0.019, 1e-12);
}

TEST_F(LedgerTest, OldTrafficLeavesTheWindow) {
  EconomicsLedger ledger(Config(0, 0), start_, {0.009, 0.001});
  ledger.RecordRequest(1, 0, Costing(0.001), now_ - absl::Hours(2));
  ledger.RecordFeedback(1, 0, 1, now_ - absl::Hours(2));
  const EconomicsSnapshot snapshot = ledger.Snapshot(now_);
  const RouteEconomics& tuned = snapshot.routes[1];
  EXPECT_EQ(tuned.requests, 1);
  EXPECT_EQ(tuned.requests_per_day, 0);
  EXPECT_FALSE(tuned.window_cost_per_correct_usd.has_value());
  EXPECT_NEAR(*tuned.cost_per_correct_usd, 0.001, 1e-12);
}

TEST(EconomicsTest, EmbeddingIsPricedPerThousandTokensWhenRetrieving) {
  v1::Pricing pricing;
  pricing.set_embedding_usd_per_ktok(0.02);
  // 50 query tokens at $0.02 per 1k = $0.001.
  EXPECT_NEAR(PriceRequest(pricing, 0, 0, true, 50).embedding_usd, 0.001,
              1e-15);
  EXPECT_EQ(PriceRequest(pricing, 0, 0, false, 50).embedding_usd, 0);
}

TEST_F(LedgerTest, RestoredLedgerAnswersAsTheOneItWasStoredFrom) {
  EconomicsLedger before(Config(1, 100), start_, {0.009, 0.001});
  Fill(before);
  const v1::EconomicsState stored = before.ToState(now_);
  // A restart a second later, from a ledger that began then.
  const absl::Time later = now_ + absl::Seconds(1);
  EconomicsLedger after(Config(1, 100), later, {0.009, 0.001});
  after.Restore(stored, later);
  const EconomicsSnapshot a = before.Snapshot(later);
  const EconomicsSnapshot b = after.Snapshot(later);
  EXPECT_EQ(b.uptime, a.uptime);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(b.routes[r].requests, a.routes[r].requests);
    EXPECT_NEAR(b.routes[r].total_usd(), a.routes[r].total_usd(), 1e-9);
    EXPECT_EQ(b.routes[r].judged, a.routes[r].judged);
    EXPECT_EQ(b.routes[r].window_cost_per_correct_usd,
              a.routes[r].window_cost_per_correct_usd);
  }
  ASSERT_TRUE(b.routes[1].breakeven.has_value());
  EXPECT_NEAR(b.routes[1].breakeven->savings_usd,
              a.routes[1].breakeven->savings_usd, 1e-9);
  EXPECT_NEAR(b.routes[1].breakeven->recovered_share,
              a.routes[1].breakeven->recovered_share, 1e-12);
}

TEST_F(LedgerTest, DowntimeIsBilledOnceAtTodaysPrice) {
  EconomicsLedger before(Config(1, 100), start_, {0.009, 0.001});
  const v1::EconomicsState stored = before.ToState(now_);  // 12 h, $12.
  // Down for 6 hours; hosting now costs $2 an hour.
  const absl::Time restart = now_ + absl::Hours(6);
  EconomicsLedger after(Config(2, 100), restart, {0.009, 0.001});
  after.Restore(stored, restart);
  EXPECT_NEAR(after.HostingUsd(1, restart), 12 + 6 * 2, 1e-9);
  EXPECT_NEAR(after.HostingUsd(1, restart + absl::Hours(1)), 12 + 7 * 2,
              1e-9);
  // Training: 18 hours of $1 a day, whatever the restarts.
  EXPECT_NEAR(after.TrainingAmortizedUsd(1, restart), 0.75, 1e-9);
}

TEST_F(LedgerTest, RoutesAndTasksAreMatchedByName) {
  EconomicsLedger before(Config(1, 100), start_, {0.009, 0.001});
  Fill(before);
  v1::EconomicsState stored = before.ToState(now_);
  // The next config drops "prompted" and adds "new" in front of "tuned".
  v1::Config next = Config(1, 100);
  next.mutable_routes(0)->set_name("new");
  EconomicsLedger after(next, now_, {0.009, 0.001});
  after.Restore(stored, now_);
  const EconomicsSnapshot snapshot = after.Snapshot(now_);
  EXPECT_EQ(snapshot.routes[0].requests, 0);  // "new" starts cold.
  EXPECT_NEAR(snapshot.routes[0].hosting_usd, 0, 1e-12);
  EXPECT_EQ(snapshot.routes[1].requests, 100);  // "tuned" kept.
}

}  // namespace
}  // namespace arbiter::policy
