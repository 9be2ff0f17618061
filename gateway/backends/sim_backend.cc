#include "gateway/backends/sim_backend.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace arbiter {

SimBackend::SimBackend(std::string name,
                       std::shared_ptr<const sim::Simulator> simulator)
    : name_(std::move(name)), simulator_(std::move(simulator)) {}

std::shared_ptr<CallHandle> SimBackend::Stream(
    BackendRequest request, std::shared_ptr<StreamObserver> observer) {
  CompleteWhole(std::move(request),
                [observer](absl::StatusOr<BackendResponse> result) {
                  if (!result.ok()) {
                    observer->OnEnd(result.status(), {});
                    return;
                  }
                  observer->OnDelta({std::move(result->text), ""});
                  observer->OnEnd(absl::OkStatus(), *std::move(result));
                });
  return std::make_shared<UncancellableCall>();
}

void SimBackend::CompleteWhole(BackendRequest request, BackendCallback done) {
  std::vector<sim::SimMessage> messages;
  messages.reserve(request.messages.size());
  for (const BackendMessage& message : request.messages) {
    messages.push_back({message.role, message.content});
  }
  sim::SimAnswer answer =
      simulator_->Answer(request.model, messages, request.max_output_tokens);
  uint64_t id;
  {
    std::lock_guard lock(mu_);
    id = next_id_++;
    pending_.emplace(id, std::move(done));
  }
  if (answer.delay > request.timeout) {
    timers_.RunAfter(request.timeout, [this, id, timeout = request.timeout] {
      Answer(id, absl::DeadlineExceededError(
                     absl::StrFormat("backend \"%s\": no answer within %s",
                                     name_, absl::FormatDuration(timeout))));
    });
    return;
  }
  BackendResponse response;
  response.text = std::move(answer.text);
  response.input_tokens = CountPromptTokens(request.messages);
  response.output_tokens = answer.output_tokens;
  response.usage_reported = true;
  timers_.RunAfter(answer.delay,
                   [this, id, response = std::move(response)]() mutable {
                     Answer(id, std::move(response));
                   });
}

void SimBackend::Answer(uint64_t id, absl::StatusOr<BackendResponse> result) {
  BackendCallback done;
  {
    std::lock_guard lock(mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return;  // Cancelled.
    done = std::move(it->second);
    pending_.erase(it);
  }
  std::move(done)(std::move(result));
}

void SimBackend::CancelAll(const absl::Status& why) {
  absl::flat_hash_map<uint64_t, BackendCallback> cancelled;
  {
    std::lock_guard lock(mu_);
    cancelled.swap(pending_);
  }
  for (auto& [id, done] : cancelled) {
    timers_.RunAfter(
        absl::ZeroDuration(),
        [why, done = std::move(done)]() mutable { std::move(done)(why); });
  }
}

}  // namespace arbiter
