#include "policy/latency_sketch.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace arbiter::policy {
namespace {

// Below a microsecond every latency is the same to us.
constexpr double kMinValue = 1e-6;
// Above a day too: it bounds the buckets, and an infinite value would make
// the bucket index undefined.
constexpr double kMaxValue = 86'400;

}  // namespace

LatencySketch::LatencySketch(double relative_accuracy)
    : relative_accuracy_(relative_accuracy),
      gamma_((1 + relative_accuracy) / (1 - relative_accuracy)),
      log_gamma_(std::log(gamma_)) {}

int LatencySketch::Index(double value) const {
  return static_cast<int>(std::ceil(std::log(value) / log_gamma_));
}

double LatencySketch::ValueAt(int index) const {
  // The point of bucket (gamma^(i-1), gamma^i] with equal relative error to
  // both ends.
  return 2 * std::pow(gamma_, index) / (gamma_ + 1);
}

void LatencySketch::Add(double value) {
  ++count_;
  if (!(value > kMinValue)) {
    ++zero_count_;
    return;
  }
  ++buckets_[Index(std::min(value, kMaxValue))];
}

void LatencySketch::Merge(const LatencySketch& other) {
  count_ += other.count_;
  zero_count_ += other.zero_count_;
  for (const auto& [index, n] : other.buckets_) buckets_[index] += n;
}

double LatencySketch::Quantile(double q) const {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  // The rank of the q-quantile among count_ sorted values, 0-based.
  auto rank = static_cast<int64_t>(q * static_cast<double>(count_ - 1));
  if (rank < zero_count_) return 0;
  int64_t seen = zero_count_;
  for (const auto& [index, n] : buckets_) {
    seen += n;
    if (seen > rank) return ValueAt(index);
  }
  return ValueAt(buckets_.rbegin()->first);
}

LatencySketch::Parts LatencySketch::parts() const {
  return {relative_accuracy_, count_, zero_count_, buckets_};
}

absl::StatusOr<LatencySketch> LatencySketch::FromParts(Parts parts) {
  if (!(parts.relative_accuracy > 0 && parts.relative_accuracy < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("latency sketch: relative accuracy ",
                     parts.relative_accuracy, " is not in (0, 1)"));
  }
  int64_t sum = parts.zero_count;
  for (const auto& [index, n] : parts.buckets) {
    if (n <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("latency sketch: bucket ", index, " has count ", n));
    }
    sum += n;
  }
  if (parts.zero_count < 0 || sum != parts.count) {
    return absl::InvalidArgumentError(
        absl::StrCat("latency sketch: buckets add up to ", sum,
                     " values, not its count ", parts.count));
  }
  LatencySketch sketch(parts.relative_accuracy);
  sketch.count_ = parts.count;
  sketch.zero_count_ = parts.zero_count;
  sketch.buckets_ = std::move(parts.buckets);
  return sketch;
}

}  // namespace arbiter::policy
