#pragma once

#include <memory>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "arbiter/v1/gateway.pb.h"
#include "gateway/backends/backend.h"

namespace arbiter {

namespace auth {
struct TenantGrant;
}  // namespace auth

// What a front hears of one request, in order: OnStart once, with the head
// of the attempt that answers, just before its first piece of the answer
// (so a failed attempt can still fall back to another route unseen; not
// for a request that fails before any answer), OnDelta for each piece,
// OnEnd exactly once, last. OnStart and OnDelta run on the backend's event
// thread, OnEnd there too or on the caller's or a retrieval thread (inline,
// for a refused request). None may block.
class InferSink {
 public:
  virtual ~InferSink() = default;
  // Request id, route, kind, backend, model, task, decision, citations and
  // the attempts that failed before.
  virtual void OnStart(const v1::InferResponse& head) = 0;
  virtual void OnDelta(BackendDelta delta) = 0;
  // On success `response` holds the head plus usage, cost, latency and
  // finish reason; its text is empty (the deltas carried it). CANCELLED
  // after InferHandle::Cancel, with the usage and cost of what was produced.
  // The sink may move from `response`.
  virtual void OnEnd(const absl::Status& status,
                     v1::InferResponse& response) = 0;
};

struct InferOptions {
  // The caller's (absl::InfiniteFuture() for none).
  absl::Time deadline = absl::InfiniteFuture();
  // Ask the backend to stream; unary calls get the answer as one delta.
  bool stream = false;
  // The tenant whose key made the request (it must outlive the request; the
  // generation owns it), or null for an admin or with auth off: only its
  // allowed routes and tasks are used, and its request ids name it.
  const auth::TenantGrant* tenant = nullptr;
};

// Cancels one request: before its backend call it is not made, during it
// the backend transfer stops. Thread-safe, idempotent, harmless after the
// end.
class InferHandle final {
 public:
  void Cancel();
  [[nodiscard]] bool cancelled() const;

  // The pipeline's side: the backend call to cancel (cancelled at once when
  // Cancel came first, dropped when the request has ended already).
  void Attach(std::shared_ptr<CallHandle> backend_call);
  // The request ended: the backend call is let go (it may hold the
  // request, which holds this handle).
  void Ended();

 private:
  mutable std::mutex mu_;  // std:: so ThreadSanitizer sees it.
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<CallHandle> backend_call_ ABSL_GUARDED_BY(mu_);
};

}  // namespace arbiter
