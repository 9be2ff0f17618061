#include "gateway/backends/openai_backend.h"

#include <curl/curl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/json.h"
#include "common/json_writer.h"
#include "common/quote.h"
#include "common/sse.h"
#include "common/utf8.h"
#include "gateway/backends/openai_answer.h"
#include "nlohmann/json.hpp"
#include "retrieval/tokenizer.h"

namespace arbiter {

// Lets a call's handle reach the backend while it exists.
struct OpenAIBackend::Link {
  std::mutex mu;  // std:: so ThreadSanitizer sees it.
  OpenAIBackend* backend ABSL_GUARDED_BY(mu) = nullptr;
};

// The handle Stream returns; its transfer holds it too, to see the cancel.
class OpenAIBackend::Call final : public CallHandle {
 public:
  explicit Call(std::shared_ptr<Link> link) : link_(std::move(link)) {}

  void Cancel() override {
    if (cancelled_.exchange(true)) return;
    std::lock_guard lock(link_->mu);
    if (link_->backend != nullptr) link_->backend->WakeForCancel();
  }
  [[nodiscard]] bool cancelled() const { return cancelled_.load(); }

 private:
  const std::shared_ptr<Link> link_;
  std::atomic<bool> cancelled_{false};
};

struct OpenAIBackend::Transfer {
  // What the caller asked, kept while the request lives.
  std::shared_ptr<StreamObserver> observer;
  std::shared_ptr<Call> call;
  bool stream = false;
  absl::Duration timeout;
  int64_t prompt_tokens = 0;  // Counted locally, for when usage is missing.
  bool answered = false;
  absl::Time accepted;  // When Stream took it; the timeout counts from here.
  absl::Time deadline;
  // While it waits for a connection: the earlier of its deadline and the
  // end of its allowed queue wait.
  absl::Time wait_deadline;
  absl::Time started = absl::InfiniteFuture();  // When it got a connection.
  OpenAIBackend* backend = nullptr;

  // Set when the transfer starts. The body must outlive the transfer: curl
  // does not copy it. The handle goes back to the backend's idle ones.
  CURL* easy = nullptr;
  std::string body;

  // What the server sent. An answer read as SSE is parsed as it arrives;
  // any other (unary, or an error) is kept whole in `response`.
  enum class Mode { kUnknown, kEvents, kWhole };
  Mode mode = Mode::kUnknown;
  std::string response;
  std::optional<sse::Parser> events;
  int64_t received_bytes = 0;
  int64_t max_response_bytes = 0;
  bool too_large = false;     // The answer hit max_response_bytes.
  bool write_failed = false;  // Storing the answer threw.
  bool began = false;         // HTTP 200 came: the backend has the prompt.
  // Why the stream is bad (malformed, or an error event), when it is.
  struct Failure {
    BackendError reason;
    absl::Status status;
    std::string logged;  // What the log says, with what the server sent.
  };
  std::optional<Failure> failure;
  // Of the stream so far.
  bool done = false;  // `data: [DONE]` came.
  retrieval::TokenCounter output;
  std::string finish_reason;
  std::string system_fingerprint;
  std::optional<int64_t> reported_input;
  std::optional<int64_t> reported_output;
  char error[CURL_ERROR_SIZE] = "";

