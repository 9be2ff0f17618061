#pragma once

// Single-query search loops of our own over indexes FAISS builds and saves.
// Debian's FAISS 1.7.3 is built for baseline x86-64, so its one-vector
// distances are scalar loops; and its IndexHNSW::search allocates and clears
// a visited table of ntotal bytes and enters an OpenMP region on every call.
// At one query per call, as a gateway serves them, both dominate. These
// loops use InnerProduct (AVX2 when present), a per-thread visited table
// cleared by bumping an epoch, prefetching of neighbours' vectors, and apply
// the filter only to what enters the results, as hnswlib does.

#include <cstdint>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/types/span.h"

namespace faiss {
struct IndexFlat;
struct IndexHNSWFlat;
struct IndexIVFFlat;
}  // namespace faiss

namespace arbiter::retrieval {

struct ScoredLabel {
  float score = 0;  // Inner product; higher is better.
  int64_t label = 0;
};

// Per-label data a filter reads (base + label * stride bytes), loaded ahead
// with the node's vector so the filter's read does not miss the cache.
struct FilterPrefetch {
  const void* base = nullptr;
  size_t stride = 0;
};

// The up-to-k best labels that `accept` keeps, best first, exploring with a
// beam of max(ef, k). Thread-safe for concurrent calls on one const index.
[[nodiscard]] std::vector<ScoredLabel> SearchHnswGraph(
    const faiss::IndexHNSWFlat& index, const float* query, int k, int ef,
    absl::FunctionRef<bool(int64_t)> accept,
    absl::Span<const FilterPrefetch> prefetch = {});

// The k best labels that `accept` keeps among the `nprobe` inverted lists
// whose centroids score highest, best first: what IndexIVFFlat::search
// returns (an inner-product index with a flat coarse quantizer).
[[nodiscard]] std::vector<ScoredLabel> SearchIvfFlat(
    const faiss::IndexIVFFlat& index, const float* query, int k, int nprobe,
    absl::FunctionRef<bool(int64_t)> accept);

// The exact k best labels that `accept` keeps, best first, by scanning every
// row of an inner-product IndexFlat.
[[nodiscard]] std::vector<ScoredLabel> ScanFlat(
    const faiss::IndexFlat& index, const float* query, int k,
    absl::FunctionRef<bool(int64_t)> accept);

}  // namespace arbiter::retrieval
