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
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "arbiter/v1/config.pb.h"
#include "gateway/backends/backend.h"

typedef void CURLM;

namespace arbiter {

// An OpenAI-compatible /v1/chat/completions server (vLLM, TGI, llama.cpp,
// Ollama, OpenAI). Requests run on one event thread of libcurl's multi
// interface, so a thousand slow requests cost a thousand buffers, not a
// thousand threads. Usage comes from the response's "usage" field, or is
// counted locally when the server sends none.
//
// Nothing the server sends can end the process: the answer is read through
// common/json, a wrong or missing field is UNAVAILABLE naming it, an answer
// over max_response_bytes is cut off, and a last catch-all per transfer
// turns any exception into INTERNAL for that request alone. Messages name
// the backend, never its URL nor what it sent; those go to the log.
//
// At most max_connections requests are on the wire; up to
// max_queued_requests more wait for a connection, in order, and further
// ones fail at once with RESOURCE_EXHAUSTED. Every request is answered by
// its timeout, counted from Complete, whether it waited or not.
class OpenAIBackend final : public Backend {
 public:
  // config has its defaults applied (ApplyOpenAIBackendDefaults). api_key
  // may be empty (no Authorization header). on_error, if set, is
  // told the reason of every failed request.
  OpenAIBackend(std::string name, const v1::OpenAIBackend& config,
                std::string api_key, BackendErrorObserver on_error = nullptr);
  ~OpenAIBackend() override;

  OpenAIBackend(const OpenAIBackend&) = delete;
  OpenAIBackend& operator=(const OpenAIBackend&) = delete;

  std::shared_ptr<CallHandle> Stream(
      BackendRequest request,
      std::shared_ptr<StreamObserver> observer) override;
  void CancelAll(const absl::Status& why) override;
  absl::string_view name() const override { return name_; }

  struct Transfer;

 private:
  // The whole answer at once (the unary path, until streaming lands).
  void CompleteWhole(BackendRequest request, BackendCallback done);
  // A request refused before it reached the loop, answered on the loop.
  using Refusal = std::pair<BackendCallback, absl::Status>;

  void Loop();
  // Moves what Complete and CancelAll left into the loop; false to stop.
  bool TakeIncoming();
  // Fails what is past its deadline; sets next_deadline_ to the earliest
  // deadline left.
  void ExpireOverdue(absl::Time now);
  // Puts waiting requests on the wire while connections are free.
  void StartWaiting();
  // After a long queue has drained, gives freed memory back to the system.
  void ReleaseMemoryIfDrained(absl::Time now);
  // False if curl could not take it.
  bool Start(Transfer& transfer);
  // Answers the transfers curl has finished; false if none.
  bool CollectFinished();
  // What a finished transfer produced; *reason says why it failed.
  absl::StatusOr<BackendResponse> Outcome(Transfer& transfer, int curl_code,
                                          BackendError* reason);
  void FailAll(const absl::Status& why);
  // Counts why (if given) and answers; the callback runs at most once.
  void Fail(Transfer& transfer, std::optional<BackendError> reason,
            absl::Status status);
  void Answer(Transfer& transfer, absl::StatusOr<BackendResponse> result);
  void CountError(BackendError reason);
  // One line on stderr, at most a few per second per backend.
  void Log(absl::string_view line);

  // Constant after construction.
  const std::string name_;
  const std::string url_;
  const std::string api_key_;
  const int max_connections_;
  const int max_queued_;
  const int64_t max_response_bytes_;
  const BackendErrorObserver on_error_;
  CURLM* const multi_;

  // Accepted and not yet answered: bounds what Complete takes.
  std::atomic<int> outstanding_{0};

  std::mutex mu_;  // std:: so ThreadSanitizer sees it.
  std::vector<std::unique_ptr<Transfer>> incoming_ ABSL_GUARDED_BY(mu_);
  std::vector<Refusal> refused_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Set by CancelAll; the loop fails everything it holds and clears it.
  std::optional<absl::Status> cancel_ ABSL_GUARDED_BY(mu_);

  // Touched by the event thread only. waiting_ is in arrival order.
  std::deque<std::unique_ptr<Transfer>> waiting_;
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

  std::thread thread_;
};

}  // namespace arbiter