  ~Transfer() {
    if (easy != nullptr) backend->ReturnEasy(easy);
  }
};

namespace {

// curl's own timeout comes this long after the loop's deadline.
constexpr absl::Duration kCurlTimeoutSlack = absl::Milliseconds(10);
// A queue that held this many requests returns its memory once drained.
constexpr size_t kTrimAfterWaiting = 256;
constexpr absl::Duration kMinTrimInterval = absl::Seconds(10);
constexpr long kStreamBufferBytes = 4 << 10;
// Ready sockets handled per wake-up; more wait for the next one.
constexpr int kMaxEventsPerWait = 256;
// Log lines per backend per second; the rest are counted and summed up.
constexpr int kLogLinesPerSecond = 10;

// One SSE event larger than this fails the stream (a chunk is a few
// tokens; even a large tool call's arguments come in many).
constexpr int64_t kMaxEventBytes = 1 << 20;

// The request fields arbiter sets itself: passthrough_json must not.
constexpr absl::string_view kSetByArbiter[] = {
    "messages", "max_tokens",     "model",       "seed", "stop",
    "stream",   "stream_options", "temperature", "top_p"};

// INVALID_ARGUMENT naming the field of passthrough_json that is wrong.
// Members come in sorted order, as nlohmann::json's std::map wrote them
// when the body was built as a DOM.
absl::StatusOr<std::string> RequestBody(const BackendRequest& request) {
  nlohmann::json extra = nlohmann::json::object();
  if (!request.passthrough_json.empty()) {
    auto parsed = json::Parse(request.passthrough_json);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("passthrough_json: ", parsed.status().message()));
    }
    if (!parsed->is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat("passthrough_json: expected an object, got ",
                       json::TypeName(*parsed)));
    }
    for (const auto& [key, value] : parsed->items()) {
      if (std::find(std::begin(kSetByArbiter), std::end(kSetByArbiter), key) !=
          std::end(kSetByArbiter)) {
        return absl::InvalidArgumentError(
            absl::StrCat("passthrough_json: ", QuoteInput(key),
                         " is set by arbiter and cannot be passed through"));
      }
    }
    extra = *std::move(parsed);
  }
  size_t text_bytes = request.passthrough_json.size();
  for (const BackendMessage& message : request.messages) {
    text_bytes += message.content.size() + message.tool_calls_json.size() +
                  message.tool_call_id.size() + message.name.size() + 64;
  }
  std::string out;
  out.reserve(256 + text_bytes);
  json::Writer w(&out);
  w.BeginObject();
  // Passed-through members sort among arbiter's own (never equal to one).
  auto passed = extra.items().begin();
  auto passed_before = [&](absl::string_view name) {
    for (; passed != extra.items().end() && passed.key() < name; ++passed) {
      w.Key(passed.key()).Raw(json::Dump(passed.value()));
    }
  };
  if (request.max_output_tokens > 0) {
    passed_before("max_tokens");
    w.Key("max_tokens").Int(request.max_output_tokens);
  }
  passed_before("messages");
  w.Key("messages").BeginArray();
  for (const BackendMessage& message : request.messages) {
    w.BeginObject();
    std::string calls_json;
    if (!message.tool_calls_json.empty()) {
      auto calls = json::Parse(message.tool_calls_json);
      if (!calls.ok() || !calls->is_array()) {
        return absl::InvalidArgumentError(
            "messages: tool_calls must be a JSON array");
      }
      calls_json = json::Dump(*calls);
    }
    // OpenAI's own form of an assistant turn that only calls tools.
    if (!calls_json.empty() && message.content.empty()) {
      w.Key("content").Null();
    } else {
      w.Key("content").String(message.content);
    }
    if (!message.name.empty()) w.Key("name").String(message.name);
    w.Key("role").String(message.role);
    if (!message.tool_call_id.empty()) {
      w.Key("tool_call_id").String(message.tool_call_id);
    }
    if (!calls_json.empty()) w.Key("tool_calls").Raw(calls_json);
    w.EndObject();
  }
  w.EndArray();
  passed_before("model");
  w.Key("model").String(request.model);
  if (request.seed.has_value()) {
    passed_before("seed");
    w.Key("seed").Int(*request.seed);
  }
  if (!request.stop.empty()) {
    passed_before("stop");
    w.Key("stop").BeginArray();
    for (const std::string& stop : request.stop) w.String(stop);
    w.EndArray();
  }
  passed_before("stream");
  w.Key("stream").Bool(request.stream);
  if (request.stream) {
    passed_before("stream_options");
    w.Key("stream_options").BeginObject().Key("include_usage").Bool(true);
    w.EndObject();
  }
  if (request.temperature.has_value()) {
    passed_before("temperature");
    w.Key("temperature").Double(*request.temperature);
  }
  if (request.top_p.has_value()) {
    passed_before("top_p");
    w.Key("top_p").Double(*request.top_p);
  }
  for (; passed != extra.items().end(); ++passed) {
    w.Key(passed.key()).Raw(json::Dump(passed.value()));
  }
  w.EndObject();
  return out;
}

// "connection refused", from the socket's errno when curl kept it.
std::string ConnectFailure(CURL* easy) {
  long os_errno = 0;
  curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &os_errno);
  if (os_errno == 0) return "connection failed";
  return absl::AsciiStrToLower(std::strerror(static_cast<int>(os_errno)));
}

BackendError HttpErrorClass(long status) {
  if (status >= 300 && status < 400) return BackendError::kHttp3xx;
  if (status == 429) return BackendError::kRateLimited;
  if (status >= 400 && status < 500) return BackendError::kHttp4xx;
  if (status >= 500 && status < 600) return BackendError::kHttp5xx;
  return BackendError::kHttpOther;
}

long Milliseconds(absl::Duration d) {
  return static_cast<long>(
      std::clamp<int64_t>(absl::ToInt64Milliseconds(d), 1, 1LL << 31));
}

// The same for every request of a backend.
curl_slist* RequestHeaders(const std::string& api_key) {
  curl_slist* headers =
      curl_slist_append(nullptr, "Content-Type: application/json");
  // Without this curl waits up to a second for "100 Continue" on big bodies.
  headers = curl_slist_append(headers, "Expect:");
  if (!api_key.empty()) {
    headers = curl_slist_append(
        headers, absl::StrCat("Authorization: Bearer ", api_key).c_str());
  }
  return headers;
}

// Shard `index` of `of`'s part of `total`: the first total % of shards take
// one more.
int ShareOf(int total, EventThreadShare share) {
  const int of = std::max(1, share.of);
  return total / of + (share.index < total % of ? 1 : 0);
}

}  // namespace

OpenAIBackend::OpenAIBackend(std::string name, const v1::OpenAIBackend& config,
                             std::string api_key, BackendErrorObserver on_error,
                             EventThreadShare share)
    : name_(std::move(name)),
      url_(absl::StrCat(absl::StripSuffix(config.base_url(), "/"),
                        "/chat/completions")),
      api_key_(std::move(api_key)),
      max_connections_(std::max(1, ShareOf(config.max_connections(), share))),
      max_queued_(std::max(0, ShareOf(config.max_queued_requests(), share))),
      total_connections_(std::max(1, config.max_connections())),
      total_queued_(std::max(0, config.max_queued_requests())),
      max_queue_wait_(config.has_max_queue_wait_ms()
                          ? absl::Milliseconds(config.max_queue_wait_ms())
                          : absl::InfiniteDuration()),
      max_response_bytes_(std::max<int64_t>(1, config.max_response_bytes())),
      on_error_(std::move(on_error)),
      link_(std::make_shared<Link>()),
      epoll_fd_(epoll_create1(EPOLL_CLOEXEC)),
      wake_fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      multi_([] {
        static const bool initialized = [] {
          curl_global_init(CURL_GLOBAL_DEFAULT);
          return true;
        }();
        (void)initialized;
        return curl_multi_init();
      }()),
      headers_(RequestHeaders(api_key_)) {
  // The loop never puts more than max_connections_ on the wire; curl's own
  // limit is a second guard, and idle connections stay open for reuse.
  curl_multi_setopt(multi_, CURLMOPT_MAX_HOST_CONNECTIONS,
                    static_cast<long>(max_connections_));
  curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS,
                    static_cast<long>(max_connections_));
  // curl tells which sockets to watch; the loop watches them with epoll and
  // runs only the transfers that are ready.
  curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &OpenAIBackend::OnSocket);
  curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
  epoll_event wake{};
  wake.events = EPOLLIN;
  wake.data.fd = wake_fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &wake);
  {
    std::lock_guard lock(link_->mu);
    link_->backend = this;
  }
  thread_ = std::thread([this] { Loop(); });
}

