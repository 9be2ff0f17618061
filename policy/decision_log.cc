#include "policy/decision_log.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace arbiter::policy {

DecisionLog::DecisionLog(size_t capacity) : capacity_(capacity) {}

void DecisionLog::Record(std::string request_id, const DecisionRecord& record) {
  std::lock_guard lock(mu_);
  if (capacity_ == 0) return;
  while (order_.size() >= capacity_) {
    records_.erase(order_.front());
    order_.pop_front();
  }
  auto [it, inserted] = records_.emplace(request_id, record);
  if (inserted) order_.push_back(std::move(request_id));
}

absl::StatusOr<DecisionRecord> DecisionLog::TakeFeedback(
    const std::string& request_id) {
  std::lock_guard lock(mu_);
  auto it = records_.find(request_id);
  if (it == records_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "request_id: no decision recorded for \"", request_id, "\""));
  }
  if (it->second.feedback_received) {
    return absl::AlreadyExistsError(absl::StrCat(
        "request_id: feedback for \"", request_id, "\" was already recorded"));
  }
  it->second.feedback_received = true;
  return it->second;
}

size_t DecisionLog::size() const {
  std::lock_guard lock(mu_);
  return records_.size();
}

}  // namespace arbiter::policy
