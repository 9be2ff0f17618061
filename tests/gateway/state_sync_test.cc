// StateSync between live components and what the state store keeps: a
// batch collected from one set of components, restored into a fresh set,
// gives back what was learned and accounted.

#include "gateway/state_sync.h"

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gateway/config.h"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

namespace arbiter {
namespace {

using ::testing::HasSubstr;

v1::Config Config() {
  v1::Config config;
  google::protobuf::TextFormat::ParseFromString(
      R"pb(
        tasks: "faq"
        tasks: "billing"
        backends {
          name: "sim"
          sim { dataset: "q.jsonl" }
        }
        routes {
          name: "big"
          kind: ROUTE_KIND_PROMPTED
          backend: "sim"
          model: "m1"
        }
        routes {
          name: "small"
          kind: ROUTE_KIND_FINE_TUNED
          backend: "sim"
          model: "m2"
          pricing { hosting_usd_per_hour: 1 }
        }
        policy { contextual { k: 5 min_feedback: 0 explore_share: 0 } }
        task_policies {
          key: "billing"
          value { budget { target_cost_usd: 0.001 learning_rate: 0.1 } }
        }
        retrieval { embedding_dim: 4 }
        experiments {
          name: "ab"
          arms { name: "A" weight: 1 route: "big" }
          arms { name: "B" weight: 1 route: "small" }
        }
      )pb",
      &config);
  ApplyConfigDefaults(config);
  return config;
}

// The components StateSync reads, built from one config.
struct Components {
  explicit Components(const v1::Config& config, absl::Time start)
      : config(config),
        stats(config.routes_size(), config.tasks_size(),
              policy::StatsOptions{absl::Milliseconds(10), absl::Hours(1)}),
        engine(*policy::Engine::Create(config, {0.01, 0.001})),
        experiments(config),
        economics(config, start, {0.01, 0.001}) {
    StateSync::Parts parts;
    parts.config = &this->config;
    parts.stats = &stats;
    parts.engine = engine.get();
    parts.arm_engines = {{nullptr, nullptr}};
    parts.experiment_stats = &experiments;
    parts.economics_mu = &economics_mu;
    parts.economics = &economics;
    parts.judged = &judged;
    sync = std::make_unique<StateSync>(std::move(parts));
  }
  v1::Config config;
  policy::RouteStats stats;
  std::unique_ptr<policy::Engine> engine;
  policy::ExperimentStats experiments;
  std::mutex economics_mu;
  policy::EconomicsLedger economics;
  JudgedIds judged;
  std::unique_ptr<StateSync> sync;
};

// What the store would give back after committing `batch`.
v1::GatewayState Stored(const state::StateBatch& batch) {
  v1::GatewayState state;
  for (const auto& row : batch.route_tasks) *state.add_route_tasks() = row;
  for (const auto& row : batch.routes) *state.add_routes() = row;
  for (const auto& row : batch.budgets) *state.add_budgets() = row;
  for (const auto& row : batch.experiment_arms) {
    *state.add_experiment_arms() = row;
  }
  for (const auto& row : batch.context_entries) {
    *state.add_context_entries() = row;
  }
  for (const auto& row : batch.judged) *state.add_judged() = row;
  if (batch.economics) *state.mutable_economics() = *batch.economics;
  return state;
}

TEST(StateSyncTest, WhatIsCollectedRestoresIntoFreshComponents) {
  const absl::Time start = absl::Now() - absl::Hours(2);
  Components before(Config(), start);
  const std::vector<float> password = {1, 0, 0, 0};
  for (int i = 0; i < 20; ++i) {
    before.stats.RecordCompletion(i % 2, 0, {100, 20, 0.002, 0.1});
    before.stats.RecordFeedback(i % 2, 0, i % 3 == 0);
    before.experiments.RecordCompletion(0, i % 2, 0.002, 0.1);
    before.engine->ObserveCost(1, 0.01);  // Overspending on billing.
    {
      std::lock_guard lock(before.economics_mu);
      before.economics.RecordRequest(i % 2, 0, {0.002, 0, 0, 0, 0},
                                     absl::Now());
    }
    before.engine->ObserveOutcome(0, 1, password, 1);
    before.sync->NoteOutcome(-1, -1, 0, 1, password, 1);
  }
  const std::string mac(16, 'm');
  ASSERT_EQ(before.judged.Insert(mac, absl::Now()), Judging::kFirst);
  before.sync->NoteJudged(mac, absl::Now());
  const state::StateBatch batch = before.sync->Collect();
  EXPECT_EQ(batch.context_entries.size(), 20u);
  ASSERT_EQ(batch.budgets.size(), 1u);
  EXPECT_EQ(batch.budgets[0].key().strategy(), "task_policies.billing");
  EXPECT_TRUE(before.sync->Collect().judged.empty()) << "noted entries go once";

  Components after(Config(), absl::Now());
  const std::vector<std::string> log =
      after.sync->Restore(Stored(batch), absl::Now());
  ASSERT_FALSE(log.empty());
  EXPECT_THAT(log[0], HasSubstr("20 judged prompts"));
  after.stats.Publish();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(after.stats.Snapshot()->Cell(r, 0).requests, 10);
    EXPECT_EQ(after.stats.Snapshot()->RouteTotal(r).feedback_count,
              before.stats.Snapshot()->RouteTotal(r).feedback_count);
  }
  EXPECT_EQ(after.engine->CostWeights(), before.engine->CostWeights());
  EXPECT_EQ(after.experiments.Tallies(0)[1].requests, 10);
  EXPECT_EQ(after.judged.Insert(mac, absl::Now()), Judging::kRepeat)
      << "judged stays judged";
  // The economics ledger goes on from its start, hosting included.
  const absl::Time now = absl::Now();
  std::lock_guard lock(after.economics_mu);
  EXPECT_NEAR(after.economics.HostingUsd(1, now), 2, 0.01);
  EXPECT_EQ(after.economics.Snapshot(now).routes[0].requests, 10);
  // The contextual memory came back: "small" is what worked on passwords.
  policy::RequestFeatures features;
  features.embedding = password;
  EXPECT_EQ(after.engine->Decide(features, *after.stats.Snapshot())->route, 1);
}

TEST(StateSyncTest, ARouteWhoseModelChangedStartsOverOnlyWhenItSaysSo) {
  Components before(Config(), absl::Now());
  before.stats.RecordCompletion(1, 0, {100, 20, 0.002, 0.1});
  const v1::GatewayState stored = Stored(before.sync->Collect());

  v1::Config changed = Config();
  changed.mutable_routes(1)->set_model("m3");
  Components kept(changed, absl::Now());
  std::vector<std::string> log = kept.sync->Restore(stored, absl::Now());
  EXPECT_THAT(log, ::testing::Contains(HasSubstr(
                       "route small: backend/model changed from sim/m2 to "
                       "sim/m3; it keeps the statistics learned before")));
  kept.stats.Publish();
  EXPECT_EQ(kept.stats.Snapshot()->Cell(1, 0).requests, 1);

  changed.mutable_routes(1)->set_reset_statistics(true);
  Components reset(changed, absl::Now());
  log = reset.sync->Restore(stored, absl::Now());
  EXPECT_THAT(log, ::testing::Contains(HasSubstr("its statistics start over")));
  reset.stats.Publish();
  EXPECT_EQ(reset.stats.Snapshot()->Cell(1, 0).requests, 0);
}

}  // namespace
}  // namespace arbiter