OpenAIBackend::~OpenAIBackend() {
  {
    // A handle cancelled from now on finds no backend: the loop ends its
    // call anyway, as it ends every call it holds.
    std::lock_guard lock(link_->mu);
    link_->backend = nullptr;
  }
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) {
    Wake();
    thread_.join();  // The loop fails what it holds as it stops.
  } else {
    // Hosted, and the host is gone: the loop's last turn is taken here.
    loop_thread_.store(std::this_thread::get_id());
    (void)TakeIncoming();
    FailAll(ShuttingDown());
  }
  if (trimmer_.joinable()) trimmer_.join();
  for (CURL* easy : idle_easy_) curl_easy_cleanup(easy);
  curl_multi_cleanup(multi_);  // May still tell OnSocket of sockets.
  curl_slist_free_all(headers_);
  close(wake_fd_);
  close(epoll_fd_);
}

std::shared_ptr<CallHandle> OpenAIBackend::Stream(
    BackendRequest request, std::shared_ptr<StreamObserver> observer) {
  auto call = std::make_shared<Call>(link_);
  auto refuse = [&](absl::Status status, std::optional<BackendError> reason) {
    {
      std::lock_guard lock(mu_);
      refused_.push_back({std::move(observer), std::move(status), reason});
    }
    Notify();
    return call;
  };
  // Built here, off the event thread, which serves every request.
  absl::StatusOr<std::string> body = RequestBody(request);
  if (!body.ok()) {
    return refuse(absl::InvalidArgumentError(absl::StrCat(
                      "backend \"", name_, "\": ", body.status().message())),
                  std::nullopt);
  }
  // Refused at once rather than queued without end: a queued request costs
  // memory and only waits to time out.
  if (outstanding_.fetch_add(1) >= max_connections_ + max_queued_) {
    outstanding_.fetch_sub(1);
    return refuse(
        absl::ResourceExhaustedError(absl::StrFormat(
            "backend \"%s\": too many requests waiting for a connection (all "
            "%d in use, %d waiting; see max_queued_requests)",
            name_, total_connections_, total_queued_)),
        BackendError::kQueueFull);
  }
  auto transfer = std::make_unique<Transfer>();
  transfer->observer = std::move(observer);
  transfer->call = call;
  transfer->stream = request.stream;
  transfer->timeout = request.timeout;
  transfer->prompt_tokens = CountPromptTokens(request.messages);
  transfer->accepted = absl::Now();
  transfer->deadline = transfer->accepted + request.timeout;
  transfer->wait_deadline =
      std::min(transfer->deadline, transfer->accepted + max_queue_wait_);
  transfer->backend = this;
  transfer->body = *std::move(body);
  transfer->max_response_bytes = max_response_bytes_;
  {
    std::lock_guard lock(mu_);
    incoming_.push_back(std::move(transfer));
  }
  Notify();
  return call;
}

int OpenAIBackend::room() const {
  return max_connections_ + max_queued_ -
         outstanding_.load(std::memory_order_relaxed);
}

void OpenAIBackend::WakeForCancel() {
  {
    std::lock_guard lock(mu_);
    cancel_requested_ = true;
  }
  Wake();
}

void OpenAIBackend::CancelAll(const absl::Status& why) {
  {
    std::lock_guard lock(mu_);
    cancel_ = why;
  }
  Wake();
}

bool OpenAIBackend::runs_on_this_thread() const {
  return loop_thread_.load(std::memory_order_relaxed) ==
         std::this_thread::get_id();
}

void OpenAIBackend::Notify() {
  if (runs_on_this_thread() && request_turn_ != nullptr) {
    if (!std::exchange(turn_requested_, true)) request_turn_();
    return;
  }
  Wake();
}

void OpenAIBackend::Join(absl::AnyInvocable<void()> request_turn) {
  {
    std::lock_guard lock(mu_);
    hosted_ = true;
  }
  Wake();
  thread_.join();  // It hands over between two turns, holding nothing.
  loop_thread_.store(std::thread::id());
  request_turn_ = std::move(request_turn);
}

void OpenAIBackend::Leave() {
  {
    std::lock_guard lock(mu_);
    hosted_ = false;
  }
  request_turn_ = nullptr;
  turn_requested_ = false;
  loop_thread_.store(std::thread::id());
  thread_ = std::thread([this] { Loop(); });
}

absl::Duration OpenAIBackend::Turn() {
  loop_thread_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  turn_requested_ = false;
  // Bounded, so that the host's other work runs in between; each round
  // ends by finding no socket ready, so ready_fd is quiet when Turn
  // returns having finished.
  constexpr int kMaxRounds = 16;
  for (int round = 0; round < kMaxRounds; ++round) {
    if (TakeIncoming() == Driver::kNone) return absl::InfiniteDuration();
    const bool again = RunDue();
    const int ready = WaitAndAct(0);
    if (!again && ready == 0) return UntilDue();
  }
  return absl::ZeroDuration();
}

