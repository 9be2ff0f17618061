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

Judging JudgedIds::Insert(absl::string_view mac, absl::Time issued) {
  std::lock_guard lock(mu_);
  const auto [it, inserted] =
      entries_.try_emplace(KeyOf(mac), Entry{absl::ToUnixSeconds(issued)});
  if (inserted) return Judging::kFirst;
  return it->second.unanswered ? Judging::kUnanswered : Judging::kRepeat;
}

void JudgedIds::MarkUnanswered(absl::string_view mac, absl::Time issued) {
  std::lock_guard lock(mu_);
  entries_.try_emplace(KeyOf(mac), Entry{absl::ToUnixSeconds(issued), true});
}

void JudgedIds::ForgetIssuedBefore(absl::Time cutoff) {
  const int64_t before = absl::ToUnixSeconds(cutoff);
  std::lock_guard lock(mu_);
  absl::erase_if(entries_, [&](const auto& entry) {
    return entry.second.issued_unix_seconds < before;
  });
}

size_t JudgedIds::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace arbiter
