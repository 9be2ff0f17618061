#include "gateway/backends/openai_backend.h"

#include <curl/curl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

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
#include "common/quote.h"
#include "common/utf8.h"
#include "nlohmann/json.hpp"

namespace arbiter {

struct OpenAIBackend::Transfer {
  BackendRequest request;
  BackendCallback done;
  bool answered = false;
  absl::Time accepted;  // When Complete took it; the timeout counts from here.
  absl::Time deadline;
  absl::Time started = absl::InfiniteFuture();  // When it got a connection.

  // Set when the transfer starts. The body must outlive the transfer: curl
  // does not copy it.
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  std::string body;
  std::string response;
  int64_t max_response_bytes = 0;
  bool too_large = false;     // The answer hit max_response_bytes.
  bool write_failed = false;  // Storing the answer threw.
  char error[CURL_ERROR_SIZE] = "";

  ~Transfer() {
    if (easy != nullptr) curl_easy_cleanup(easy);
    if (headers != nullptr) curl_slist_free_all(headers);
  }
};

namespace {

// More tokens than any model's context: a count above it is a lie.
constexpr int64_t kMaxTokenCount = 1'000'000'000;
// curl's own timeout comes this long after the loop's deadline.
constexpr absl::Duration kCurlTimeoutSlack = absl::Milliseconds(10);
// A queue that held this many requests returns its memory once drained.
constexpr size_t kTrimAfterWaiting = 256;
constexpr absl::Duration kMinTrimInterval = absl::Seconds(10);
// Log lines per backend per second; the rest are counted and summed up.
constexpr int kLogLinesPerSecond = 10;

size_t AppendBody(char* data, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<OpenAIBackend::Transfer*>(user);
  const size_t n = size * count;
  // Returning less than n makes curl abort the transfer.
  if (transfer->response.size() + n >
      static_cast<size_t>(transfer->max_response_bytes)) {
    transfer->too_large = true;
    return 0;
  }
  // No exception may unwind through curl's C frames.
  try {
    transfer->response.append(data, n);
  } catch (...) {
    transfer->write_failed = true;
    return 0;
  }
  return n;
}

std::string RequestBody(const BackendRequest& request) {
  nlohmann::json body;
  body["model"] = request.model;
  nlohmann::json messages = nlohmann::json::array();
  for (const BackendMessage& message : request.messages) {
    messages.push_back({{"role", message.role}, {"content", message.content}});
  }
  body["messages"] = std::move(messages);
  if (request.max_output_tokens > 0) {
    body["max_tokens"] = request.max_output_tokens;
  }
  if (request.temperature.has_value()) {
    body["temperature"] = *request.temperature;
  }
  body["stream"] = false;
  // Invalid UTF-8 in a prompt becomes U+FFFD instead of throwing.
  return json::Dump(body);
}

absl::StatusOr<int64_t> TokenCount(const json::View& field, bool* reported) {
  auto count = field.OptionalInt();
  if (!count.ok()) return count.status();
  if (!count->has_value()) return 0;  // Missing or null: counted locally.
  if (**count < 0 || **count > kMaxTokenCount) {
    return absl::InvalidArgumentError(absl::StrCat(
        field.path(), ": must be in [0, ", kMaxTokenCount, "], got ", **count));
  }
  *reported = true;
  return **count;
}

// INVALID_ARGUMENT naming the field that is wrong; the caller says which
// backend. Usage fields that are missing or null are counted locally; any
// other field the gateway needs must be there with the right type.
absl::StatusOr<BackendResponse> ParseResponse(const BackendRequest& request,
                                              absl::string_view text) {
  // Strings must be UTF-8 to be parsed and to reach a protobuf.
  auto document = json::ParseRepairingUtf8(text);
  if (!document.ok()) return document.status();
  const json::View root(*document);
  if (absl::Status status = root.RequireObject(); !status.ok()) return status;
  const json::View choices = root["choices"];
  if (absl::Status status = choices.RequireArray(); !status.ok()) {
    return status;
  }
  if (choices.size() == 0) {
    return absl::InvalidArgumentError("choices: empty (expected one choice)");
  }
  const json::View message = choices[0]["message"];
  if (absl::Status status = message.RequireObject(); !status.ok()) {
    return status;
  }
  auto content = message["content"].String();
  if (!content.ok()) return content.status();

  BackendResponse response;
  response.text = *std::move(content);
  if (!IsValidUtf8(response.text)) response.text = RepairUtf8(response.text);
  bool input_reported = false;
  bool output_reported = false;
  const json::View usage = root["usage"];
  if (!usage.is_null()) {
    if (absl::Status status = usage.RequireObject(); !status.ok()) {
      return status;
    }
    auto input = TokenCount(usage["prompt_tokens"], &input_reported);
    if (!input.ok()) return input.status();
    auto output = TokenCount(usage["completion_tokens"], &output_reported);
    if (!output.ok()) return output.status();
    response.input_tokens = *input;
    response.output_tokens = *output;
  }
  if (!input_reported) {
    response.input_tokens = CountPromptTokens(request.messages);
  }
  if (!output_reported) {
    response.output_tokens =
        CountPromptTokens({{"assistant", response.text}}) - 4;
  }
  response.usage_reported = input_reported && output_reported;
  return response;
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
  if (status >= 400 && status < 500) return BackendError::kHttp4xx;
  if (status >= 500 && status < 600) return BackendError::kHttp5xx;
  return BackendError::kHttpOther;
}

long Milliseconds(absl::Duration d) {
  return static_cast<long>(
      std::clamp<int64_t>(absl::ToInt64Milliseconds(d), 1, 1LL << 31));
}

}  // namespace

OpenAIBackend::OpenAIBackend(std::string name, const v1::OpenAIBackend& config,
                             std::string api_key, BackendErrorObserver on_error)
    : name_(std::move(name)),
      url_(absl::StrCat(absl::StripSuffix(config.base_url(), "/"),
                        "/chat/completions")),
      api_key_(std::move(api_key)),
      max_connections_(std::max(1, config.max_connections())),
      max_queued_(std::max(0, config.max_queued_requests())),
      max_response_bytes_(std::max<int64_t>(1, config.max_response_bytes())),
      on_error_(std::move(on_error)),
      multi_([] {
        static const bool initialized = [] {
          curl_global_init(CURL_GLOBAL_DEFAULT);
          return true;
        }();
        (void)initialized;
        return curl_multi_init();
      }()) {
  // The loop never puts more than max_connections_ on the wire; curl's own
  // limit is a second guard, and idle connections stay open for reuse.
  curl_multi_setopt(multi_, CURLMOPT_MAX_HOST_CONNECTIONS,
                    static_cast<long>(max_connections_));
  curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS,
                    static_cast<long>(max_connections_));
  thread_ = std::thread([this] { Loop(); });
}

