#pragma once

// Inner product of two float vectors with the widest SIMD the CPU has.
// Debian's FAISS is built for baseline x86-64 and falls back to a scalar
// loop for single-vector distances, which dominates HNSW and exact search;
// this picks AVX2+FMA at run time when present, else SSE.

#include <cstddef>

namespace arbiter::retrieval {

[[nodiscard]] float InnerProduct(const float* a, const float* b, size_t dim);

}  // namespace arbiter::retrieval
