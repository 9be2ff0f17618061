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

float ScalarU8(const float* a, const uint8_t* codes, size_t dim) {
  float sum = 0;
  for (size_t i = 0; i < dim; ++i) sum += a[i] * static_cast<float>(codes[i]);
  return sum;
}

#if defined(__x86_64__)

// The four lanes' sum, added in lane order.
float Sum4(__m128 lanes) {
  alignas(16) float values[4];
  _mm_store_ps(values, lanes);
  return values[0] + values[1] + values[2] + values[3];
}

// The eight lanes' sum.
__attribute__((target("avx2"))) float Sum8(__m256 lanes) {
  __m128 half = _mm_add_ps(_mm256_castps256_ps128(lanes),
                           _mm256_extractf128_ps(lanes, 1));
  half = _mm_add_ps(half, _mm_movehl_ps(half, half));
  half = _mm_add_ss(half, _mm_shuffle_ps(half, half, 1));
  return _mm_cvtss_f32(half);
}

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
  return Sum4(_mm_add_ps(sum0, sum1)) + Scalar(a + i, b + i, dim - i);
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
  return Sum8(_mm256_add_ps(sum0, sum1)) + Scalar(a + i, b + i, dim - i);
}

// Four bytes (zero-extended, SSE2 has no pmovzx) as four floats.
__m128 Widen4(__m128i bytes_as_words, __m128i zero, bool high) {
  return _mm_cvtepi32_ps(high ? _mm_unpackhi_epi16(bytes_as_words, zero)
                              : _mm_unpacklo_epi16(bytes_as_words, zero));
}

float SseU8(const float* a, const uint8_t* codes, size_t dim) {
  const __m128i zero = _mm_setzero_si128();
  __m128 sum0 = _mm_setzero_ps();
  __m128 sum1 = _mm_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    const __m128i bytes =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + i));
    const __m128i lo = _mm_unpacklo_epi8(bytes, zero);
    const __m128i hi = _mm_unpackhi_epi8(bytes, zero);
    sum0 = _mm_add_ps(sum0,
                      _mm_mul_ps(_mm_loadu_ps(a + i), Widen4(lo, zero, false)));
    sum1 = _mm_add_ps(
        sum1, _mm_mul_ps(_mm_loadu_ps(a + i + 4), Widen4(lo, zero, true)));
    sum0 = _mm_add_ps(
        sum0, _mm_mul_ps(_mm_loadu_ps(a + i + 8), Widen4(hi, zero, false)));
    sum1 = _mm_add_ps(
        sum1, _mm_mul_ps(_mm_loadu_ps(a + i + 12), Widen4(hi, zero, true)));
  }
  if (i + 8 <= dim) {
    const __m128i words = _mm_unpacklo_epi8(
        _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + i)), zero);
    sum0 = _mm_add_ps(
        sum0, _mm_mul_ps(_mm_loadu_ps(a + i), Widen4(words, zero, false)));
    sum1 = _mm_add_ps(
        sum1, _mm_mul_ps(_mm_loadu_ps(a + i + 4), Widen4(words, zero, true)));
    i += 8;
  }
  return Sum4(_mm_add_ps(sum0, sum1)) + ScalarU8(a + i, codes + i, dim - i);
}

// Eight codes at `codes` as eight floats.
__attribute__((target("avx2"))) __m256 Widen8(const uint8_t* codes) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
      _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes))));
}

__attribute__((target("avx2,fma"))) float Avx2U8(const float* a,
                                                 const uint8_t* codes,
                                                 size_t dim) {
  __m256 sum0 = _mm256_setzero_ps();
  __m256 sum1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= dim; i += 32) {
    sum0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), Widen8(codes + i), sum0);
    sum1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), Widen8(codes + i + 8),
                           sum1);
    sum0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), Widen8(codes + i + 16),
                           sum0);
    sum1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), Widen8(codes + i + 24),
                           sum1);
  }
  for (; i + 8 <= dim; i += 8) {
    sum0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), Widen8(codes + i), sum0);
  }
  return Sum8(_mm256_add_ps(sum0, sum1)) + ScalarU8(a + i, codes + i, dim - i);
}

bool HasAvx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

using Kernel = float (*)(const float*, const float*, size_t);

const Kernel kKernel = HasAvx2() ? Avx2 : Sse;
const internal::InnerProductU8Kernel kU8Kernel = HasAvx2() ? Avx2U8 : SseU8;

#endif

}  // namespace

float InnerProduct(const float* a, const float* b, size_t dim) {
#if defined(__x86_64__)
  return kKernel(a, b, dim);
#else
  return Scalar(a, b, dim);
#endif
}

float InnerProductU8(const float* a, const uint8_t* codes, size_t dim) {
#if defined(__x86_64__)
  return kU8Kernel(a, codes, dim);
#else
  return ScalarU8(a, codes, dim);
#endif
}

namespace internal {

std::vector<std::pair<const char*, InnerProductU8Kernel>>
InnerProductU8Kernels() {
  std::vector<std::pair<const char*, InnerProductU8Kernel>> kernels = {
      {"scalar", ScalarU8}};
#if defined(__x86_64__)
  kernels.push_back({"sse2", SseU8});
  if (HasAvx2()) kernels.push_back({"avx2", Avx2U8});
#endif
  return kernels;
}

}  // namespace internal

}  // namespace arbiter::retrieval
