#include "gateway/judged_ids.h"

#include <algorithm>
#include <cstring>

namespace arbiter {

absl::uint128 JudgedIds::KeyOf(absl::string_view mac) {
  uint64_t high = 0, low = 0;
  char bytes[16] = {};
  std::memcpy(bytes, mac.data(), std::min<size_t>(mac.size(), 16));
  std::memcpy(&high, bytes, 8);
  std::memcpy(&low, bytes + 8, 8);
  return absl::MakeUint128(high, low);
}

bool JudgedIds::Insert(absl::string_view mac, absl::Time issued) {
  std::lock_guard lock(mu_);
  return issued_unix_seconds_.emplace(KeyOf(mac), absl::ToUnixSeconds(issued))
      .second;
}

void JudgedIds::ForgetIssuedBefore(absl::Time cutoff) {
  const int64_t before = absl::ToUnixSeconds(cutoff);
  std::lock_guard lock(mu_);
  absl::erase_if(issued_unix_seconds_,
                 [&](const auto& entry) { return entry.second < before; });
}

size_t JudgedIds::size() const {
  std::lock_guard lock(mu_);
  return issued_unix_seconds_.size();
}

}  // namespace arbiter
