#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace arbiter::policy {

// What Feedback needs to know about a served request.
struct DecisionRecord {
  int route = -1;
  int task = -1;
  double propensity = 1;
  double cost_usd = 0;
  bool feedback_received = false;
  int experiment = -1;  // Index into the config's experiments, or -1.
  int arm = -1;
  // The prompt's embedding, kept only when a contextual policy decided.
  std::vector<float> embedding;
};

// The decisions of recent requests, keyed by request id, oldest evicted
// first once `capacity` is reached. Thread-safe.
class DecisionLog final {
 public:
  explicit DecisionLog(size_t capacity);

  DecisionLog(const DecisionLog&) = delete;
  DecisionLog& operator=(const DecisionLog&) = delete;

  void Record(std::string request_id, const DecisionRecord& record);

  // Marks the request's feedback as received and returns its record.
  // NOT_FOUND if the id is not (or no longer) here; ALREADY_EXISTS if it
  // already had feedback.
  [[nodiscard]] absl::StatusOr<DecisionRecord> TakeFeedback(
      const std::string& request_id);

  [[nodiscard]] size_t size() const;

 private:
  const size_t capacity_;
  mutable std::mutex mu_;  // std:: so ThreadSanitizer sees it.
  absl::flat_hash_map<std::string, DecisionRecord> records_
      ABSL_GUARDED_BY(mu_);
  std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);  // Oldest first.
};

}  // namespace arbiter::policy
