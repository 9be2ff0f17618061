#include "retrieval/index_search.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/invlists/InvertedLists.h>

#include <algorithm>
#include <functional>

#include "retrieval/huge_pages.h"
#include "retrieval/inner_product.h"

namespace arbiter::retrieval {
namespace {

using faiss::HNSW;

// Marks visited nodes with the current epoch; a new search bumps the epoch
// instead of clearing n entries.
class VisitedTable {
 public:
  void Reset(size_t n) {
    if (marks_.size() < n) {
      marks_.assign(n, 0);
      epoch_ = 0;
      AdviseHugePages(marks_.data(), marks_.size() * sizeof(marks_[0]),
                      /*collapse_now=*/true);
    }
    if (++epoch_ == 0) {  // Wrapped: every old mark could alias.
      std::fill(marks_.begin(), marks_.end(), 0);
      epoch_ = 1;
    }
  }
  // True the first time `node` is seen in this search.
  bool Visit(int64_t node) {
    if (marks_[node] == epoch_) return false;
    marks_[node] = epoch_;
    return true;
  }
  void Prefetch(int64_t node) const { __builtin_prefetch(&marks_[node]); }

 private:
  std::vector<uint16_t> marks_;
  uint16_t epoch_ = 0;
};

// Per-thread scratch, so a search allocates only its answer.
struct Scratch {
  VisitedTable visited;
  std::vector<ScoredLabel> candidates;  // Max-heap: best first.
  std::vector<ScoredLabel> results;     // Min-heap: worst kept on top.
  std::vector<int64_t> fresh;           // Unvisited neighbours of a node.
};

bool BetterFirst(const ScoredLabel& a, const ScoredLabel& b) {
  return a.score < b.score;  // std heaps keep the "largest" on top.
}
bool WorstFirst(const ScoredLabel& a, const ScoredLabel& b) {
  return a.score > b.score;
}

// Adds a hit to `results`, a min-heap kept to the best `keep`.
void KeepBest(std::vector<ScoredLabel>& results, size_t keep, ScoredLabel hit) {
  results.push_back(hit);
  std::push_heap(results.begin(), results.end(), WorstFirst);
  if (results.size() > keep) {
    std::pop_heap(results.begin(), results.end(), WorstFirst);
    results.pop_back();
  }
}

// The best k of `results`, best first; copied out so the per-thread scratch
// keeps its capacity for the next search.
std::vector<ScoredLabel> BestFirst(std::vector<ScoredLabel>& results, int k) {
  std::sort(results.begin(), results.end(),
            [](const ScoredLabel& a, const ScoredLabel& b) {
              return a.score > b.score;
            });
  return std::vector<ScoredLabel>(
      results.begin(),
      results.begin() + std::min(results.size(), static_cast<size_t>(k)));
}

}  // namespace

std::vector<ScoredLabel> SearchHnswGraph(
    const faiss::IndexHNSWFlat& index, const float* query, int k, int ef,
    absl::FunctionRef<bool(int64_t)> accept,
    absl::Span<const FilterPrefetch> prefetch) {
  const HNSW& graph = index.hnsw;
  if (index.ntotal == 0 || graph.entry_point < 0 || k < 1) return {};
  const auto* storage = static_cast<const faiss::IndexFlat*>(index.storage);
  const float* vectors = storage->get_xb();
  const size_t dim = static_cast<size_t>(index.d);
  const HNSW::storage_idx_t* links = graph.neighbors.data();
  auto score_of = [&](int64_t node) {
    return InnerProduct(query, vectors + node * dim, dim);
  };
  auto range = [&](int64_t node, int level, size_t& begin, size_t& end) {
    const size_t offset = graph.offsets[node];
    begin = offset + graph.cum_nneighbor_per_level[level];
    end = offset + graph.cum_nneighbor_per_level[level + 1];
  };

  // Upper layers: greedy descent to the best node of each.
  int64_t nearest = graph.entry_point;
  float nearest_score = score_of(nearest);
  for (int level = graph.max_level; level > 0; --level) {
    for (bool moved = true; moved;) {
      moved = false;
      size_t begin, end;
      range(nearest, level, begin, end);
      for (size_t j = begin; j < end && links[j] >= 0; ++j) {
        const float score = score_of(links[j]);
        if (score > nearest_score) {
          nearest_score = score;
          nearest = links[j];
          moved = true;
        }
      }
    }
  }

  // Bottom layer: best-first beam search of width ef.
  thread_local Scratch scratch;
  const size_t beam = static_cast<size_t>(std::max(ef, k));
  auto& candidates = scratch.candidates;
  auto& results = scratch.results;
  candidates.clear();
  results.clear();
  scratch.visited.Reset(static_cast<size_t>(index.ntotal));
  scratch.visited.Visit(nearest);
  candidates.push_back({nearest_score, nearest});
  if (accept(nearest)) results.push_back({nearest_score, nearest});
  auto worst_kept = [&] { return results.front().score; };

  while (!candidates.empty()) {
    const ScoredLabel current = candidates.front();
    // Nothing left can enter a full beam.
    if (results.size() >= beam && current.score < worst_kept()) break;
    std::pop_heap(candidates.begin(), candidates.end(), BetterFirst);
    candidates.pop_back();

    size_t begin, end;
    range(current.label, 0, begin, end);
    for (size_t j = begin; j < end && links[j] >= 0; ++j) {
      scratch.visited.Prefetch(links[j]);
    }
    // Gather the unvisited neighbours and start loading all their vectors
    // before scoring any: the loads overlap instead of queueing.
    auto& fresh = scratch.fresh;
    fresh.clear();
    for (size_t j = begin; j < end && links[j] >= 0; ++j) {
      if (!scratch.visited.Visit(links[j])) continue;
      fresh.push_back(links[j]);
      __builtin_prefetch(vectors + links[j] * dim);
      for (const FilterPrefetch& data : prefetch) {
        __builtin_prefetch(static_cast<const char*>(data.base) +
                           links[j] * data.stride);
      }
    }
    const size_t vector_bytes = dim * sizeof(float);
    for (size_t i = 0; i < fresh.size(); ++i) {
      // The first line of each was requested above; the rest of the next
      // one now, so scoring never waits on more than one vector's tail.
      if (i + 1 < fresh.size()) {
        const char* next =
            reinterpret_cast<const char*>(vectors + fresh[i + 1] * dim);
        for (size_t line = 64; line < vector_bytes; line += 64) {
          __builtin_prefetch(next + line);
        }
      }
      const int64_t node = fresh[i];
      const float score = score_of(node);
      if (results.size() >= beam && score <= worst_kept()) continue;
      candidates.push_back({score, node});
      std::push_heap(candidates.begin(), candidates.end(), BetterFirst);
      if (accept(node)) KeepBest(results, beam, {score, node});
    }
  }

  return BestFirst(results, k);
}

std::vector<ScoredLabel> SearchIvfFlat(
    const faiss::IndexIVFFlat& index, const float* query, int k, int nprobe,
    absl::FunctionRef<bool(int64_t)> accept) {
  if (k < 1 || nprobe < 1) return {};
  const auto& quantizer =
      static_cast<const faiss::IndexFlat&>(*index.quantizer);
  const std::vector<ScoredLabel> lists =
      ScanFlat(quantizer, query, nprobe, [](int64_t) { return true; });
  const size_t dim = static_cast<size_t>(index.d);
  thread_local Scratch scratch;
  auto& results = scratch.results;
  results.clear();
  const size_t keep = static_cast<size_t>(k);
  for (const ScoredLabel& list : lists) {
    const size_t size = index.invlists->list_size(list.label);
    if (size == 0) continue;
    faiss::InvertedLists::ScopedCodes codes(index.invlists, list.label);
    faiss::InvertedLists::ScopedIds labels(index.invlists, list.label);
    const auto* vectors = reinterpret_cast<const float*>(codes.get());
    for (size_t i = 0; i < size; ++i) {
      const float score = InnerProduct(query, vectors + i * dim, dim);
      if (results.size() >= keep && score <= results.front().score) continue;
      if (accept(labels[i])) KeepBest(results, keep, {score, labels[i]});
    }
  }
  return BestFirst(results, k);
}

std::vector<ScoredLabel> ScanFlat(const faiss::IndexFlat& index,
                                  const float* query, int k,
                                  absl::FunctionRef<bool(int64_t)> accept) {
  if (k < 1) return {};
  const float* vectors = index.get_xb();
  const size_t dim = static_cast<size_t>(index.d);
  thread_local Scratch scratch;
  auto& results = scratch.results;
  results.clear();
  const size_t keep = static_cast<size_t>(k);
  for (int64_t row = 0; row < index.ntotal; ++row) {
    const float score = InnerProduct(query, vectors + row * dim, dim);
    if (results.size() >= keep && score <= results.front().score) continue;
    if (accept(row)) KeepBest(results, keep, {score, row});
  }
  return BestFirst(results, k);
}

}  // namespace arbiter::retrieval
