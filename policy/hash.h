#pragma once

#include <cstdint>

#include "absl/strings/string_view.h"

namespace arbiter::policy {

// FNV-1a, 64-bit: stable across processes and machines, unlike std::hash,
// so sticky assignments and request-id checks agree between replicas.
[[nodiscard]] constexpr uint64_t StableHash64(absl::string_view data,
                                              uint64_t seed = 0) {
  uint64_t h = 14695981039346656037ull ^ seed;
  for (char c : data) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  // Final avalanche (from SplitMix64) so nearby inputs spread over [0, 2^64).
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

// Maps a 64-bit hash to [0, 1).
[[nodiscard]] constexpr double UnitInterval(uint64_t h) {
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

}  // namespace arbiter::policy
