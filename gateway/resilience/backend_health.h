#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "arbiter/v1/config.pb.h"

namespace arbiter {

// Why a backend was taken out of service, a metric label each.
enum class Ejection { kConsecutiveFailures, kFailureRate, kProbeFailed };
inline constexpr int kEjectionCount =
    static_cast<int>(Ejection::kProbeFailed) + 1;
[[nodiscard]] absl::string_view EjectionName(Ejection reason);

// How one attempt on a backend ended, as its health counts it.
enum class AttemptResult {
  kOk,
  kFailed,   // The backend's fault: unavailable, timeout, 429, 5xx.
  kNeutral,  // Refused (HTTP 4xx) or cancelled: says nothing of its health.
};

// Whether a backend gets traffic (Envoy's outlier detection): ejected after
// consecutive failures or a failure rate over a sliding window, for a time
// that doubles with each ejection soon after the last; afterwards probe
// requests, one at a time, must succeed in a row for it to return.
// Thread-safe.
class BackendHealth final {
 public:
  // Told of each ejection (with its length) and each return, outside the
  // lock.
  struct Listener {
    std::function<void(Ejection, absl::Duration)> ejected;
    std::function<void()> restored;
  };

  // `settings` has its defaults applied (ApplyConfigDefaults).
  BackendHealth(const v1::OutlierDetection& settings, Listener listener);

  BackendHealth(const BackendHealth&) = delete;
  BackendHealth& operator=(const BackendHealth&) = delete;

  // May a new attempt go to it: in service, or due a probe with none in
  // flight.
  [[nodiscard]] bool Available(absl::Time now) const;
  // An attempt starts on it; true when it is the probe (pass it to End).
  bool Begin(absl::Time now);
  void End(bool probe, AttemptResult result, absl::Time now);

  [[nodiscard]] bool up() const;
  // For errors and stats: "in service", "ejected for 4.2s more (5 failures
  // in a row)", "probing (1 of 2 succeeded)".
  [[nodiscard]] std::string Describe(absl::Time now) const;

 private:
  enum class State { kUp, kEjected, kProbing };

  // Returns how long it is out for.
  absl::Duration EjectLocked(Ejection reason, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves the failure-rate window on to `now`.
  void RollWindowLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  [[nodiscard]] bool FailureRateExceededLocked(absl::Time now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const v1::OutlierDetection settings_;
  const absl::Duration window_;
  const Listener listener_;

  // state_ == kUp, readable without the lock: the common case of every
  // routing decision.
  std::atomic<bool> up_{true};
  mutable std::mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kUp;
  int consecutive_failures_ ABSL_GUARDED_BY(mu_) = 0;
  // Attempts of the current window and of the one before it.
  absl::Time window_start_ ABSL_GUARDED_BY(mu_);
  int current_ok_ ABSL_GUARDED_BY(mu_) = 0;
  int current_failed_ ABSL_GUARDED_BY(mu_) = 0;
  int previous_ok_ ABSL_GUARDED_BY(mu_) = 0;
  int previous_failed_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time ejected_until_ ABSL_GUARDED_BY(mu_);
  Ejection last_reason_ ABSL_GUARDED_BY(mu_) = Ejection::kConsecutiveFailures;
  // Ejections in a row without max_ejection_seconds in service between.
  int ejection_level_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time restored_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool probe_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  int probes_succeeded_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace arbiter
