#include "gateway/backends/openai_backend.h"

#include <curl/curl.h>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace arbiter {

struct OpenAIBackend::Transfer {
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  std::string body;  // Must outlive the transfer: curl does not copy it.
  std::string response;
  BackendRequest request;
  BackendCallback done;

  ~Transfer() {
    if (easy != nullptr) curl_easy_cleanup(easy);
    if (headers != nullptr) curl_slist_free_all(headers);
  }
};

namespace {

size_t AppendBody(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

std::string Snippet(absl::string_view text) {
  constexpr size_t kMax = 200;
  return text.size() <= kMax ? std::string(text)
                             : absl::StrCat(text.substr(0, kMax), "...");
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
  if (request.temperature.has_value())
    body["temperature"] = *request.temperature;
  body["stream"] = false;
  return body.dump();
}

absl::StatusOr<BackendResponse> ParseResponse(absl::string_view backend,
                                              const BackendRequest& request,
                                              const std::string& text) {
  nlohmann::json json = nlohmann::json::parse(text, nullptr, false);
  auto malformed = [&](absl::string_view what) {
    return absl::UnavailableError(absl::StrCat("backend \"", backend,
                                               "\": malformed response (", what,
                                               "): ", Snippet(text)));
  };
  if (json.is_discarded() || !json.is_object()) return malformed("not JSON");
  auto choices = json.find("choices");
  if (choices == json.end() || !choices->is_array() || choices->empty()) {
    return malformed("no choices");
  }
  const nlohmann::json& first = (*choices)[0];
  auto message = first.find("message");
  if (message == first.end() || !message->is_object()) {
    return malformed("no message");
  }
  BackendResponse response;
  auto content = message->find("content");
  if (content != message->end() && content->is_string()) {
    response.text = content->get<std::string>();
  }
  auto usage = json.find("usage");
  if (usage != json.end() && usage->is_object() &&
      usage->value("prompt_tokens", -1) >= 0 &&
      usage->value("completion_tokens", -1) >= 0) {
    response.input_tokens = usage->value("prompt_tokens", 0);
    response.output_tokens = usage->value("completion_tokens", 0);
    response.usage_reported = true;
  } else {
    response.input_tokens = CountPromptTokens(request.messages);
    response.output_tokens =
        CountPromptTokens({{"assistant", response.text}}) - 4;
  }
  return response;
}

}  // namespace

OpenAIBackend::OpenAIBackend(std::string name, const v1::OpenAIBackend& config,
                             std::string api_key)
    : name_(std::move(name)),
      url_(absl::StrCat(absl::StripSuffix(config.base_url(), "/"),
                        "/chat/completions")),
      api_key_(std::move(api_key)),
      multi_([] {
        static const bool initialized = [] {
          curl_global_init(CURL_GLOBAL_DEFAULT);
          return true;
        }();
        (void)initialized;
        return curl_multi_init();
      }()) {
  curl_multi_setopt(multi_, CURLMOPT_MAX_HOST_CONNECTIONS,
                    static_cast<long>(config.max_connections()));
  thread_ = std::thread([this] { Loop(); });
}

OpenAIBackend::~OpenAIBackend() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  curl_multi_wakeup(multi_);
  thread_.join();
  curl_multi_cleanup(multi_);
}

void OpenAIBackend::Complete(BackendRequest request, BackendCallback done) {
  auto transfer = std::make_unique<Transfer>();
  transfer->body = RequestBody(request);
  transfer->request = std::move(request);
  transfer->done = std::move(done);
  {
    absl::MutexLock lock(&mu_);
    incoming_.push_back(std::move(transfer));
  }
  curl_multi_wakeup(multi_);
}

void OpenAIBackend::CancelAll(const absl::Status& why) {
  {
    absl::MutexLock lock(&mu_);
    cancel_ = why;
  }
  curl_multi_wakeup(multi_);
}