void OpenAIBackend::Loop() {
  loop_thread_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  for (;;) {
    const Driver driver = TakeIncoming();
    if (driver == Driver::kHost) return;  // Join takes over from here.
    if (driver == Driver::kNone) break;
    // A finished transfer frees a connection that a waiting one can take at
    // once: go round again.
    if (RunDue()) continue;
    // Wakes at least every second, and for curl's next timer or the next
    // deadline: curl's timers do not know about requests still waiting for
    // a connection.
    const absl::Duration until = UntilDue();
    WaitAndAct(until >= absl::Seconds(1)
                   ? 1000
                   : static_cast<int>(absl::ToInt64Milliseconds(
                         absl::Ceil(until, absl::Milliseconds(1)))));
  }
  // Nothing accepted is dropped silently: what is left fails clearly.
  FailAll(ShuttingDown());
}

absl::Status OpenAIBackend::ShuttingDown() const {
  return absl::UnavailableError(
      absl::StrCat("backend \"", name_, "\": gateway shutting down"));
}

bool OpenAIBackend::RunDue() {
  const absl::Time now = absl::Now();
  if (now >= next_deadline_) ExpireOverdue(now);
  StartWaiting();
  ReleaseMemoryIfDrained(now);
  if (CurlTimeoutMs() == 0) {
    int running = 0;
    curl_multi_socket_action(multi_, CURL_SOCKET_TIMEOUT, 0, &running);
  }
  return CollectFinished();
}

absl::Duration OpenAIBackend::UntilDue() {
  absl::Duration until =
      next_deadline_ == absl::InfiniteFuture()
          ? absl::InfiniteDuration()
          : std::max(absl::ZeroDuration(), next_deadline_ - absl::Now());
  if (const long curl_ms = CurlTimeoutMs(); curl_ms >= 0) {
    until = std::min(until, absl::Milliseconds(curl_ms));
  }
  return until;
}

int OpenAIBackend::WaitAndAct(int wait_ms) {
  epoll_event events[kMaxEventsPerWait];
  const int ready = epoll_wait(epoll_fd_, events, kMaxEventsPerWait, wait_ms);
  for (int i = 0; i < ready; ++i) {
    const int fd = events[i].data.fd;
    if (fd == wake_fd_) {
      uint64_t count;
      (void)!read(wake_fd_, &count, sizeof(count));
      continue;
    }
    int mask = 0;
    if (events[i].events & EPOLLIN) mask |= CURL_CSELECT_IN;
    if (events[i].events & EPOLLOUT) mask |= CURL_CSELECT_OUT;
    if (events[i].events & (EPOLLERR | EPOLLHUP)) mask |= CURL_CSELECT_ERR;
    // Only this socket's transfer runs: the loop's cost per event does not
    // grow with the number of open streams.
    int running = 0;
    curl_multi_socket_action(multi_, fd, mask, &running);
  }
  return std::max(ready, 0);
}

long OpenAIBackend::CurlTimeoutMs() {
  // Asked each time rather than told by a timer callback: curl calls that
  // only when its earliest timer changes, and one fired a little early
  // changes nothing, which would lose it.
  long timeout_ms = -1;
  curl_multi_timeout(multi_, &timeout_ms);
  return timeout_ms;
}

void OpenAIBackend::Wake() {
  const uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
}

int OpenAIBackend::OnSocket(CURL* /*easy*/, curl_socket_t socket, int what,
                            void* user, void* /*socket_data*/) {
  auto* backend = static_cast<OpenAIBackend*>(user);
  if (what == CURL_POLL_REMOVE) {
    // Fails harmlessly when curl has closed the socket already.
    epoll_ctl(backend->epoll_fd_, EPOLL_CTL_DEL, socket, nullptr);
    return 0;
  }
  epoll_event event{};
  event.data.fd = socket;
  if (what & CURL_POLL_IN) event.events |= EPOLLIN;
  if (what & CURL_POLL_OUT) event.events |= EPOLLOUT;
  if (epoll_ctl(backend->epoll_fd_, EPOLL_CTL_MOD, socket, &event) != 0 &&
      errno == ENOENT) {
    epoll_ctl(backend->epoll_fd_, EPOLL_CTL_ADD, socket, &event);
  }
  return 0;
}

void OpenAIBackend::ReleaseMemoryIfDrained(absl::Time now) {
  most_waiting_ = std::max(most_waiting_, waiting_.size());
  if (!waiting_.empty() || most_waiting_ < kTrimAfterWaiting ||
      now - last_trim_ < kMinTrimInterval || trimming_.load()) {
    return;
  }
  most_waiting_ = 0;
  last_trim_ = now;
#ifdef __GLIBC__
  // Requests that waited were allocated on gRPC's threads and freed here;
  // glibc keeps such memory in its arenas unless asked to return it, so a
  // burst of overload would hold its peak RSS for good. Trimming a
  // fragmented heap takes up to a few hundred milliseconds: not on the loop.
  if (trimmer_.joinable()) trimmer_.join();
  trimming_ = true;
  trimmer_ = std::thread([this] {
    malloc_trim(0);
    trimming_ = false;
  });
#endif
}

OpenAIBackend::Driver OpenAIBackend::TakeIncoming() {
  std::vector<std::unique_ptr<Transfer>> added;
  std::vector<Refusal> refused;
  std::optional<absl::Status> cancel;
  bool cancel_requested;
  Driver driver;
  {
    std::lock_guard lock(mu_);
    added.swap(incoming_);
    refused.swap(refused_);
    cancel.swap(cancel_);
    cancel_requested = std::exchange(cancel_requested_, false);
    driver = stopping_ ? Driver::kNone
             : hosted_ ? Driver::kHost
                       : Driver::kOwnThread;
  }
  for (Refusal& refusal : refused) {
    if (refusal.reason.has_value()) {
      CountError(*refusal.reason);
      MarkBackendError(refusal.status, *refusal.reason);
    }
    End(std::move(refusal.observer), std::move(refusal.status), {});
  }
  for (auto& transfer : added) {
    next_deadline_ = std::min(next_deadline_, transfer->wait_deadline);
    waiting_.push_back(std::move(transfer));
  }
  if (cancel.has_value()) FailAll(*cancel);
  if (cancel_requested) EndCancelled();
  return driver;
}

