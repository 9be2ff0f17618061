#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "arbiter/v1/config.pb.h"
#include "gateway/backends/backend.h"
#include "gateway/backends/sharded_backend.h"

typedef void CURLM;
typedef void CURL;
struct curl_slist;

namespace arbiter {

// Which of a backend's event threads an OpenAIBackend is: it takes an even
// share of max_connections and max_queued_requests.
struct EventThreadShare {
  int index = 0;
  int of = 1;
};

// An OpenAI-compatible /v1/chat/completions server (vLLM, TGI, llama.cpp,
// Ollama, OpenAI). Requests run on one event thread of libcurl's multi
// interface, so a thousand slow requests cost a thousand buffers, not a
// thousand threads. Usage comes from the response's "usage" field, or is
// counted locally when the server sends none.
//
// A request with `stream` asks for Server-Sent Events ("stream": true,
// "stream_options": {"include_usage": true}) and reads them as they arrive
// (common/sse), never holding the whole answer: each chat.completion.chunk
// is one OnDelta (its content as text; the delta's other fields, such as
// tool_calls, and the choice's logprobs as fields_json), the last chunk's
// usage is read and `data: [DONE]` ends the stream. A server that answers
// with one whole JSON body instead is read as a unary answer. Without
// `stream` the answer is requested whole (the fast path) and goes out as
// one OnDelta, then OnEnd with the message's tool_calls, the choice's
// logprobs and system_fingerprint in fields_json.
//
// passthrough_json's members go into the request body unchanged; one that
// arbiter sets itself (model, messages, stream...) fails the call with
// INVALID_ARGUMENT naming it.
//
// Nothing the server sends can end the process: the answer is read through
// common/json, a wrong or missing field is UNAVAILABLE naming it, an answer
// (streamed or not) over max_response_bytes is cut off, one SSE event over
// 1 MiB fails the stream, and a last catch-all per transfer turns any
// exception into INTERNAL for that request alone. Messages name the
// backend, never its URL nor what it sent; those go to the log.
//
// At most max_connections requests are on the wire; up to
// max_queued_requests more wait for a connection, in order, and further
// ones fail at once with RESOURCE_EXHAUSTED. Every request is answered by
// its timeout, counted from Stream, whether it waited or not. Cancelling a
// call takes it off the wire (closing its connection) or out of the queue
// at once, on the event thread; OnEnd says CANCELLED with the tokens
// produced so far.
//
// The event loop runs on the backend's own thread, or on a host's (an HTTP
// I/O thread, see LoopGuest) between Join and Leave: then a request that
// front takes and its transfer are served by one thread, with no hand-over.
class OpenAIBackend final : public RoomReportingBackend, public LoopGuest {
 public:
  // config has its defaults applied (ApplyOpenAIBackendDefaults). api_key
  // may be empty (no Authorization header). on_error, if set, is
  // told the reason of every failed request.
  OpenAIBackend(std::string name, const v1::OpenAIBackend& config,
                std::string api_key, BackendErrorObserver on_error = nullptr,
                EventThreadShare share = {});
  ~OpenAIBackend() override;

  OpenAIBackend(const OpenAIBackend&) = delete;
  OpenAIBackend& operator=(const OpenAIBackend&) = delete;

  std::shared_ptr<CallHandle> Stream(
      BackendRequest request,
      std::shared_ptr<StreamObserver> observer) override;
  void CancelAll(const absl::Status& why) override;
  absl::string_view name() const override { return name_; }
  int room() const override;
  bool runs_on_this_thread() const override;
  std::vector<LoopGuest*> loop_guests() override { return {this}; }

  // LoopGuest. Destroying the backend while hosted is allowed only once the
  // host has stopped calling Turn; it then ends what is left on the
  // destroying thread.
  int ready_fd() const override { return epoll_fd_; }
  void Join(absl::AnyInvocable<void()> request_turn) override;
  absl::Duration Turn() override;
  void Leave() override;

  struct Transfer;
  struct Link;
  class Call;

 private:
  // A request refused before it reached the loop, answered on the loop.
  struct Refusal {
    std::shared_ptr<StreamObserver> observer;
    absl::Status status;
    std::optional<BackendError> reason;  // For the metric; none if unset.
  };

  // Who runs the loop now.
  enum class Driver { kOwnThread, kHost, kNone };

  // Called by a Call's Cancel: the loop looks for cancelled calls.
  void WakeForCancel();
  // Gets the loop to look at what was handed to it: a Turn asked of the
  // host when called on the host's thread (no system call), else Wake.
  void Notify();
  // curl's write callback: what the server sent, as it arrives.
  static size_t OnBody(char* data, size_t size, size_t count, void* user);
  // False stops the transfer (it failed, or was cancelled).
  bool Receive(Transfer& transfer, absl::string_view bytes);
  // One SSE event of a streamed answer.
  absl::Status OnEvent(Transfer& transfer, absl::string_view data);
  void Deliver(Transfer& transfer, BackendDelta delta);
  // The end of a stream that finished as HTTP: its usage, or why it is bad.
  absl::StatusOr<BackendResponse> StreamOutcome(Transfer& transfer,
                                                BackendError* reason);
  // What a failed or cancelled call is billed: tokens produced so far.
  static BackendResponse UsageSoFar(const Transfer& transfer);

