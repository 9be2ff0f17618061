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

// The simulator in-process. Answers arrive after the simulated generation
// time from one timer thread, so no thread waits on them: a unary answer
// whole after time to first token plus its tokens' time, a streamed one
// chunk by chunk as sim::Simulator::NextChunk paces it (the same text for
// the same request and seed). A call holds one pending timer at a time and
// about a kilobyte; cancelling it ends it at once with CANCELLED and the
// tokens sent so far.
//
// A simulator cannot honour passthrough_json's fields (tools,
// response_format...): such a call fails with INVALID_ARGUMENT naming the
// first.
class SimBackend final : public Backend {
 public:
  SimBackend(std::string name, std::shared_ptr<const sim::Simulator> simulator);
  ~SimBackend() override;

  SimBackend(const SimBackend&) = delete;
  SimBackend& operator=(const SimBackend&) = delete;

  std::shared_ptr<CallHandle> Stream(
      BackendRequest request,
      std::shared_ptr<StreamObserver> observer) override;
  void CancelAll(const absl::Status& why) override;
  absl::string_view name() const override { return name_; }

  class Call;
  struct Link;

 private:
  // The next step of `call`, on the timer thread: its next chunk, or its
  // end.
  void Step(const std::shared_ptr<Call>& call);
  // Schedules the step after what `call` has sent (its chunk, its end or
  // its deadline).
  void Plan(const std::shared_ptr<Call>& call);
  // Ends `call` once, on the timer thread.
  void End(Call& call, absl::Status status);
  // Ends `call` with `why` on the timer thread (Cancel, CancelAll).
  void Stop(std::shared_ptr<Call> call, absl::Status why);

  const std::string name_;
  const std::shared_ptr<const sim::Simulator> simulator_;
  // Lets call handles, which may outlive the backend, reach it.
  const std::shared_ptr<Link> link_;
  std::mutex mu_;  // std:: so ThreadSanitizer sees it.
  // Calls not yet ended, for CancelAll.
  absl::flat_hash_map<Call*, std::shared_ptr<Call>> live_ ABSL_GUARDED_BY(mu_);
  // Declared last: its destructor runs what is pending, which needs the rest.
  TimerQueue timers_;
};

}  // namespace arbiter
