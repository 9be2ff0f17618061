#pragma once

#include <cstdint>
#include <map>

#include "absl/status/statusor.h"

namespace arbiter::policy {

// A mergeable quantile sketch with relative error (DDSketch): values fall
// into logarithmic buckets whose width is a fixed fraction of their value,
// so any quantile is known to within `relative_accuracy` of the truth, in
// memory that grows with the log of the value range, not with the count.
//
//   LatencySketch sketch;
//   sketch.Add(0.120);
//   double p99 = sketch.Quantile(0.99);  // within 1% of the exact p99.
class LatencySketch final {
 public:
  explicit LatencySketch(double relative_accuracy = 0.01);

  void Add(double value);
  // Both sketches must share relative_accuracy.
  void Merge(const LatencySketch& other);
  // q in [0, 1]; 0 for an empty sketch.
  [[nodiscard]] double Quantile(double q) const;
  [[nodiscard]] int64_t count() const { return count_; }

  // What a sketch holds, to store it and restore it.
  struct Parts {
    double relative_accuracy = 0.01;
    int64_t count = 0;
    int64_t zero_count = 0;
    std::map<int, int64_t> buckets;
  };
  [[nodiscard]] Parts parts() const;
  // INVALID_ARGUMENT when the parts do not add up (counts, accuracy).
  [[nodiscard]] static absl::StatusOr<LatencySketch> FromParts(Parts parts);

 private:
  int Index(double value) const;
  double ValueAt(int index) const;

  double relative_accuracy_;
  double gamma_;
  double log_gamma_;
  int64_t count_ = 0;
  int64_t zero_count_ = 0;          // Values too small to bucket.
  std::map<int, int64_t> buckets_;  // Bucket index -> count.
};

}  // namespace arbiter::policy
