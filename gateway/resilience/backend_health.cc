#include "gateway/resilience/backend_health.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "absl/strings/str_format.h"

namespace arbiter {

absl::string_view EjectionName(Ejection reason) {
  switch (reason) {
    case Ejection::kConsecutiveFailures:
      return "consecutive_failures";
    case Ejection::kFailureRate:
      return "failure_rate";
    case Ejection::kProbeFailed:
      return "probe_failed";
  }
  return "unknown";
}

BackendHealth::BackendHealth(const v1::OutlierDetection& settings,
                             Listener listener)
    : settings_(settings),
      window_(absl::Seconds(settings.failure_rate_window_seconds())),
      listener_(std::move(listener)) {}

bool BackendHealth::Available(absl::Time now) const {
  if (up_.load(std::memory_order_acquire)) return true;
  std::lock_guard lock(mu_);
  switch (state_) {
    case State::kUp:
      return true;
    case State::kEjected:
      return now >= ejected_until_ && !probe_in_flight_;
    case State::kProbing:
      return !probe_in_flight_;
  }
  return true;
}

bool BackendHealth::Begin(absl::Time now) {
  if (up_.load(std::memory_order_acquire)) return false;
  std::lock_guard lock(mu_);
  if (state_ == State::kEjected && now >= ejected_until_) {
    state_ = State::kProbing;
    probes_succeeded_ = 0;
  }
  if (state_ != State::kProbing || probe_in_flight_) return false;
  probe_in_flight_ = true;
  return true;
}

void BackendHealth::End(bool probe, AttemptResult result, absl::Time now) {
  std::optional<Ejection> ejected;
  absl::Duration length;
  bool restored = false;
  {
    std::lock_guard lock(mu_);
    if (probe) {
      probe_in_flight_ = false;
      if (result == AttemptResult::kOk) {
        if (++probes_succeeded_ >= settings_.probe_requests()) {
          state_ = State::kUp;
          up_.store(true, std::memory_order_release);
          consecutive_failures_ = 0;
          current_ok_ = current_failed_ = previous_ok_ = previous_failed_ = 0;
          window_start_ = now;
          restored_at_ = now;
          restored = true;
        }
      } else if (result == AttemptResult::kFailed) {
        ejected = Ejection::kProbeFailed;
        length = EjectLocked(*ejected, now);
      }
    } else if (state_ == State::kUp && result != AttemptResult::kNeutral) {
      // Attempts that began before an ejection say nothing new after it.
      RollWindowLocked(now);
      if (result == AttemptResult::kOk) {
        consecutive_failures_ = 0;
        ++current_ok_;
      } else {
        ++consecutive_failures_;
        ++current_failed_;
        if (settings_.consecutive_failures() > 0 &&
            consecutive_failures_ >= settings_.consecutive_failures()) {
          ejected = Ejection::kConsecutiveFailures;
        } else if (FailureRateExceededLocked(now)) {
          ejected = Ejection::kFailureRate;
        }
        if (ejected.has_value()) length = EjectLocked(*ejected, now);
      }
    }
  }
  if (ejected.has_value() && listener_.ejected) {
    listener_.ejected(*ejected, length);
  }
  if (restored && listener_.restored) listener_.restored();
}

bool BackendHealth::up() const { return up_.load(std::memory_order_acquire); }

std::string BackendHealth::Describe(absl::Time now) const {
  std::lock_guard lock(mu_);
  if (state_ == State::kUp) return "in service";
  const std::string why =
      last_reason_ == Ejection::kConsecutiveFailures
          ? absl::StrFormat("%d failures in a row",
                            settings_.consecutive_failures())
      : last_reason_ == Ejection::kFailureRate
          ? absl::StrFormat("over %g%% of attempts failed",
                            settings_.failure_rate_percent())
          : std::string("a probe failed");
  if (state_ == State::kEjected && now < ejected_until_) {
    return absl::StrFormat("ejected for %s more (%s)",
                           absl::FormatDuration(absl::Trunc(
                               ejected_until_ - now, absl::Milliseconds(100))),
                           why);
  }
  return absl::StrFormat("probing (%d of %d succeeded; ejected for %s)",
                         probes_succeeded_, settings_.probe_requests(), why);
}

absl::Duration BackendHealth::EjectLocked(Ejection reason, absl::Time now) {
  const absl::Duration max = absl::Seconds(settings_.max_ejection_seconds());
  // Long enough in service since the last return: start from the base.
  if (state_ == State::kUp && now - restored_at_ >= max) ejection_level_ = 0;
  const absl::Duration length =
      std::min(max, absl::Seconds(settings_.base_ejection_seconds()) *
                        std::pow(2.0, std::min(ejection_level_, 30)));
  ++ejection_level_;
  state_ = State::kEjected;
  up_.store(false, std::memory_order_release);
  ejected_until_ = now + length;
  last_reason_ = reason;
  probes_succeeded_ = 0;
  return length;
}

void BackendHealth::RollWindowLocked(absl::Time now) {
  if (now - window_start_ < window_) return;
  const bool adjacent = now - window_start_ < 2 * window_;
  previous_ok_ = adjacent ? current_ok_ : 0;
  previous_failed_ = adjacent ? current_failed_ : 0;
  current_ok_ = current_failed_ = 0;
  window_start_ = adjacent ? window_start_ + window_ : now;
}

bool BackendHealth::FailureRateExceededLocked(absl::Time now) const {
  if (settings_.failure_rate_percent() <= 0) return false;
  // The last window_ of attempts: all of this window, and of the one before
  // the share that still falls in it.
  const double elapsed =
      std::clamp(absl::FDivDuration(now - window_start_, window_), 0.0, 1.0);
  const double weight = 1.0 - elapsed;
  const double failed = current_failed_ + weight * previous_failed_;
  const double total = failed + current_ok_ + weight * previous_ok_;
  return total >= settings_.failure_rate_min_requests() &&
         failed > total * settings_.failure_rate_percent() / 100.0;
}

}  // namespace arbiter
