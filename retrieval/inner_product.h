#pragma once

// Inner product of two float vectors with the widest SIMD the CPU has.
// Debian's FAISS is built for baseline x86-64 and falls back to a scalar
// loop for single-vector distances, which dominates HNSW and exact search;
// this picks AVX2+FMA at run time when present, else SSE.

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace arbiter::retrieval {

[[nodiscard]] float InnerProduct(const float* a, const float* b, size_t dim);

// sum over i of a[i] * codes[i], the codes read as 0..255: the core of
// scoring 8-bit scalar-quantized vectors. With code c of dimension i
// standing for min[i] + scale[i] * c, a query q scores
//   sum q[i] * min[i] + InnerProductU8(q * scale, codes, dim),
// so a[] is the query pre-multiplied by the scales. AVX2+FMA when present,
// else SSE2.
[[nodiscard]] float InnerProductU8(const float* a, const uint8_t* codes,
                                   size_t dim);

namespace internal {

using InnerProductU8Kernel = float (*)(const float*, const uint8_t*, size_t);

// Every InnerProductU8 kernel this CPU can run, by name (the scalar loop
// included), so tests cover the ones the dispatch does not pick.
[[nodiscard]] std::vector<std::pair<const char*, InnerProductU8Kernel>>
InnerProductU8Kernels();

}  // namespace internal
}  // namespace arbiter::retrieval
