#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gateway/gateway_host.h"

namespace arbiter {

// Whether the gateway can serve: some route's backend accepts connections
// (openai backends are probed with a TCP connect every second; a simulator
// always does) and is in service (not ejected). Both fronts report it:
// /readyz, and gRPC health's NOT_SERVING. Checked again every 200 ms on its
// own thread, which tells a watcher each time the answer flips.
class Readiness final {
 public:
  struct BackendState {
    std::string name;
    // "reachable", "unreachable", or the ejection ("ejected for 4.2s more
    // (5 failures in a row)").
    std::string state;
  };
  struct Report {
    bool ready = false;
    std::vector<BackendState> backends;  // In config order.
  };
  static constexpr char kUnreadyReason[] =
      "no route's backend accepts connections and is in service";

  // Probes once before returning; follows the host's current config.
  // `host` must outlive it.
  explicit Readiness(const GatewayHost& host);
  ~Readiness();

  Readiness(const Readiness&) = delete;
  Readiness& operator=(const Readiness&) = delete;

  [[nodiscard]] Report Check(absl::Time now) const;
  // `watcher` is told the current answer at once, then each change, on the
  // readiness thread; nullptr stops telling (returns after any call in
  // progress has).
  void Watch(std::function<void(bool ready)> watcher);

 private:
  void ProbeBackends();
  void Loop();

  const GatewayHost& host_;
  // By openai backend's base_url: accepted a connection at the last probe.
  mutable std::mutex reachable_mu_;
  absl::flat_hash_map<std::string, bool> reachable_
      ABSL_GUARDED_BY(reachable_mu_);
  std::mutex watch_mu_;  // std:: so ThreadSanitizer sees it.
  std::function<void(bool)> watcher_ ABSL_GUARDED_BY(watch_mu_);
  bool told_ready_ ABSL_GUARDED_BY(watch_mu_) = false;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace arbiter
