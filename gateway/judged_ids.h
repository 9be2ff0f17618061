#pragma once

#include <cstddef>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/numeric/int128.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace arbiter {

// The requests whose feedback was counted, by their id's MAC (which only
// this deployment's key makes, so ids cannot be crafted to collide), for as
// long as feedback on them is accepted. The durable copy is in the state
// store; this one answers at once. About 40 bytes a judged request.
// Thread-safe.
class JudgedIds final {
 public:
  JudgedIds() = default;
  JudgedIds(const JudgedIds&) = delete;
  JudgedIds& operator=(const JudgedIds&) = delete;

  // true the first time a MAC is given; false (a repeat) after. Only the
  // first 16 bytes of `mac` count.
  bool Insert(absl::string_view mac, absl::Time issued);
  // Forgets those issued before `cutoff`: their feedback is refused anyway.
  void ForgetIssuedBefore(absl::Time cutoff);
  [[nodiscard]] size_t size() const;

 private:
  [[nodiscard]] static absl::uint128 KeyOf(absl::string_view mac);

  mutable std::mutex mu_;  // std:: so ThreadSanitizer sees it.
  absl::flat_hash_map<absl::uint128, int64_t> issued_unix_seconds_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace arbiter