void OpenAIBackend::Loop() {
  std::vector<std::unique_ptr<Transfer>> running;
  for (;;) {
    std::vector<std::unique_ptr<Transfer>> added;
    bool stopping;
    std::optional<absl::Status> cancel;
    {
      absl::MutexLock lock(&mu_);
      added.swap(incoming_);
      stopping = stopping_;
      cancel.swap(cancel_);
    }
    if (cancel.has_value()) {
      for (auto& transfer : running) {
        curl_multi_remove_handle(multi_, transfer->easy);
        std::move(transfer->done)(*cancel);
      }
      running.clear();
      for (auto& transfer : added) std::move(transfer->done)(*cancel);
      added.clear();
    }
    for (auto& transfer : added) {
      CURL* easy = curl_easy_init();
      transfer->easy = easy;
      transfer->headers =
          curl_slist_append(nullptr, "Content-Type: application/json");
      if (!api_key_.empty()) {
        transfer->headers = curl_slist_append(
            transfer->headers,
            absl::StrCat("Authorization: Bearer ", api_key_).c_str());
      }
      curl_easy_setopt(easy, CURLOPT_URL, url_.c_str());
      curl_easy_setopt(easy, CURLOPT_HTTPHEADER, transfer->headers);
      curl_easy_setopt(easy, CURLOPT_POSTFIELDS, transfer->body.data());
      curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE,
                       static_cast<long>(transfer->body.size()));
      curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, AppendBody);
      curl_easy_setopt(easy, CURLOPT_WRITEDATA, &transfer->response);
      curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
      curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
                       std::max<long>(1, absl::ToInt64Milliseconds(
                                             transfer->request.timeout)));
      curl_easy_setopt(easy, CURLOPT_PRIVATE, transfer.get());
      curl_multi_add_handle(multi_, easy);
      running.push_back(std::move(transfer));
    }
    if (stopping) break;
    int still_running = 0;
    curl_multi_perform(multi_, &still_running);
    int queued = 0;
    bool finished_any = false;
    while (CURLMsg* message = curl_multi_info_read(multi_, &queued)) {
      if (message->msg != CURLMSG_DONE) continue;
      Transfer* transfer = nullptr;
      curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, &transfer);
      int code = message->data.result;
      curl_multi_remove_handle(multi_, message->easy_handle);
      Finish(transfer, code);
      finished_any = true;
      std::erase_if(running,
                    [transfer](const auto& t) { return t.get() == transfer; });
    }
    // A finished transfer frees a connection that a queued one can take at
    // once, which only happens inside curl_multi_perform: go round again.
    if (finished_any) continue;
    curl_multi_poll(multi_, nullptr, 0, 1000, nullptr);
  }
  // Nothing accepted is dropped silently: in-flight requests fail clearly.
  for (auto& transfer : running) {
    curl_multi_remove_handle(multi_, transfer->easy);
    std::move(transfer->done)(absl::UnavailableError(
        absl::StrCat("backend \"", name_, "\": gateway shutting down")));
  }
}

void OpenAIBackend::Finish(Transfer* transfer, int curl_code) {
  BackendCallback done = std::move(transfer->done);
  if (curl_code == CURLE_OPERATION_TIMEDOUT) {
    std::move(done)(absl::DeadlineExceededError(
        absl::StrFormat("backend \"%s\": no answer within %s", name_,
                        absl::FormatDuration(transfer->request.timeout))));
    return;
  }
  if (curl_code != CURLE_OK) {
    std::move(done)(absl::UnavailableError(absl::StrFormat(
        "backend \"%s\": %s (%s)", name_,
        curl_easy_strerror(static_cast<CURLcode>(curl_code)), url_)));
    return;
  }
  long http_status = 0;
  curl_easy_getinfo(transfer->easy, CURLINFO_RESPONSE_CODE, &http_status);
  if (http_status == 429 || http_status >= 500) {
    std::move(done)(absl::UnavailableError(
        absl::StrFormat("backend \"%s\": HTTP %d: %s", name_, http_status,
                        Snippet(transfer->response))));
    return;
  }
  if (http_status != 200) {
    std::move(done)(absl::FailedPreconditionError(
        absl::StrFormat("backend \"%s\" rejected the request: HTTP %d: %s",
                        name_, http_status, Snippet(transfer->response))));
    return;
  }
  std::move(done)(ParseResponse(name_, transfer->request, transfer->response));
}

}  // namespace arbiter
