#include "gateway/backends/sim_backend.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace arbiter {

SimBackend::SimBackend(std::string name,
                       std::shared_ptr<const sim::Simulator> simulator)
    : name_(std::move(name)), simulator_(std::move(simulator)) {}

void SimBackend::Complete(BackendRequest request, BackendCallback done) {
  std::vector<sim::SimMessage> messages;
  messages.reserve(request.messages.size());
  for (const BackendMessage& message : request.messages) {
    messages.push_back({message.role, message.content});
  }
  sim::SimAnswer answer =
      simulator_->Answer(request.model, messages, request.max_output_tokens);
  if (answer.delay > request.timeout) {
    timers_.RunAfter(request.timeout, [this, timeout = request.timeout,
                                       done = std::move(done)]() mutable {
      std::move(done)(absl::DeadlineExceededError(
          absl::StrFormat("backend \"%s\": no answer within %s", name_,
                          absl::FormatDuration(timeout))));
    });
    return;
  }
  BackendResponse response;
  response.text = std::move(answer.text);
  response.input_tokens = CountPromptTokens(request.messages);
  response.output_tokens = answer.output_tokens;
  response.usage_reported = true;
  timers_.RunAfter(answer.delay, [response = std::move(response),
                                  done = std::move(done)]() mutable {
    std::move(done)(std::move(response));
  });
}

}  // namespace arbiter