  // The loop on the backend's own thread, until a host joins or it stops.
  void Loop();
  // Does what is due without waiting; true if it should run again at once.
  bool RunDue();
  // How long until RunDue has something to do with no socket ready: the
  // next deadline or curl's next timer; InfiniteDuration if neither.
  absl::Duration UntilDue();
  // Waits up to wait_ms for a ready socket or Wake, and lets curl act on
  // the sockets that are ready; how many were.
  int WaitAndAct(int wait_ms);
  // Wakes the loop; thread-safe.
  void Wake();
  // In how long curl wants to run its timers (connects, its own timeouts):
  // 0 now, -1 never.
  long CurlTimeoutMs();
  // curl's multi-socket callback: watch `socket` for `what`. On the event
  // thread.
  static int OnSocket(CURL* easy, int socket, int what, void* user,
                      void* socket_data);
  // Moves what Stream, Cancel and CancelAll left into the loop; says who
  // should run it from now on (kNone: the backend is stopping).
  Driver TakeIncoming();
  // Ends the calls whose handles were cancelled.
  void EndCancelled();
  // Fails what is past its deadline; sets next_deadline_ to the earliest
  // deadline left.
  void ExpireOverdue(absl::Time now);
  // Puts waiting requests on the wire while connections are free.
  void StartWaiting();
  // After a long queue has drained, gives freed memory back to the system.
  void ReleaseMemoryIfDrained(absl::Time now);
  // False if curl could not take it.
  bool Start(Transfer& transfer);
  // An easy handle: an idle one, or a new one (null if curl has none).
  CURL* TakeEasy();
  // A finished transfer's handle, kept for the next (up to
  // max_connections_) or freed.
  void ReturnEasy(CURL* easy);
  // Answers the transfers curl has finished; false if none.
  bool CollectFinished();
  // What a finished transfer produced; *reason says why it failed.
  absl::StatusOr<BackendResponse> Outcome(Transfer& transfer, int curl_code,
                                          BackendError* reason);
  void FailAll(const absl::Status& why);
  // What a call still held when the backend stops is failed with.
  [[nodiscard]] absl::Status ShuttingDown() const;
  // Counts why (if given) and ends the call with the usage so far; OnEnd
  // runs at most once.
  void Fail(Transfer& transfer, std::optional<BackendError> reason,
            absl::Status status);
  void Answer(Transfer& transfer, absl::StatusOr<BackendResponse> result);
  // Runs the observer's OnEnd, which may throw.
  void End(std::shared_ptr<StreamObserver> observer, absl::Status status,
           BackendResponse usage);
  void CountError(BackendError reason);
  // One line on stderr, at most a few per second per backend.
  void Log(absl::string_view line);

  // Constant after construction.
  const std::string name_;
  const std::string url_;
  const std::string api_key_;
  const int max_connections_;  // This thread's share.
  const int max_queued_;
  // The configured totals over all shards, for messages.
  const int total_connections_;
  const int total_queued_;
  // How long a request may wait for a connection; InfiniteDuration: until
  // its own deadline.
  const absl::Duration max_queue_wait_;
  const int64_t max_response_bytes_;
  const BackendErrorObserver on_error_;
  // Lets call handles, which may outlive the backend, reach it.
  const std::shared_ptr<Link> link_;
  const int epoll_fd_;  // The sockets curl asks to watch, and wake_fd_.
  const int wake_fd_;   // An eventfd: Wake writes it.
  CURLM* const multi_;
  curl_slist* const headers_;  // Content-Type, Expect, Authorization.

  // Accepted and not yet answered: bounds what Stream takes.
  std::atomic<int> outstanding_{0};

  std::mutex mu_;  // std:: so ThreadSanitizer sees it.
  std::vector<std::unique_ptr<Transfer>> incoming_ ABSL_GUARDED_BY(mu_);
  std::vector<Refusal> refused_ ABSL_GUARDED_BY(mu_);
  bool cancel_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool hosted_ ABSL_GUARDED_BY(mu_) = false;  // Between Join and Leave.
  // Set by CancelAll; the loop fails everything it holds and clears it.
  std::optional<absl::Status> cancel_ ABSL_GUARDED_BY(mu_);

  // Touched by the event thread only. waiting_ is in arrival order.
  std::deque<std::unique_ptr<Transfer>> waiting_;
  std::vector<CURL*> idle_easy_;  // Reset, for the next transfers.
  std::vector<std::unique_ptr<Transfer>> active_;  // On the wire.
  absl::Time next_deadline_ = absl::InfiniteFuture();
  size_t most_waiting_ = 0;  // Since the last trim.
  absl::Time last_trim_ = absl::InfinitePast();
  std::thread trimmer_;  // Returns freed memory to the system, off the loop.
  std::atomic<bool> trimming_{false};

  std::mutex log_mu_;
  absl::Time log_window_ ABSL_GUARDED_BY(log_mu_);
  int logged_in_window_ ABSL_GUARDED_BY(log_mu_) = 0;
  int64_t suppressed_ ABSL_GUARDED_BY(log_mu_) = 0;

  // The thread running the loop (own or host's); checked by callers.
  std::atomic<std::thread::id> loop_thread_{};
  // Set by Join before the host's thread starts, cleared by Leave after it
  // ended; called on the host's thread only.
  absl::AnyInvocable<void()> request_turn_;
  bool turn_requested_ = false;  // On the loop's thread only.

  std::thread thread_;  // Not running while hosted.
};

// The backend config describes: one OpenAIBackend, or a ShardedBackend of
// event_threads of them.
[[nodiscard]] std::unique_ptr<Backend> MakeOpenAIBackend(
    const std::string& name, const v1::OpenAIBackend& config,
    const std::string& api_key, const BackendErrorObserver& on_error);

}  // namespace arbiter
