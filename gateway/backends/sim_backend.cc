#include "gateway/backends/sim_backend.h"

#include <atomic>
#include <exception>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/quote.h"
#include "nlohmann/json.hpp"

namespace arbiter {

// Lets a call's handle reach the backend while it exists.
struct SimBackend::Link {
  std::mutex mu;  // std:: so ThreadSanitizer sees it.
  SimBackend* backend ABSL_GUARDED_BY(mu) = nullptr;
};

// One call: its answer, how much of it has gone out, and its observer. The
// fields below `stopping` are touched on the timer thread only, but for the
// first Plan, which Stream makes before the timer has the call.
class SimBackend::Call final : public CallHandle,
                               public std::enable_shared_from_this<Call> {
 public:
  explicit Call(std::shared_ptr<Link> link) : link_(std::move(link)) {}

  void Cancel() override {
    std::lock_guard lock(link_->mu);
    SimBackend* backend = link_->backend;
    if (backend == nullptr) return;  // Gone, and with it every call.
    backend->Stop(shared_from_this(),
                  absl::CancelledError(absl::StrCat(
                      "backend \"", backend->name_, "\": call cancelled")));
  }

  // Set by Stream, before the call is shared.
  SimBackend* backend = nullptr;
  std::shared_ptr<StreamObserver> observer;  // Released at the end.
  std::string text;
  bool streamed = false;
  bool cut_off = false;  // max_output_tokens ended the answer.
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;  // Of the whole answer.
  absl::Time start;
  absl::Time deadline;
  absl::Duration delay;  // From start to the end of the answer.

  // Set by Cancel and CancelAll: no more deltas; the end is on its way.
  std::atomic<bool> stopping{false};

  size_t sent = 0;  // Bytes of text that went out.
  int64_t tokens_sent = 0;
  // The step the timer will run: a chunk (`next`), the end, or the
  // deadline.
  enum class Pending { kNone, kChunk, kEnd, kDeadline };
  Pending pending = Pending::kNone;
  sim::SimChunk next;
  bool ended = false;

 private:
  const std::shared_ptr<Link> link_;
};

namespace {

// The first passthrough field, in the order the request has them; a
// simulator honours none. nullopt when there is none.
absl::StatusOr<std::optional<std::string>> FirstPassthroughField(
    absl::string_view passthrough_json) {
  if (passthrough_json.empty()) return std::nullopt;
  const nlohmann::ordered_json fields = nlohmann::ordered_json::parse(
      passthrough_json.begin(), passthrough_json.end(), nullptr,
      /*allow_exceptions=*/false);
  if (fields.is_discarded() || !fields.is_object()) {
    return absl::InvalidArgumentError(
        "passthrough_json: expected a JSON object");
  }
  if (fields.empty()) return std::nullopt;
  return fields.begin().key();
}

template <typename F>
void Guarded(F&& f) {
  // The observer is the gateway's; an exception must not reach the timer
  // thread.
  try {
    std::forward<F>(f)();
  } catch (...) {
  }
}

}  // namespace

SimBackend::SimBackend(std::string name,
                       std::shared_ptr<const sim::Simulator> simulator)
    : name_(std::move(name)),
      simulator_(std::move(simulator)),
      link_(std::make_shared<Link>()) {
  std::lock_guard lock(link_->mu);
  link_->backend = this;
}

SimBackend::~SimBackend() {
  // Handles cancelled from now on find no backend; what is pending runs at
  // once as the timer queue goes.
  std::lock_guard lock(link_->mu);
  link_->backend = nullptr;
}

std::shared_ptr<CallHandle> SimBackend::Stream(
    BackendRequest request, std::shared_ptr<StreamObserver> observer) {
  auto call = std::make_shared<Call>(link_);
  call->backend = this;
  call->observer = std::move(observer);
  absl::StatusOr<std::optional<std::string>> field =
      FirstPassthroughField(request.passthrough_json);
  if (!field.ok() || field->has_value()) {
    const absl::Status refused = absl::InvalidArgumentError(
        field.ok() ? absl::StrCat("backend \"", name_,
                                  "\" is a simulator and cannot honour ",
                                  QuoteInput(**field))
                   : absl::StrCat("backend \"", name_,
                                  "\": ", field.status().message()));
    {
      std::lock_guard lock(mu_);
      live_.emplace(call.get(), call);
    }
    Stop(call, refused);
    return call;
  }
  std::vector<sim::SimMessage> messages;
  messages.reserve(request.messages.size());
  for (const BackendMessage& message : request.messages) {
    messages.push_back({message.role, message.content});
  }
  sim::SimAnswer answer = simulator_->Answer(
      request.model, messages, request.max_output_tokens, request.seed);
  call->text = std::move(answer.text);
  call->streamed = request.stream;
  call->input_tokens = CountPromptTokens(request.messages);
  call->output_tokens = answer.output_tokens;
  call->cut_off = request.max_output_tokens > 0 &&
                  answer.output_tokens >= request.max_output_tokens;
  call->delay = answer.delay;
  call->start = absl::Now();
  call->deadline = call->start + request.timeout;
  {
    std::lock_guard lock(mu_);
    live_.emplace(call.get(), call);
  }
  // The first step is planned from here; the others on the timer thread.
  Plan(call);
  return call;
}

void SimBackend::Step(const std::shared_ptr<Call>& call) {
  Call& c = *call;
  if (c.ended || c.stopping.load()) return;
  switch (std::exchange(c.pending, Call::Pending::kNone)) {
    case Call::Pending::kDeadline:
      return End(c, absl::DeadlineExceededError(absl::StrFormat(
                        "backend \"%s\": no answer within %s", name_,
                        absl::FormatDuration(c.deadline - c.start))));
    case Call::Pending::kEnd:
      return End(c, absl::OkStatus());
    case Call::Pending::kChunk: {
      BackendDelta delta;
      delta.text = c.text.substr(c.sent, c.next.end - c.sent);
      c.sent = c.next.end;
      c.tokens_sent += c.next.tokens;
      Guarded([&] { c.observer->OnDelta(std::move(delta)); });
      if (!c.streamed) return End(c, absl::OkStatus());
      break;
    }
    case Call::Pending::kNone:
      break;
  }
  Plan(call);
}

void SimBackend::Plan(const std::shared_ptr<Call>& call) {
  Call& c = *call;
  // A unary answer is one chunk, at the end.
  absl::Time at;
  if (!c.streamed) {
    c.next = {c.text.size(), c.output_tokens, c.delay};
    c.pending = Call::Pending::kChunk;
    at = c.start + c.delay;
  } else if (c.sent < c.text.size()) {
    c.next = simulator_->NextChunk(c.text, c.sent, c.tokens_sent);
    c.pending = Call::Pending::kChunk;
    at = c.start + c.next.at;
  } else {
    // The last token's time, as a unary answer would have taken.
    c.pending = Call::Pending::kEnd;
    at = c.start + c.delay;
  }
  if (at > c.deadline) {
    c.pending = Call::Pending::kDeadline;
    at = c.deadline;
  }
  timers_.RunAt(at, [call]() mutable {
    SimBackend* backend = call->backend;
    backend->Step(call);
  });
}

void SimBackend::End(Call& call, absl::Status status) {
  if (call.ended) return;
  call.ended = true;
  BackendResponse usage;
  usage.input_tokens = call.input_tokens;
  usage.output_tokens = status.ok() ? call.output_tokens : call.tokens_sent;
  usage.usage_reported = status.ok();
  if (status.ok()) usage.finish_reason = call.cut_off ? "length" : "stop";
  std::shared_ptr<StreamObserver> observer = std::move(call.observer);
  std::shared_ptr<Call> self;  // Keeps the call until OnEnd has run.
  {
    std::lock_guard lock(mu_);
    auto it = live_.find(&call);
    if (it != live_.end()) {
      self = std::move(it->second);
      live_.erase(it);
    }
  }
  if (observer != nullptr) {
    Guarded([&] { observer->OnEnd(std::move(status), std::move(usage)); });
  }
}

void SimBackend::Stop(std::shared_ptr<Call> call, absl::Status why) {
  call->stopping = true;
  timers_.RunAfter(absl::ZeroDuration(),
                   [call = std::move(call), why = std::move(why)]() mutable {
                     call->backend->End(*call, std::move(why));
                   });
}

void SimBackend::CancelAll(const absl::Status& why) {
  absl::flat_hash_map<Call*, std::shared_ptr<Call>> cancelled;
  {
    std::lock_guard lock(mu_);
    cancelled = live_;
  }
  for (auto& [raw, call] : cancelled) Stop(std::move(call), why);
}

}  // namespace arbiter
