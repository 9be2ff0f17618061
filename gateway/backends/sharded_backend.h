#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "gateway/backends/backend.h"

namespace arbiter {

// A backend that can say how many more calls it takes at once, so a caller
// can send each call where there is room.
class RoomReportingBackend : public Backend {
 public:
  // Calls it would still take without refusing (free connections plus free
  // queue places); <= 0 when full. A snapshot: it may change at once.
  [[nodiscard]] virtual int room() const = 0;
  // True on the thread that runs this backend's event loop, where a call
  // starts without a hand-over to another thread.
  [[nodiscard]] virtual bool runs_on_this_thread() const { return false; }
};

// One backend served by several shards, each with its own event thread and
// an even share of the connections: one thread's curl loop tops out at
// about one core, and a request's latency grows with the queue in front of
// that thread. A call made on a shard's own event thread (an HTTP I/O
// thread that hosts it) stays there while that shard has room; any other
// goes to the shard with the most room (rotating among equals), so no call
// is refused while any shard has room, except in the race where two callers
// take the last place at once.
class ShardedBackend final : public Backend {
 public:
  // shards is not empty; all serve the same upstream under the same name.
  explicit ShardedBackend(
      std::vector<std::unique_ptr<RoomReportingBackend>> shards);

  std::shared_ptr<CallHandle> Stream(
      BackendRequest request,
      std::shared_ptr<StreamObserver> observer) override;
  void CancelAll(const absl::Status& why) override;
  absl::string_view name() const override { return shards_.front()->name(); }
  std::vector<LoopGuest*> loop_guests() override;

 private:
  // This thread's own shard if it has room, else the one with the most.
  RoomReportingBackend& Pick();
  RoomReportingBackend& Roomiest();

  const std::vector<std::unique_ptr<RoomReportingBackend>> shards_;
  std::atomic<unsigned> next_{0};  // Where the search for room starts.
};

}  // namespace arbiter