void OpenAIBackend::EndCancelled() {
  const absl::Status cancelled = absl::CancelledError(
      absl::StrCat("backend \"", name_, "\": call cancelled"));
  // Off the wire: removing the handle mid-answer closes its connection.
  std::erase_if(active_, [&](std::unique_ptr<Transfer>& transfer) {
    if (!transfer->call->cancelled()) return false;
    curl_multi_remove_handle(multi_, transfer->easy);
    Fail(*transfer, std::nullopt, cancelled);
    return true;
  });
  std::erase_if(waiting_, [&](std::unique_ptr<Transfer>& transfer) {
    if (!transfer->call->cancelled()) return false;
    Fail(*transfer, std::nullopt, cancelled);
    return true;
  });
}

void OpenAIBackend::ExpireOverdue(absl::Time now) {
  next_deadline_ = absl::InfiniteFuture();
  auto timed_out = [&](const Transfer& transfer, absl::string_view state) {
    return absl::DeadlineExceededError(
        absl::StrFormat("backend \"%s\": no answer within %s%s", name_,
                        absl::FormatDuration(transfer.timeout), state));
  };
  std::erase_if(active_, [&](std::unique_ptr<Transfer>& transfer) {
    if (transfer->deadline > now) {
      next_deadline_ = std::min(next_deadline_, transfer->deadline);
      return false;
    }
    curl_multi_remove_handle(multi_, transfer->easy);
    const absl::Duration waited = transfer->started - transfer->accepted;
    Log(absl::StrCat("backend \"", name_, "\" (", url_, "): no answer within ",
                     absl::FormatDuration(transfer->timeout)));
    // A backend left less than half the timeout by the gateway's own queue
    // was not slow: such a timeout says nothing of its health.
    const bool queue_ate_it = waited * 2 > transfer->timeout;
    Fail(*transfer,
         queue_ate_it ? BackendError::kQueueFull : BackendError::kTimeout,
         timed_out(*transfer,
                   waited >= absl::Milliseconds(1)
                       ? absl::StrCat(" (",
                                      absl::FormatDuration(absl::Trunc(
                                          waited, absl::Milliseconds(100))),
                                      " of it before a connection was free)")
                       : ""));
    return true;
  });
  std::erase_if(waiting_, [&](std::unique_ptr<Transfer>& transfer) {
    if (transfer->wait_deadline > now) {
      next_deadline_ = std::min(next_deadline_, transfer->wait_deadline);
      return false;
    }
    if (transfer->deadline > now) {
      // Shed: waiting longer would only bring it nearer its timeout.
      Fail(*transfer, BackendError::kQueueFull,
           absl::ResourceExhaustedError(absl::StrFormat(
               "backend \"%s\": no connection free within %s (all %d in "
               "use; see max_queue_wait_ms)",
               name_, absl::FormatDuration(max_queue_wait_),
               total_connections_)));
      return true;
    }
    Log(absl::StrCat("backend \"", name_, "\": no connection free within ",
                     absl::FormatDuration(transfer->timeout)));
    // It never reached the backend: the gateway's own queue was too long,
    // which says nothing of the backend's health.
    Fail(*transfer, BackendError::kQueueFull,
         timed_out(*transfer,
                   absl::StrFormat(": still waiting for a connection (all %d "
                                   "in use)",
                                   total_connections_)));
    return true;
  });
}

void OpenAIBackend::StartWaiting() {
  while (!waiting_.empty() &&
         active_.size() < static_cast<size_t>(max_connections_)) {
    std::unique_ptr<Transfer> transfer = std::move(waiting_.front());
    waiting_.pop_front();
    // Cancelled since the loop last looked: it never goes on the wire.
    if (transfer->call->cancelled()) {
      Fail(*transfer, std::nullopt,
           absl::CancelledError(
               absl::StrCat("backend \"", name_, "\": call cancelled")));
      continue;
    }
    absl::StatusOr<bool> started = CatchAll<bool>(
        "starting the request", [&] { return Start(*transfer); });
    if (!started.ok() || !*started) {
      Log(absl::StrCat("backend \"", name_, "\": ",
                       started.ok() ? "curl could not start the request"
                                    : started.status().ToString()));
      Fail(
          *transfer, BackendError::kInternal,
          absl::InternalError(absl::StrCat(
              "backend \"", name_, "\": internal error starting the request")));
      continue;
    }
    active_.push_back(std::move(transfer));
  }
}

CURL* OpenAIBackend::TakeEasy() {
  if (idle_easy_.empty()) return curl_easy_init();
  CURL* easy = idle_easy_.back();
  idle_easy_.pop_back();
  return easy;
}

void OpenAIBackend::ReturnEasy(CURL* easy) {
  // Reset, a handle keeps its buffers: a request then allocates less.
  if (idle_easy_.size() >= static_cast<size_t>(max_connections_)) {
    curl_easy_cleanup(easy);
    return;
  }
  curl_easy_reset(easy);
  idle_easy_.push_back(easy);
}

