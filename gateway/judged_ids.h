#pragma once

#include <cstddef>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/numeric/int128.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace arbiter {

// What Insert found.
enum class Judging {
  kFirst,       // Not seen before: count the feedback.
  kRepeat,      // Feedback was counted already.
  kUnanswered,  // The request ended without an answer: nothing to judge.
};

// The requests whose feedback was counted, or that ended without an answer
// (failed or cancelled), by their id's MAC (which only this deployment's
// key makes, so ids cannot be crafted to collide), for as long as feedback
// on them is accepted. The durable copy is in the state store; this one
// answers at once. About 40 bytes a request. Thread-safe.
class JudgedIds final {
 public:
  JudgedIds() = default;
  JudgedIds(const JudgedIds&) = delete;
  JudgedIds& operator=(const JudgedIds&) = delete;

  // kFirst the first time a MAC is given, and it is judged from then on.
  // Only the first 16 bytes of `mac` count.
  Judging Insert(absl::string_view mac, absl::Time issued);
  // Its feedback is refused from now on; one judged already stays judged.
  void MarkUnanswered(absl::string_view mac, absl::Time issued);
  // Forgets those issued before `cutoff`: their feedback is refused anyway.
  void ForgetIssuedBefore(absl::Time cutoff);
  [[nodiscard]] size_t size() const;

 private:
  [[nodiscard]] static absl::uint128 KeyOf(absl::string_view mac);

  mutable std::mutex mu_;  // std:: so ThreadSanitizer sees it.
  struct Entry {
    int64_t issued_unix_seconds = 0;
    bool unanswered = false;
  };
  absl::flat_hash_map<absl::uint128, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace arbiter