OpenAIBackend::~OpenAIBackend() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  curl_multi_wakeup(multi_);
  thread_.join();
  if (trimmer_.joinable()) trimmer_.join();
  curl_multi_cleanup(multi_);
}

std::shared_ptr<CallHandle> OpenAIBackend::Stream(
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

void OpenAIBackend::CompleteWhole(BackendRequest request,
                                  BackendCallback done) {
  // Refused at once rather than queued without end: a queued request costs
  // memory and only waits to time out.
  if (outstanding_.fetch_add(1) >= max_connections_ + max_queued_) {
    outstanding_.fetch_sub(1);
    absl::Status refused = absl::ResourceExhaustedError(absl::StrFormat(
        "backend \"%s\": too many requests waiting for a connection (all %d "
        "in use, %d waiting; see max_queued_requests)",
        name_, max_connections_, max_queued_));
    {
      std::lock_guard lock(mu_);
      refused_.emplace_back(std::move(done), std::move(refused));
    }
    curl_multi_wakeup(multi_);
    return;
  }
  auto transfer = std::make_unique<Transfer>();
  transfer->accepted = absl::Now();
  transfer->deadline = transfer->accepted + request.timeout;
  transfer->request = std::move(request);
  transfer->done = std::move(done);
  transfer->max_response_bytes = max_response_bytes_;
  {
    std::lock_guard lock(mu_);
    incoming_.push_back(std::move(transfer));
  }
  curl_multi_wakeup(multi_);
}

void OpenAIBackend::CancelAll(const absl::Status& why) {
  {
    std::lock_guard lock(mu_);
    cancel_ = why;
  }
  curl_multi_wakeup(multi_);
}

void OpenAIBackend::Loop() {
  while (TakeIncoming()) {
    const absl::Time now = absl::Now();
    if (now >= next_deadline_) ExpireOverdue(now);
    StartWaiting();
    ReleaseMemoryIfDrained(now);
    int still_running = 0;
    curl_multi_perform(multi_, &still_running);
    // A finished transfer frees a connection that a waiting one can take at
    // once: go round again.
    if (CollectFinished()) continue;
    // Wake for the next deadline: curl's own timers do not know about
    // requests still waiting for a connection.
    const absl::Duration until = next_deadline_ - absl::Now();
    const int wait_ms = static_cast<int>(std::clamp<int64_t>(
        absl::ToInt64Milliseconds(absl::Ceil(until, absl::Milliseconds(1))), 0,
        1000));
    curl_multi_poll(multi_, nullptr, 0, wait_ms, nullptr);
  }
  // Nothing accepted is dropped silently: what is left fails clearly.
  FailAll(absl::UnavailableError(
      absl::StrCat("backend \"", name_, "\": gateway shutting down")));
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

bool OpenAIBackend::TakeIncoming() {
  std::vector<std::unique_ptr<Transfer>> added;
  std::vector<Refusal> refused;
  std::optional<absl::Status> cancel;
  bool stopping;
  {
    std::lock_guard lock(mu_);
    added.swap(incoming_);
    refused.swap(refused_);
    cancel.swap(cancel_);
    stopping = stopping_;
  }
  for (auto& [done, status] : refused) {
    CountError(BackendError::kQueueFull);
    try {
      std::move(done)(std::move(status));
    } catch (...) {
      Log("a completion callback threw; the request was answered once");
    }
  }
  for (auto& transfer : added) {
    next_deadline_ = std::min(next_deadline_, transfer->deadline);
    waiting_.push_back(std::move(transfer));
  }
  if (cancel.has_value()) FailAll(*cancel);
  return !stopping;
}

void OpenAIBackend::ExpireOverdue(absl::Time now) {
  next_deadline_ = absl::InfiniteFuture();
  auto timed_out = [&](const Transfer& transfer, absl::string_view state) {
    return absl::DeadlineExceededError(
        absl::StrFormat("backend \"%s\": no answer within %s%s", name_,
                        absl::FormatDuration(transfer.request.timeout), state));
  };
  std::erase_if(active_, [&](std::unique_ptr<Transfer>& transfer) {
    if (transfer->deadline > now) {
      next_deadline_ = std::min(next_deadline_, transfer->deadline);
      return false;
    }
    curl_multi_remove_handle(multi_, transfer->easy);
    const absl::Duration waited = transfer->started - transfer->accepted;
    Log(absl::StrCat("backend \"", name_, "\" (", url_, "): no answer within ",
                     absl::FormatDuration(transfer->request.timeout)));
    Fail(*transfer, BackendError::kTimeout,
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
    if (transfer->deadline > now) {
      next_deadline_ = std::min(next_deadline_, transfer->deadline);
      return false;
    }
    Log(absl::StrCat("backend \"", name_, "\": no connection free within ",
                     absl::FormatDuration(transfer->request.timeout)));
    Fail(*transfer, BackendError::kTimeout,
         timed_out(*transfer,
                   absl::StrFormat(": still waiting for a connection (all %d "
                                   "in use)",
                                   max_connections_)));
    return true;
  });
}

void OpenAIBackend::StartWaiting() {
  while (!waiting_.empty() &&
         active_.size() < static_cast<size_t>(max_connections_)) {
    std::unique_ptr<Transfer> transfer = std::move(waiting_.front());
    waiting_.pop_front();
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

bool OpenAIBackend::Start(Transfer& transfer) {
  transfer.body = RequestBody(transfer.request);
  CURL* easy = curl_easy_init();
  if (easy == nullptr) return false;
  transfer.easy = easy;
  transfer.started = absl::Now();
  transfer.headers =
      curl_slist_append(nullptr, "Content-Type: application/json");
  // Without this curl waits up to a second for "100 Continue" on big bodies.
  transfer.headers = curl_slist_append(transfer.headers, "Expect:");
  if (!api_key_.empty()) {
    transfer.headers = curl_slist_append(
        transfer.headers,
        absl::StrCat("Authorization: Bearer ", api_key_).c_str());
  }
  curl_easy_setopt(easy, CURLOPT_URL, url_.c_str());
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, transfer.headers);
  curl_easy_setopt(easy, CURLOPT_POSTFIELDS, transfer.body.data());
  curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                   static_cast<curl_off_t>(transfer.body.size()));
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, AppendBody);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &transfer);
  // Refuses an answer whose Content-Length is over the limit before any of
  // it arrives; AppendBody cuts the others.
  curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE,
                   static_cast<curl_off_t>(transfer.max_response_bytes));
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, transfer.error);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  // The loop keeps the deadline; curl's own timeout, a little later, is
  // only a second guard.
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
                   Milliseconds(absl::Ceil(transfer.deadline - transfer.started,
                                           absl::Milliseconds(1)) +
                                kCurlTimeoutSlack));
  curl_easy_setopt(easy, CURLOPT_PRIVATE, &transfer);
  return curl_multi_add_handle(multi_, easy) == CURLM_OK;
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
    BackendError reason = BackendError::kInternal;
    bool threw = true;
    absl::StatusOr<BackendResponse> result =
        CatchAll<BackendResponse>("reading the answer", [&] {
          auto outcome = Outcome(*transfer, code, &reason);
          threw = false;
          return outcome;
        });
    if (threw) {
      Log(absl::StrCat("backend \"", name_, "\": ", result.status().message()));
      result = absl::InternalError(absl::StrCat(
          "backend \"", name_, "\": internal error reading the answer"));
    }
    if (result.ok()) {
      Answer(*transfer, std::move(result));
    } else {
      Fail(*transfer, threw ? BackendError::kInternal : reason,
           result.status());
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
  if (code == CURLE_OPERATION_TIMEDOUT) {
    *reason = BackendError::kTimeout;
    log("no answer in time", transfer.error);
    return absl::DeadlineExceededError(
        absl::StrFormat("backend \"%s\": no answer within %s", name_,
                        absl::FormatDuration(transfer.request.timeout)));
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
      return absl::UnavailableError(
          absl::StrFormat("backend \"%s\": HTTP %d", name_, http_status));
    }
    return absl::FailedPreconditionError(absl::StrFormat(
        "backend \"%s\" rejected the request: HTTP %d", name_, http_status));
  }
  absl::StatusOr<BackendResponse> response =
      ParseResponse(transfer.request, transfer.response);
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
  if (reason.has_value()) CountError(*reason);
  Answer(transfer, std::move(status));
}

void OpenAIBackend::Answer(Transfer& transfer,
                           absl::StatusOr<BackendResponse> result) {
  if (transfer.answered) return;
  transfer.answered = true;
  outstanding_.fetch_sub(1);
  BackendCallback done = std::move(transfer.done);
  // The callback is the gateway's; if it throws, the request has still been
  // answered once, and the loop goes on.
  try {
    std::move(done)(std::move(result));
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

}  // namespace arbiter