bool OpenAIBackend::Start(Transfer& transfer) {
  CURL* easy = TakeEasy();
  if (easy == nullptr) return false;
  transfer.easy = easy;
  transfer.started = absl::Now();
  curl_easy_setopt(easy, CURLOPT_URL, url_.c_str());
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers_);
  curl_easy_setopt(easy, CURLOPT_POSTFIELDS, transfer.body.data());
  curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                   static_cast<curl_off_t>(transfer.body.size()));
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &OpenAIBackend::OnBody);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &transfer);
  // Refuses an answer whose Content-Length is over the limit before any of
  // it arrives; OnBody cuts the others, streamed or not.
  curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE,
                   static_cast<curl_off_t>(transfer.max_response_bytes));
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, transfer.error);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  // A stream's events are small and may be held open by the thousand: a
  // smaller receive buffer than curl's 16 KiB.
  if (transfer.stream) {
    curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, kStreamBufferBytes);
  }
  // The loop keeps the deadline; curl's own timeout, a little later, is
  // only a second guard.
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
                   Milliseconds(absl::Ceil(transfer.deadline - transfer.started,
                                           absl::Milliseconds(1)) +
                                kCurlTimeoutSlack));
  curl_easy_setopt(easy, CURLOPT_PRIVATE, &transfer);
  return curl_multi_add_handle(multi_, easy) == CURLM_OK;
}

size_t OpenAIBackend::OnBody(char* data, size_t size, size_t count,
                             void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  const size_t n = size * count;
  // Returning less than n makes curl abort the transfer.
  if (transfer->call->cancelled()) return 0;
  if (transfer->received_bytes + static_cast<int64_t>(n) >
      transfer->max_response_bytes) {
    transfer->too_large = true;
    return 0;
  }
  transfer->received_bytes += static_cast<int64_t>(n);
  // No exception may unwind through curl's C frames.
  try {
    return transfer->backend->Receive(*transfer, absl::string_view(data, n))
               ? n
               : 0;
  } catch (...) {
    transfer->write_failed = true;
    return 0;
  }
}

bool OpenAIBackend::Receive(Transfer& transfer, absl::string_view bytes) {
  if (transfer.mode == Transfer::Mode::kUnknown) {
    // The headers are in: an event stream is read as it comes, anything
    // else (an error, or a server that does not stream) whole.
    long http_status = 0;
    curl_easy_getinfo(transfer.easy, CURLINFO_RESPONSE_CODE, &http_status);
    const char* type = nullptr;
    curl_easy_getinfo(transfer.easy, CURLINFO_CONTENT_TYPE, &type);
    transfer.began = http_status == 200;
    if (transfer.stream && http_status == 200 && type != nullptr &&
        absl::StartsWithIgnoreCase(type, "text/event-stream")) {
      transfer.mode = Transfer::Mode::kEvents;
      transfer.events.emplace(static_cast<size_t>(
          std::min(transfer.max_response_bytes, kMaxEventBytes)));
    } else {
      transfer.mode = Transfer::Mode::kWhole;
    }
  }
  if (transfer.mode == Transfer::Mode::kWhole) {
    transfer.response.append(bytes.data(), bytes.size());
    return true;
  }
  absl::Status status = transfer.events->Feed(
      bytes, [&](absl::string_view data) { return OnEvent(transfer, data); });
  if (status.ok()) return true;
  if (!transfer.failure.has_value() && !transfer.call->cancelled()) {
    const std::string what =
        absl::StrCat("malformed stream: ",
                     absl::IsResourceExhausted(status)
                         ? std::string(status.message())
                         : absl::StrCat("event ", transfer.events->events(),
                                        ": ", status.message()));
    transfer.failure = Transfer::Failure{
        BackendError::kMalformed,
        absl::UnavailableError(absl::StrCat("backend \"", name_, "\": ", what)),
        what};
  }
  return false;
}

absl::Status OpenAIBackend::OnEvent(Transfer& transfer,
                                    absl::string_view data) {
  if (transfer.call->cancelled()) return absl::CancelledError("cancelled");
  if (transfer.done) return absl::OkStatus();  // Nothing counts after it.
  auto event = ParseStreamEvent(data);
  if (!event.ok()) return event.status();
  if (event->done) {
    transfer.done = true;
    return absl::OkStatus();
  }
  if (event->error_code.has_value()) {
    // The server failed mid-answer; a code like HTTP's says whose fault.
    const int64_t http_code = *event->error_code;
    const bool rejected =
        http_code >= 400 && http_code < 500 && http_code != 429;
    const std::string what =
        http_code > 0
            ? absl::StrCat("error event in the stream (code ", http_code, ")")
            : std::string("error event in the stream");
    transfer.failure = Transfer::Failure{
        http_code >= 300 && http_code < 600 ? HttpErrorClass(http_code)
                                            : BackendError::kHttp5xx,
        rejected ? absl::FailedPreconditionError(absl::StrCat(
                       "backend \"", name_, "\" rejected the request: ", what))
                 : absl::UnavailableError(
                       absl::StrCat("backend \"", name_, "\": ", what)),
        what};
    return transfer.failure->status;
  }
  if (!event->finish_reason.empty()) {
    transfer.finish_reason = std::move(event->finish_reason);
  }
  if (!event->text.empty() || !event->fields_json.empty()) {
    transfer.output.Add(event->text);
    Deliver(transfer, BackendDelta{std::move(event->text),
                                   std::move(event->fields_json)});
  }
  if (!event->system_fingerprint.empty()) {
    transfer.system_fingerprint = std::move(event->system_fingerprint);
  }
  if (event->input_tokens.has_value()) {
    transfer.reported_input = event->input_tokens;
  }
  if (event->output_tokens.has_value()) {
    transfer.reported_output = event->output_tokens;
  }
  return absl::OkStatus();
}

