#pragma once

#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/types/span.h"

namespace faiss {
struct IndexFlatIP;
}

namespace arbiter::policy {

// Judged prompts as unit vectors with the route that answered and its score,
// searchable by similarity. A ring: once full, the oldest entry is
// overwritten. Searches share a lock; adds take it alone.
class ContextMemory final {
 public:
  ContextMemory(int dim, int capacity);
  ~ContextMemory();

  ContextMemory(const ContextMemory&) = delete;
  ContextMemory& operator=(const ContextMemory&) = delete;

  // Ignores vectors of the wrong dimension.
  void Add(absl::Span<const float> embedding, int route, double score);

  struct Neighbour {
    int route;
    double score;
    float similarity;
  };
  // Up to k most similar remembered prompts, best first.
  [[nodiscard]] std::vector<Neighbour> Nearest(
      absl::Span<const float> embedding, int k) const;
  [[nodiscard]] int dim() const { return dim_; }
  [[nodiscard]] int64_t size() const;

  struct Remembered {
    int route;
    double score;
    std::vector<float> embedding;
  };
  // What it remembers, oldest first: Add-ing them in order to an empty
  // memory of the same capacity makes an equal one.
  [[nodiscard]] std::vector<Remembered> Entries() const;

 private:
  const int dim_;
  const int capacity_;
  mutable std::shared_mutex mu_;
  std::unique_ptr<faiss::IndexFlatIP> index_ ABSL_GUARDED_BY(mu_);
  std::vector<int> routes_ ABSL_GUARDED_BY(mu_);     // Per slot.
  std::vector<double> scores_ ABSL_GUARDED_BY(mu_);  // Per slot.
  int64_t next_slot_ ABSL_GUARDED_BY(mu_) = 0;       // Ring position.
};

}  // namespace arbiter::policy
