#include "policy/context_memory.h"

#include <faiss/IndexFlat.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <mutex>

namespace arbiter::policy {

ContextMemory::ContextMemory(int dim, int capacity)
    : dim_(dim),
      capacity_(std::max(1, capacity)),
      index_(std::make_unique<faiss::IndexFlatIP>(dim)) {}

ContextMemory::~ContextMemory() = default;

void ContextMemory::Add(absl::Span<const float> embedding, int route,
                        double score) {
  if (static_cast<int>(embedding.size()) != dim_) return;
  std::unique_lock lock(mu_);
  if (index_->ntotal < capacity_) {
    index_->add(1, embedding.data());
    routes_.push_back(route);
    scores_.push_back(score);
  } else {
    // Full: overwrite the oldest slot in place (IndexFlat stores raw floats).
    int64_t slot = next_slot_ % capacity_;
    std::memcpy(index_->get_xb() + slot * dim_, embedding.data(),
                sizeof(float) * dim_);
    routes_[slot] = route;
    scores_[slot] = score;
  }
  ++next_slot_;
}

std::vector<ContextMemory::Remembered> ContextMemory::Entries() const {
  std::shared_lock lock(mu_);
  const int64_t n = index_->ntotal;
  // Once full, the oldest is the slot Add overwrites next.
  const int64_t oldest = n < capacity_ ? 0 : next_slot_ % capacity_;
  std::vector<Remembered> entries;
  entries.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t slot = (oldest + i) % n;
    const float* vector = index_->get_xb() + slot * dim_;
    entries.push_back({routes_[slot], scores_[slot],
                       std::vector<float>(vector, vector + dim_)});
  }
  return entries;
}

std::vector<ContextMemory::Neighbour> ContextMemory::Nearest(
    absl::Span<const float> embedding, int k) const {
  std::vector<Neighbour> neighbours;
  if (static_cast<int>(embedding.size()) != dim_ || k < 1) return neighbours;
  std::shared_lock lock(mu_);
  const int n = static_cast<int>(std::min<int64_t>(k, index_->ntotal));
  if (n == 0) return neighbours;
  omp_set_num_threads(1);  // One query: no OpenMP team per request.
  std::vector<float> similarities(n);
  std::vector<faiss::Index::idx_t> slots(n);
  try {
    index_->search(1, embedding.data(), n, similarities.data(), slots.data());
  } catch (const std::exception&) {
    return neighbours;  // No memory is better than no answer.
  }
  for (int i = 0; i < n; ++i) {
    if (slots[i] < 0) continue;
    neighbours.push_back(
        {routes_[slots[i]], scores_[slots[i]], similarities[i]});
  }
  return neighbours;
}

int64_t ContextMemory::size() const {
  std::shared_lock lock(mu_);
  return index_->ntotal;
}

}  // namespace arbiter::policy