void OpenAIBackend::Deliver(Transfer& transfer, BackendDelta delta) {
  // The observer is the gateway's; if it throws, the stream goes on.
  try {
    transfer.observer->OnDelta(std::move(delta));
  } catch (const std::exception& e) {
    Log(absl::StrCat("backend \"", name_,
                     "\": a stream observer threw: ", e.what()));
  } catch (...) {
    Log(absl::StrCat("backend \"", name_, "\": a stream observer threw"));
  }
}

bool OpenAIBackend::CollectFinished() {
  bool finished_any = false;
  int queued = 0;
  while (CURLMsg* message = curl_multi_info_read(multi_, &queued)) {
    if (message->msg != CURLMSG_DONE) continue;
    Transfer* transfer = nullptr;
    curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, &transfer);
    const int code = message->data.result;
    curl_multi_remove_handle(multi_, message->easy_handle);
    finished_any = true;
    if (transfer->call->cancelled()) {
      // Stopped by its own write callback; the cancel wins over the rest.
      Fail(*transfer, std::nullopt,
           absl::CancelledError(
               absl::StrCat("backend \"", name_, "\": call cancelled")));
    } else {
      BackendError reason = BackendError::kInternal;
      bool threw = true;
      absl::StatusOr<BackendResponse> result =
          CatchAll<BackendResponse>("reading the answer", [&] {
            auto outcome = Outcome(*transfer, code, &reason);
            threw = false;
            return outcome;
          });
      if (threw) {
        Log(absl::StrCat("backend \"", name_,
                         "\": ", result.status().message()));
        result = absl::InternalError(absl::StrCat(
            "backend \"", name_, "\": internal error reading the answer"));
      }
      if (result.ok()) {
        Answer(*transfer, std::move(result));
      } else {
        Fail(*transfer, threw ? BackendError::kInternal : reason,
             result.status());
      }
    }
    std::erase_if(active_,
                  [transfer](const auto& t) { return t.get() == transfer; });
  }
  return finished_any;
}

absl::StatusOr<BackendResponse> OpenAIBackend::Outcome(Transfer& transfer,
                                                       int curl_code,
                                                       BackendError* reason) {
  // The log has what the client must not see: the URL, curl's detail and
  // the start of what the backend sent.
  auto log = [&](absl::string_view what, absl::string_view detail) {
    Log(absl::StrCat("backend \"", name_, "\" (", url_, "): ", what,
                     detail.empty() ? "" : ": ",
                     detail.empty() ? "" : QuoteInput(detail)));
  };
  const CURLcode code = static_cast<CURLcode>(curl_code);
  if (transfer.too_large || code == CURLE_FILESIZE_EXCEEDED) {
    *reason = BackendError::kTooLarge;
    const std::string what =
        absl::StrCat("response larger than max_response_bytes (",
                     transfer.max_response_bytes, " bytes); cut off");
    log(what, transfer.response);
    return absl::UnavailableError(
        absl::StrCat("backend \"", name_, "\": ", what));
  }
  if (transfer.failure.has_value()) {
    *reason = transfer.failure->reason;
    log(transfer.failure->logged, "");
    return transfer.failure->status;
  }
  if (code == CURLE_OPERATION_TIMEDOUT) {
    *reason = BackendError::kTimeout;
    log("no answer in time", transfer.error);
    return absl::DeadlineExceededError(
        absl::StrFormat("backend \"%s\": no answer within %s", name_,
                        absl::FormatDuration(transfer.timeout)));
  }
  if (code == CURLE_COULDNT_CONNECT || code == CURLE_COULDNT_RESOLVE_HOST ||
      code == CURLE_COULDNT_RESOLVE_PROXY) {
    *reason = BackendError::kConnect;
    log(curl_easy_strerror(code), transfer.error);
    return absl::UnavailableError(absl::StrCat(
        "backend \"", name_, "\": ",
        code == CURLE_COULDNT_CONNECT ? ConnectFailure(transfer.easy)
                                      : "cannot resolve its host name"));
  }
  if (code != CURLE_OK) {
    *reason = transfer.write_failed ? BackendError::kInternal
                                    : BackendError::kTransport;
    log(curl_easy_strerror(code), transfer.error);
    // curl's own words for the code name no host or URL.
    return absl::UnavailableError(
        absl::StrCat("backend \"", name_,
                     "\": ", absl::AsciiStrToLower(curl_easy_strerror(code))));
  }
  long http_status = 0;
  curl_easy_getinfo(transfer.easy, CURLINFO_RESPONSE_CODE, &http_status);
  if (http_status != 200) {
    *reason = HttpErrorClass(http_status);
    log(absl::StrCat("HTTP ", http_status), transfer.response);
    if (http_status == 429 || http_status >= 500) {
      // Retry-After (seconds or a date; curl reads both) for a retry's wait.
      curl_off_t retry_after = 0;
      if (http_status == 429 || http_status == 503) {
        curl_easy_getinfo(transfer.easy, CURLINFO_RETRY_AFTER, &retry_after);
      }
      absl::Status status = absl::UnavailableError(absl::StrFormat(
          "backend \"%s\": HTTP %d%s", name_, http_status,
          retry_after > 0 ? absl::StrCat(" (Retry-After: ", retry_after, " s)")
                          : ""));
      if (retry_after > 0) MarkRetryAfter(status, absl::Seconds(retry_after));
      return status;
    }
    return absl::FailedPreconditionError(absl::StrFormat(
        "backend \"%s\" rejected the request: HTTP %d", name_, http_status));
  }
  transfer.began = true;
  if (transfer.mode == Transfer::Mode::kEvents) {
    return StreamOutcome(transfer, reason);
  }
  absl::StatusOr<BackendResponse> response =
      ParseChatAnswer(transfer.prompt_tokens, transfer.response);
  if (!response.ok()) {
    *reason = BackendError::kMalformed;
    const std::string what =
        absl::StrCat("malformed response: ", response.status().message());
    log(what, transfer.response);
    return absl::UnavailableError(
        absl::StrCat("backend \"", name_, "\": ", what));
  }
  return response;
}

