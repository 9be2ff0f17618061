#pragma once

#include <memory>
#include <string>

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

  void Complete(BackendRequest request, BackendCallback done) override;
  absl::string_view name() const override { return name_; }

 private:
  const std::string name_;
  const std::shared_ptr<const sim::Simulator> simulator_;
  TimerQueue timers_;
};

}  // namespace arbiter
