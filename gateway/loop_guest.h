#pragma once

#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"

namespace arbiter {

// An event loop that can run on another component's thread instead of its
// own: a backend's transfers on an HTTP I/O thread, so that a request and
// its backend call are served by one thread without a hand-over.
//
// The host calls Join once, then Turn on its one thread whenever ready_fd is
// readable, when the time Turn asked for has come, or after request_turn was
// called; then Leave once, after its last Turn. Between Join and Leave the
// guest runs no thread of its own; before and after it does.
class LoopGuest {
 public:
  virtual ~LoopGuest() = default;

  // Readable when Turn has something to do; level-triggered: it stays
  // readable until a Turn has done it.
  [[nodiscard]] virtual int ready_fd() const = 0;
  // The guest stops its own thread. request_turn asks the host for a Turn
  // soon; the guest calls it only on the host's thread.
  virtual void Join(absl::AnyInvocable<void()> request_turn) = 0;
  // Does what is ready, without blocking, and says in how long to call again
  // if ready_fd stays quiet (zero: at once, to let others run in between;
  // absl::InfiniteDuration(): only when it is readable). Never throws.
  virtual absl::Duration Turn() = 0;
  // The guest runs on its own thread again.
  virtual void Leave() = 0;
};

}  // namespace arbiter