absl::StatusOr<BackendResponse> OpenAIBackend::StreamOutcome(
    Transfer& transfer, BackendError* reason) {
  if (!transfer.done) {
    *reason = BackendError::kMalformed;
    const std::string what = absl::StrCat(
        "malformed stream: it ended without data: [DONE]",
        transfer.events->in_event() ? " (cut off inside an event)" : "");
    Log(absl::StrCat("backend \"", name_, "\" (", url_, "): ", what));
    return absl::UnavailableError(
        absl::StrCat("backend \"", name_, "\": ", what));
  }
  BackendResponse response = UsageSoFar(transfer);
  response.input_tokens =
      transfer.reported_input.value_or(transfer.prompt_tokens);
  response.output_tokens =
      transfer.reported_output.value_or(transfer.output.count());
  response.usage_reported = transfer.reported_input.has_value() &&
                            transfer.reported_output.has_value();
  return response;
}

BackendResponse OpenAIBackend::UsageSoFar(const Transfer& transfer) {
  BackendResponse usage;
  // Before the backend answered it has billed nothing (the request waited,
  // was refused, or never arrived).
  if (transfer.began) {
    usage.input_tokens =
        transfer.reported_input.value_or(transfer.prompt_tokens);
  }
  usage.output_tokens = transfer.output.count();
  usage.finish_reason = transfer.finish_reason;
  if (!transfer.system_fingerprint.empty()) {
    usage.fields_json = json::Dump(
        nlohmann::json{{"system_fingerprint", transfer.system_fingerprint}});
  }
  return usage;
}

void OpenAIBackend::FailAll(const absl::Status& why) {
  for (auto& transfer : active_) {
    curl_multi_remove_handle(multi_, transfer->easy);
    Fail(*transfer, std::nullopt, why);
  }
  active_.clear();
  for (auto& transfer : waiting_) Fail(*transfer, std::nullopt, why);
  waiting_.clear();
  next_deadline_ = absl::InfiniteFuture();
}

void OpenAIBackend::Fail(Transfer& transfer, std::optional<BackendError> reason,
                         absl::Status status) {
  if (transfer.answered) return;
  if (reason.has_value()) {
    CountError(*reason);
    MarkBackendError(status, *reason);
  }
  Answer(transfer, std::move(status));
}

void OpenAIBackend::Answer(Transfer& transfer,
                           absl::StatusOr<BackendResponse> result) {
  if (transfer.answered) return;
  transfer.answered = true;
  outstanding_.fetch_sub(1);
  if (!result.ok()) {
    End(std::move(transfer.observer), std::move(result).status(),
        UsageSoFar(transfer));
    return;
  }
  if (transfer.mode != Transfer::Mode::kEvents) {
    // A whole answer is one delta; a stream's text already went out.
    Deliver(transfer, BackendDelta{std::move(result->text), ""});
  }
  result->text.clear();
  End(std::move(transfer.observer), absl::OkStatus(), *std::move(result));
}

void OpenAIBackend::End(std::shared_ptr<StreamObserver> observer,
                        absl::Status status, BackendResponse usage) {
  // The observer is the gateway's; if it throws, the call has still ended
  // once, and the loop goes on.
  try {
    observer->OnEnd(std::move(status), std::move(usage));
  } catch (const std::exception& e) {
    Log(absl::StrCat("backend \"", name_,
                     "\": a completion callback threw: ", e.what()));
  } catch (...) {
    Log(absl::StrCat("backend \"", name_, "\": a completion callback threw"));
  }
}

void OpenAIBackend::CountError(BackendError reason) {
  if (!on_error_) return;
  try {
    on_error_(reason);
  } catch (...) {
    Log(absl::StrCat("backend \"", name_, "\": counting an error threw"));
  }
}

void OpenAIBackend::Log(absl::string_view line) {
  int64_t suppressed = 0;
  {
    std::lock_guard lock(log_mu_);
    const absl::Time now = absl::Now();
    if (now - log_window_ >= absl::Seconds(1)) {
      log_window_ = now;
      logged_in_window_ = 0;
    }
    if (logged_in_window_ >= kLogLinesPerSecond) {
      ++suppressed_;
      return;
    }
    ++logged_in_window_;
    suppressed = std::exchange(suppressed_, 0);
  }
  std::string text = absl::StrCat("arbiter: ", line);
  if (suppressed > 0) {
    absl::StrAppend(&text, " (", suppressed, " similar lines suppressed)");
  }
  text.push_back('\n');
  std::fwrite(text.data(), 1, text.size(), stderr);
}

std::unique_ptr<Backend> MakeOpenAIBackend(
    const std::string& name, const v1::OpenAIBackend& config,
    const std::string& api_key, const BackendErrorObserver& on_error) {
  const int threads = std::max(1, config.event_threads());
  if (threads == 1) {
    return std::make_unique<OpenAIBackend>(name, config, api_key, on_error);
  }
  std::vector<std::unique_ptr<RoomReportingBackend>> shards;
  shards.reserve(threads);
  for (int i = 0; i < threads; ++i) {
    shards.push_back(std::make_unique<OpenAIBackend>(
        name, config, api_key, on_error,
        EventThreadShare{.index = i, .of = threads}));
  }
  return std::make_unique<ShardedBackend>(std::move(shards));
}

}  // namespace arbiter
