#include "policy/latency_sketch.h"

#include <algorithm>
#include <cmath>

namespace arbiter::policy {
namespace {

// Below a microsecond every latency is the same to us.
constexpr double kMinValue = 1e-6;
// Above a day too: it bounds the buckets, and an infinite value would make
// the bucket index undefined.
constexpr double kMaxValue = 86'400;

}  // namespace

LatencySketch::LatencySketch(double relative_accuracy)
    : gamma_((1 + relative_accuracy) / (1 - relative_accuracy)),
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

}  // namespace arbiter::policy
