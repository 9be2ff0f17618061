#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gateway/config.h"
#include "gateway/gateway.h"
#include "gateway/gateway_foundation.h"
#include "gateway/timer_queue.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace arbiter {

// The gateway as the fronts see it: the current generation over one
// foundation. Reload reads the config again, validates it whole and swaps a
// new generation in: requests already in flight finish on the generation
// they started with, new ones get the new one, and what the old one learned
// and accounted carries over by name. Thread-safe.
//
//   auto host = GatewayHost::Create(loaded, registry, read_config);
//   std::shared_ptr<Gateway> gateway = (*host)->Current();  // per request
//   auto report = (*host)->Reload();  // on SIGHUP or Admin/ReloadConfig
class GatewayHost final {
 public:
  // Reads the config again, from where the first came.
  using ConfigSource = std::function<absl::StatusOr<LoadedConfig>()>;

  static absl::StatusOr<std::unique_ptr<GatewayHost>> Create(
      LoadedConfig config, prometheus::Registry& registry, ConfigSource source);
  ~GatewayHost();

  GatewayHost(const GatewayHost&) = delete;
  GatewayHost& operator=(const GatewayHost&) = delete;

  // The generation new requests use; holding it keeps it alive.
  [[nodiscard]] std::shared_ptr<Gateway> Current() const;

  struct ReloadReport {
    std::string config_hash;
    std::vector<std::string> changes;  // A line each.
  };
  // INVALID_ARGUMENT listing every problem of the new config, or
  // FAILED_PRECONDITION naming a setting that needs a restart; the running
  // config stays either way. One reload at a time.
  absl::StatusOr<ReloadReport> Reload();
  // Runs at every reload once the new config is valid, before it takes
  // over (e.g. reading rotated certificates); an error refuses the reload.
  // Set before serving.
  void AddReloadStep(absl::AnyInvocable<absl::Status()> step);

  [[nodiscard]] GatewayFoundation& foundation() { return *foundation_; }
  [[nodiscard]] std::string config_hash() const;
  // What was loaded, for the start-up banner.
  [[nodiscard]] std::string Describe() const;

 private:
  GatewayHost(prometheus::Registry& registry, ConfigSource source);
  void SetConfigInfo(const std::string& hash);
  // Ends retired generations nothing uses any more, on the reaper's thread.
  void ScheduleReap();

  prometheus::Registry& registry_;
  const ConfigSource source_;
  std::unique_ptr<GatewayFoundation> foundation_;
  // Held shared while outcomes and feedback are counted, exclusively while
  // a reload hands statistics over.
  std::shared_mutex handover_;
  std::mutex reload_mu_;  // One reload at a time.
  std::vector<absl::AnyInvocable<absl::Status()>> reload_steps_
      ABSL_GUARDED_BY(reload_mu_);
  mutable std::mutex current_mu_;
  std::shared_ptr<Gateway> current_ ABSL_GUARDED_BY(current_mu_);
  std::string hash_ ABSL_GUARDED_BY(current_mu_);
  struct Retired {
    std::shared_ptr<Gateway> gateway;
    absl::Time idle_since = absl::InfiniteFuture();
  };
  std::mutex retired_mu_;
  std::vector<Retired> retired_ ABSL_GUARDED_BY(retired_mu_);
  bool reaping_ ABSL_GUARDED_BY(retired_mu_) = false;  // A check is due.
  prometheus::Family<prometheus::Counter>& reloads_;
  prometheus::Family<prometheus::Gauge>& config_info_;
  prometheus::Gauge* config_info_now_ = nullptr;
  std::atomic<bool> stopping_{false};
  std::unique_ptr<TimerQueue> reaper_;  // Last: it stops first.
};

}  // namespace arbiter
