#pragma once

#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "arbiter/v1/config.pb.h"
#include "arbiter/v1/state.pb.h"
#include "gateway/judged_ids.h"
#include "policy/economics.h"
#include "policy/engine.h"
#include "policy/experiment.h"
#include "policy/route_stats.h"
#include "state/state_store.h"

namespace arbiter {

// Carries what the gateway learns and accounts between its live components
// and the state store: restores stored state at start, matching the config
// by name, and collects what the store's writer commits. Thread-safe.
class StateSync final {
 public:
  // What it reads and restores; everything outlives it.
  struct Parts {
    const v1::Config* config = nullptr;
    policy::RouteStats* stats = nullptr;
    policy::Engine* engine = nullptr;
    // Per experiment and arm: the arm's own engine, or nullptr (route arm).
    std::vector<std::vector<policy::Engine*>> arm_engines;
    policy::ExperimentStats* experiment_stats = nullptr;
    std::mutex* economics_mu = nullptr;
    policy::EconomicsLedger* economics = nullptr;
    JudgedIds* judged = nullptr;
  };
  explicit StateSync(Parts parts);

  StateSync(const StateSync&) = delete;
  StateSync& operator=(const StateSync&) = delete;

  // Restores stored state into the parts, before serving; returns what a
  // log should say (what was kept, started over, or left unserved).
  std::vector<std::string> Restore(const v1::GatewayState& state,
                                   absl::Time now);

  // Held while one feedback is judged and applied: a batch holds a
  // feedback's id and all of its effects, or none of them, so that after a
  // crash a lost feedback can be sent again and a kept one is refused.
  [[nodiscard]] std::shared_lock<std::shared_mutex> HoldForFeedback() {
    return std::shared_lock(feedback_mu_);
  }

  // Entries the next batch appends, noted while HoldForFeedback is held.
  void NoteJudged(absl::string_view mac, absl::Time issued);
  // experiment and arm are -1 for the main policy.
  void NoteOutcome(int experiment, int arm, int task, int route,
                   absl::Span<const float> embedding, double score);

  // For the store's writer: every aggregate as of now and the entries
  // noted so far, with no feedback half-applied.
  [[nodiscard]] state::StateBatch Collect();

  // Everything learned and accounted as of now, the judged prompts its
  // contextual strategies remember included, for a generation that takes
  // over from this one (Restore).
  [[nodiscard]] v1::GatewayState Snapshot();
  // Takes the entries `from` noted that no batch has taken yet.
  void AdoptNotes(StateSync& from);

 private:
  [[nodiscard]] policy::Engine* EngineOf(int experiment, int arm) const;
  // Every aggregate into `batch`; feedback_mu_ is held.
  void CollectAggregates(absl::Time now, state::StateBatch& batch);
  [[nodiscard]] v1::StrategyKey KeyOf(int experiment, int arm,
                                      const std::string& strategy) const;

  const Parts parts_;
  // Shared by feedbacks being applied, exclusive while a batch is taken.
  std::shared_mutex feedback_mu_;
  // What the config no longer names, written back as it was so that it
  // stays on disk.
  v1::EconomicsState unserved_economics_;
  // The same of statistics, experiment arms, cost weights and remembered
  // prompts, handed on by Snapshot (they stay on disk by themselves).
  v1::GatewayState unserved_;
  std::mutex mu_;  // std:: so ThreadSanitizer sees it.
  std::vector<v1::JudgedRequest> judged_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::ContextEntry> context_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<v1::StrategyKey, int>> capacity_ ABSL_GUARDED_BY(mu_);
};

}  // namespace arbiter
