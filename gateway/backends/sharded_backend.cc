#include "gateway/backends/sharded_backend.h"

#include <utility>

namespace arbiter {

ShardedBackend::ShardedBackend(
    std::vector<std::unique_ptr<RoomReportingBackend>> shards)
    : shards_(std::move(shards)) {}

std::shared_ptr<CallHandle> ShardedBackend::Stream(
    BackendRequest request, std::shared_ptr<StreamObserver> observer) {
  return Pick().Stream(std::move(request), std::move(observer));
}

std::vector<LoopGuest*> ShardedBackend::loop_guests() {
  std::vector<LoopGuest*> guests;
  for (const auto& shard : shards_) {
    for (LoopGuest* guest : shard->loop_guests()) guests.push_back(guest);
  }
  return guests;
}

RoomReportingBackend& ShardedBackend::Pick() {
  for (const auto& shard : shards_) {
    if (shard->runs_on_this_thread() && shard->room() > 0) return *shard;
  }
  return Roomiest();
}

void ShardedBackend::CancelAll(const absl::Status& why) {
  for (const auto& shard : shards_) shard->CancelAll(why);
}

RoomReportingBackend& ShardedBackend::Roomiest() {
  const size_t count = shards_.size();
  // Starting from a different shard each time spreads calls over shards
  // that have equal room, as an idle gateway's all do.
  const size_t start = next_.fetch_add(1, std::memory_order_relaxed) % count;
  RoomReportingBackend* best = shards_[start].get();
  int best_room = best->room();
  for (size_t step = 1; step < count; ++step) {
    RoomReportingBackend* shard = shards_[(start + step) % count].get();
    const int room = shard->room();
    if (room > best_room) {
      best = shard;
      best_room = room;
    }
  }
  return *best;
}

}  // namespace arbiter
