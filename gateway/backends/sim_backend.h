#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "gateway/backends/backend.h"
#include "gateway/sim/simulator.h"
#include "gateway/timer_queue.h"

namespace arbiter {

// The simulator in-process: answers arrive after the simulated generation
// time, from a timer thread, so no thread waits on them.
class SimBackend final : public Backend {
 public:
  SimBackend(std::string name, std::shared_ptr<const sim::Simulator> simulator);

  std::shared_ptr<CallHandle> Stream(
      BackendRequest request,
      std::shared_ptr<StreamObserver> observer) override;
  void CancelAll(const absl::Status& why) override;
  absl::string_view name() const override { return name_; }

 private:
  // The whole answer at once (the unary path, until streaming lands).
  void CompleteWhole(BackendRequest request, BackendCallback done);
  // Answers the pending request `id` unless CancelAll already did.
  void Answer(uint64_t id, absl::StatusOr<BackendResponse> result);

  const std::string name_;
  const std::shared_ptr<const sim::Simulator> simulator_;
  std::mutex mu_;  // std:: so ThreadSanitizer sees it.
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint64_t, BackendCallback> pending_ ABSL_GUARDED_BY(mu_);
  // Declared last: its destructor runs what is pending, which needs the rest.
  TimerQueue timers_;
};

}  // namespace arbiter
