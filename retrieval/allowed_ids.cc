#include "retrieval/allowed_ids.h"

#include <algorithm>
#include <utility>

namespace arbiter::retrieval {

AllowedIds::AllowedIds(std::vector<int64_t> ids) : ids_(std::move(ids)) {
  // The store hands them over sorted: then this is one pass.
  if (!std::is_sorted(ids_.begin(), ids_.end())) {
    std::sort(ids_.begin(), ids_.end());
  }
  ids_.erase(std::unique(ids_.begin(), ids_.end()), ids_.end());
  if (ids_.empty()) return;
  const int64_t low = ids_.front();
  const uint64_t span =
      static_cast<uint64_t>(ids_.back()) - static_cast<uint64_t>(low);
  // A bitmap while it takes at most 8 bytes per id (a hash set's share),
  // which chunk ids (SQLite row ids, handed out in order) nearly always do.
  if (span / 64 <= ids_.size() + 64) {
    first_ = low;
    range_ = span + 1;
    bits_.assign(span / 64 + 1, 0);
    for (int64_t id : ids_) {
      const uint64_t offset =
          static_cast<uint64_t>(id) - static_cast<uint64_t>(first_);
      bits_[offset >> 6] |= uint64_t{1} << (offset & 63);
    }
  } else {
    sparse_.insert(ids_.begin(), ids_.end());
  }
}

}  // namespace arbiter::retrieval
