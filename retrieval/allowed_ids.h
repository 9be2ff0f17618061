#pragma once

// The ids a filtered search may return. A search builds one from the
// store's matching chunk ids and checks it for every candidate that could
// enter its results, so both must be cheap: a bitmap over the ids' range,
// or a hash set when the ids are too sparse for one.

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/types/span.h"

namespace arbiter::retrieval {

class AllowedIds final {
 public:
  explicit AllowedIds(std::vector<int64_t> ids);

  [[nodiscard]] bool contains(int64_t id) const {
    if (!bits_.empty()) {
      const uint64_t offset =
          static_cast<uint64_t>(id) - static_cast<uint64_t>(first_);
      return offset < range_ && (bits_[offset >> 6] >> (offset & 63) & 1) != 0;
    }
    return sparse_.contains(id);
  }
  // The ids, sorted, each once.
  [[nodiscard]] absl::Span<const int64_t> ids() const { return ids_; }
  [[nodiscard]] bool empty() const { return ids_.empty(); }

 private:
  std::vector<int64_t> ids_;
  int64_t first_ = 0;
  uint64_t range_ = 0;
  std::vector<uint64_t> bits_;
  absl::flat_hash_set<int64_t> sparse_;
};

}  // namespace arbiter::retrieval
