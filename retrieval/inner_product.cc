#include "retrieval/inner_product.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace arbiter::retrieval {
namespace {

float Scalar(const float* a, const float* b, size_t dim) {
  float sum = 0;
  for (size_t i = 0; i < dim; ++i) sum += a[i] * b[i];
  return sum;
}

#if defined(__x86_64__)

float Sse(const float* a, const float* b, size_t dim) {
  __m128 sum0 = _mm_setzero_ps();
  __m128 sum1 = _mm_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    sum0 =
        _mm_add_ps(sum0, _mm_mul_ps(_mm_loadu_ps(a + i), _mm_loadu_ps(b + i)));
    sum1 = _mm_add_ps(
        sum1, _mm_mul_ps(_mm_loadu_ps(a + i + 4), _mm_loadu_ps(b + i + 4)));
  }
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, _mm_add_ps(sum0, sum1));
  float sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  return sum + Scalar(a + i, b + i, dim - i);
}

__attribute__((target("avx2,fma"))) float Avx2(const float* a, const float* b,
                                               size_t dim) {
  __m256 sum0 = _mm256_setzero_ps();
  __m256 sum1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    sum0 =
        _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), sum0);
    sum1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8),
                           _mm256_loadu_ps(b + i + 8), sum1);
  }
  if (i + 8 <= dim) {
    sum0 =
        _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), sum0);
    i += 8;
  }
  const __m256 sum = _mm256_add_ps(sum0, sum1);
  __m128 half =
      _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
  half = _mm_add_ps(half, _mm_movehl_ps(half, half));
  half = _mm_add_ss(half, _mm_shuffle_ps(half, half, 1));
  return _mm_cvtss_f32(half) + Scalar(a + i, b + i, dim - i);
}

using Kernel = float (*)(const float*, const float*, size_t);

Kernel Pick() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? Avx2
                                                                         : Sse;
}

const Kernel kKernel = Pick();

#endif

}  // namespace

float InnerProduct(const float* a, const float* b, size_t dim) {
#if defined(__x86_64__)
  return kKernel(a, b, dim);
#else
  return Scalar(a, b, dim);
#endif
}

}  // namespace arbiter::retrieval
