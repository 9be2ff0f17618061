#include "retrieval/embedding_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <random>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/json.h"
#include "common/utf8.h"
#include "nlohmann/json.hpp"

namespace arbiter::retrieval {
namespace {

// Neither a server's Retry-After nor our own backoff may stall a caller
// longer than this per retry.
constexpr absl::Duration kMaxWait = absl::Seconds(5);
// Handles kept for reuse; more concurrent callers get fresh ones.
constexpr size_t kMaxIdleHandles = 8;
constexpr size_t kSnippetChars = 200;

void InitCurlOnce() {
  static const bool initialized = [] {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return true;
  }();
  (void)initialized;
}

// The start of a body, on one line and valid UTF-8, for an error message.
std::string Snippet(absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  std::string snippet = RepairUtf8(TruncateUtf8(text, kSnippetChars));
  std::replace_if(
      snippet.begin(), snippet.end(),
      [](char c) { return c == '\n' || c == '\r'; }, ' ');
  if (text.size() > kSnippetChars) snippet += "...";
  return snippet;
}

std::string Attempts(int n) {
  return absl::StrCat(n, n == 1 ? " attempt" : " attempts");
}

// What one HTTP attempt produced.
struct HttpResult {
  CURLcode curl_code = CURLE_OK;
  std::string curl_error;  // Detail from CURLOPT_ERRORBUFFER, may be empty.
  long status = 0;
  std::string body;
  std::optional<absl::Duration> retry_after;
  size_t max_body = 0;
  bool too_large = false;  // The body hit max_body and the transfer stopped.
};

size_t OnBody(char* data, size_t size, size_t count, void* user) {
  auto* result = static_cast<HttpResult*>(user);
  const size_t n = size * count;
  // Returning less than n makes curl abort the transfer.
  if (result->body.size() + n > result->max_body) {
    result->too_large = true;
    return 0;
  }
  try {
    result->body.append(data, n);
  } catch (...) {  // Nothing may unwind through curl's C frames.
    return 0;
  }
  return n;
}

size_t OnHeader(char* data, size_t size, size_t count, void* user) {
  auto* result = static_cast<HttpResult*>(user);
  absl::string_view line(data, size * count);
  // Headers of an interim response (100 Continue) do not count.
  if (absl::StartsWith(line, "HTTP/")) result->retry_after.reset();
  constexpr absl::string_view kRetryAfter = "retry-after:";
  if (absl::StartsWithIgnoreCase(line, kRetryAfter)) {
    line.remove_prefix(kRetryAfter.size());
    int64_t seconds = 0;
    // Only delta-seconds; an HTTP date falls back to our own backoff.
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &seconds) &&
        seconds >= 0) {
      result->retry_after = std::min(absl::Seconds(seconds), kMaxWait);
    }
  }
  return size * count;
}

long Milliseconds(absl::Duration d) {
  return static_cast<long>(
      std::clamp<int64_t>(absl::ToInt64Milliseconds(d), 1, 1LL << 31));
}

HttpResult Post(CURL* handle, const EmbeddingServerOptions& options,
                const std::string& endpoint, const std::string& body) {
  HttpResult result;
  result.max_body = static_cast<size_t>(options.max_response_bytes);
  if (handle == nullptr) {
    result.curl_code = CURLE_FAILED_INIT;
    result.curl_error = "could not create a curl handle";
    return result;
  }
  char error[CURL_ERROR_SIZE] = "";
  curl_slist* headers =
      curl_slist_append(nullptr, "Content-Type: application/json");
  headers = curl_slist_append(headers, "Accept: application/json");
  // Without this curl waits for "100 Continue" before sending large bodies.
  headers = curl_slist_append(headers, "Expect:");
  if (!options.api_key.empty()) {
    headers = curl_slist_append(
        headers,
        absl::StrCat("Authorization: Bearer ", options.api_key).c_str());
  }
  curl_easy_setopt(handle, CURLOPT_URL, endpoint.c_str());
  curl_easy_setopt(handle, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(handle, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(handle, CURLOPT_POSTFIELDSIZE_LARGE,
                   static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(handle, CURLOPT_WRITEDATA, &result);
  // An announced length over the cap fails before the body arrives.
  curl_easy_setopt(handle, CURLOPT_MAXFILESIZE_LARGE,
                   static_cast<curl_off_t>(options.max_response_bytes));
  curl_easy_setopt(handle, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(handle, CURLOPT_HEADERDATA, &result);
  curl_easy_setopt(handle, CURLOPT_ERRORBUFFER, error);
  // Signals are not thread-safe; timeouts must not rely on them.
  curl_easy_setopt(handle, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(handle, CURLOPT_TIMEOUT_MS, Milliseconds(options.timeout));
  curl_easy_setopt(handle, CURLOPT_CONNECTTIMEOUT_MS,
                   Milliseconds(options.connect_timeout));
  // Float arrays compress well; curl offers what it can decode.
  curl_easy_setopt(handle, CURLOPT_ACCEPT_ENCODING, "");
  curl_easy_setopt(handle, CURLOPT_USERAGENT, "arbiter");
  result.curl_code = curl_easy_perform(handle);
  if (result.curl_code == CURLE_OK) {
    curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &result.status);
  } else {
    result.curl_error = error[0] != '\0' ? std::string(error)
                                         : curl_easy_strerror(result.curl_code);
  }
  // The handle goes back to the pool: it must not point at our stack.
  curl_easy_reset(handle);
  curl_slist_free_all(headers);
  return result;
}

// Failures of the network or the server's capacity, which a later attempt
// may not meet. Anything else (a bad URL, TLS trust) fails the same again.
bool IsTransient(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return true;
    default:
      return false;
  }
}

bool IsRetryableStatus(long status) {
  return status == 408 || status == 429 || (status >= 500 && status < 600);
}

// A refusal that will not change on retry, with the most specific code.
absl::Status RejectedStatus(absl::string_view endpoint, long status,
                            absl::string_view body) {
  absl::StatusCode code = absl::StatusCode::kInvalidArgument;
  std::string hint;
  if (status == 401) {
    code = absl::StatusCode::kUnauthenticated;
    hint = " (check embedding_server.api_key)";
  } else if (status == 403) {
    code = absl::StatusCode::kPermissionDenied;
    hint = " (check embedding_server.api_key)";
  } else if (status == 404) {
    hint =
        " (embedding_server.url should be the API base, e.g. "
        "http://host:8080/v1, and embedding_server.model a served model)";
  } else if (status == 413) {
    hint = " (lower embedding_server.max_batch)";
  } else if (status < 400 || status >= 500) {
    code = absl::StatusCode::kFailedPrecondition;
    hint = " (unexpected status; redirects are not followed)";
  }
  return absl::Status(
      code, absl::StrCat("embedding server ", endpoint, ": HTTP ", status, hint,
                         ": ", Snippet(body)));
}

std::string RequestBody(const std::string& model,
                        absl::Span<const std::string> texts) {
  nlohmann::json body;
  body["model"] = model;
  body["input"] = nlohmann::json::array();
  for (const std::string& text : texts) body["input"].push_back(text);
  body["encoding_format"] = "float";
  // Invalid UTF-8 becomes U+FFFD instead of throwing.
  return json::Dump(body);
}

// Every field is read through json::View: a wrong one is an error naming
// its path ("data[1].embedding[3]: expected a number, got a string").
absl::StatusOr<Embeddings> ParseResponse(absl::string_view endpoint,
                                         absl::string_view text, size_t n,
                                         size_t offset, int dim) {
  auto malformed = [&](absl::string_view what) {
    return absl::InternalError(absl::StrCat(
        "embedding server ", endpoint, " returned malformed JSON: ", what));
  };
  // Strings the client does not read ("model", "object") must not fail the
  // parse for a stray byte.
  auto document = json::ParseRepairingUtf8(text);
  if (!document.ok()) return malformed(document.status().message());
  const json::View root(*document);
  if (absl::Status status = root.RequireObject(); !status.ok()) {
    return malformed(status.message());
  }
  const json::View data = root["data"];
  if (absl::Status status = data.RequireArray(); !status.ok()) {
    return malformed(status.message());
  }
  if (data.size() != n) {
    return malformed(
        absl::StrCat("data: expected ", n, " embeddings, got ", data.size()));
  }
  Embeddings result;
  result.vectors.resize(n);
  std::vector<bool> seen(n, false);
  for (size_t i = 0; i < n; ++i) {
    const json::View item = data[i];
    if (absl::Status status = item.RequireObject(); !status.ok()) {
      return malformed(status.message());
    }
    // Servers may answer out of order; "index" says which input it is.
    size_t index = i;
    auto given = item["index"].OptionalInt();
    if (!given.ok()) return malformed(given.status().message());
    if (given->has_value()) {
      if (**given < 0 || **given >= static_cast<int64_t>(n)) {
        return malformed(absl::StrCat(item["index"].path(), ": ", **given,
                                      " is out of range for a batch of ", n));
      }
      index = static_cast<size_t>(**given);
    }
    if (seen[index]) {
      return malformed(absl::StrCat(item["index"].path(), ": index ", index,
                                    " appears twice"));
    }
    seen[index] = true;
    const json::View embedding = item["embedding"];
    if (embedding.exists() && embedding.get()->is_string()) {
      return malformed(absl::StrCat(
          embedding.path(),
          ": a string (base64?) although encoding_format \"float\" was "
          "requested"));
    }
    if (absl::Status status = embedding.RequireArray(); !status.ok()) {
      return malformed(status.message());
    }
    if (embedding.size() != static_cast<size_t>(dim)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "embedding server ", endpoint, " returned ", embedding.size(),
          "-dim vectors; the collection expects ", dim,
          " (embedding_server.dim)"));
    }
    const size_t input = offset + index;
    std::vector<float>& vector = result.vectors[index];
    vector.reserve(dim);
    double norm = 0;
    // The elements directly: a View per number would cost a path string.
    size_t j = 0;
    for (const nlohmann::json& value : *embedding.get()) {
      if (!value.is_number()) {
        return malformed(absl::StrCat(embedding.path(), "[", j,
                                      "]: expected a number, got ",
                                      json::TypeName(value)));
      }
      const float x = static_cast<float>(value.get<double>());
      if (!std::isfinite(x)) {
        return absl::InternalError(
            absl::StrCat("embedding server ", endpoint,
                         " returned a non-finite value in the embedding of "
                         "texts[",
                         input, "]"));
      }
      vector.push_back(x);
      norm += static_cast<double>(x) * x;
      ++j;
    }
    if (norm == 0) {
      return absl::InternalError(absl::StrCat("embedding server ", endpoint,
                                              " returned an all-zero vector "
                                              "for texts[",
                                              input, "]"));
    }
    // Unit vectors make inner product cosine similarity.
    const double scale = 1.0 / std::sqrt(norm);
    for (float& x : vector) x = static_cast<float>(x * scale);
  }
  // Usage is optional; when given it must be a count.
  const json::View usage = root["usage"];
  if (!usage.is_null()) {
    if (absl::Status status = usage.RequireObject(); !status.ok()) {
      return malformed(status.message());
    }
    for (const char* field : {"prompt_tokens", "total_tokens"}) {
      auto tokens = usage[field].OptionalInt();
      if (!tokens.ok()) return malformed(tokens.status().message());
      if (!tokens->has_value()) continue;
      if (**tokens < 0) {
        return malformed(absl::StrCat(usage[field].path(),
                                      ": must be >= 0, got ", **tokens));
      }
      result.tokens = **tokens;
      break;
    }
  }
  return result;
}

// Exponential backoff with jitter, so callers that failed together do not
// retry together.
absl::Duration Backoff(absl::Duration base, int retry) {
  thread_local std::minstd_rand random(std::random_device{}());
  std::uniform_real_distribution<double> jitter(0.5, 1.5);
  const absl::Duration exponential =
      base * std::ldexp(1.0, std::min(retry, 30));
  return std::min(exponential * jitter(random), kMaxWait);
}

absl::Status Invalid(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("embedding_server.", field, ": ", problem));
}

}  // namespace

absl::StatusOr<std::unique_ptr<EmbeddingClient>> EmbeddingClient::Create(
    EmbeddingServerOptions options) {
  absl::string_view url = options.url;
  if (!absl::StartsWithIgnoreCase(url, "http://") &&
      !absl::StartsWithIgnoreCase(url, "https://")) {
    return Invalid("url", "must start with http:// or https://");
  }
  if (url.substr(url.find("://") + 3).empty()) {
    return Invalid("url", "has no host");
  }
  if (std::any_of(url.begin(), url.end(), [](char c) {
        return absl::ascii_isspace(static_cast<unsigned char>(c)) ||
               absl::ascii_iscntrl(static_cast<unsigned char>(c));
      })) {
    return Invalid("url", "must not contain spaces or control characters");
  }
  if (options.dim < 1) return Invalid("dim", "must be >= 1");
  if (options.max_batch < 1) return Invalid("max_batch", "must be >= 1");
  if (options.max_retries < 0) return Invalid("max_retries", "must be >= 0");
  if (options.timeout <= absl::ZeroDuration()) {
    return Invalid("timeout", "must be > 0");
  }
  if (options.connect_timeout <= absl::ZeroDuration()) {
    return Invalid("connect_timeout", "must be > 0");
  }
  if (options.backoff < absl::ZeroDuration()) {
    return Invalid("backoff", "must be >= 0");
  }
  if (options.max_response_bytes < 1) {
    return Invalid("max_response_bytes", "must be >= 1");
  }
  // A line break would let the key inject headers.
  if (absl::StrContains(options.api_key, '\r') ||
      absl::StrContains(options.api_key, '\n')) {
    return Invalid("api_key", "must not contain line breaks");
  }
  InitCurlOnce();
  return std::unique_ptr<EmbeddingClient>(
      new EmbeddingClient(std::move(options)));
}

EmbeddingClient::EmbeddingClient(EmbeddingServerOptions options)
    : options_(std::move(options)), endpoint_([this] {
        absl::string_view base = options_.url;
        while (absl::ConsumeSuffix(&base, "/")) {
        }
        return absl::StrCat(base, "/embeddings");
      }()) {}

EmbeddingClient::~EmbeddingClient() {
  std::lock_guard<std::mutex> lock(handles_mu_);
  for (CURL* handle : idle_handles_) curl_easy_cleanup(handle);
}

absl::StatusOr<Embeddings> EmbeddingClient::Embed(
    absl::Span<const std::string> texts) const {
  absl::StatusOr<Embeddings> result = EmbedAll(texts);
  if (!result.ok()) failures_.fetch_add(1, std::memory_order_relaxed);
  return result;
}

absl::StatusOr<Embeddings> EmbeddingClient::EmbedAll(
    absl::Span<const std::string> texts) const {
  for (size_t i = 0; i < texts.size(); ++i) {
    // Servers reject or embed empty input inconsistently; say which one.
    if (texts[i].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("texts[", i, "]: empty text"));
    }
  }
  Embeddings all;
  all.vectors.reserve(texts.size());
  const size_t batch = static_cast<size_t>(options_.max_batch);
  for (size_t offset = 0; offset < texts.size(); offset += batch) {
    absl::StatusOr<Embeddings> part =
        EmbedBatch(texts.subspan(offset, batch), offset);
    if (!part.ok()) return part.status();
    for (std::vector<float>& vector : part->vectors) {
      all.vectors.push_back(std::move(vector));
    }
    all.tokens += part->tokens;
  }
  return all;
}

absl::StatusOr<Embeddings> EmbeddingClient::EmbedBatch(
    absl::Span<const std::string> texts, size_t offset) const {
  const std::string body = RequestBody(options_.model, texts);
  const int attempts = options_.max_retries + 1;
  for (int attempt = 1;; ++attempt) {
    CURL* handle = TakeHandle();
    requests_.fetch_add(1, std::memory_order_relaxed);
    HttpResult result = Post(handle, options_, endpoint_, body);
    ReturnHandle(handle);

    // A transient failure: its code, what happened, and the server's words.
    absl::StatusCode code;
    std::string what;
    std::string detail;
    if (result.too_large || result.curl_code == CURLE_FILESIZE_EXCEEDED) {
      // The same batch would be as large again: not retried.
      return absl::UnavailableError(absl::StrCat(
          "embedding server ", endpoint_,
          ": response larger than embedding_server.max_response_bytes (",
          options_.max_response_bytes,
          " bytes); lower embedding_server.batch_size"));
    }
    if (result.curl_code != CURLE_OK) {
      if (!IsTransient(result.curl_code)) {
        return absl::UnavailableError(absl::StrCat(
            "embedding server ", endpoint_, ": ", result.curl_error));
      }
      code = result.curl_code == CURLE_OPERATION_TIMEDOUT
                 ? absl::StatusCode::kDeadlineExceeded
                 : absl::StatusCode::kUnavailable;
      what = result.curl_error;
    } else if (result.status >= 200 && result.status < 300) {
      absl::StatusOr<Embeddings> parsed = ParseResponse(
          endpoint_, result.body, texts.size(), offset, options_.dim);
      if (parsed.ok()) {
        tokens_.fetch_add(parsed->tokens, std::memory_order_relaxed);
      }
      return parsed;
    } else if (IsRetryableStatus(result.status)) {
      code = absl::StatusCode::kUnavailable;
      what = absl::StrCat("HTTP ", result.status);
      detail = absl::StrCat(": ", Snippet(result.body));
    } else {
      return RejectedStatus(endpoint_, result.status, result.body);
    }

    if (attempt >= attempts) {
      return absl::Status(
          code, absl::StrCat("embedding server ", endpoint_, ": ", what,
                             " after ", Attempts(attempts), detail));
    }
    retries_.fetch_add(1, std::memory_order_relaxed);
    absl::SleepFor(
        result.retry_after.value_or(Backoff(options_.backoff, attempt - 1)));
  }
}

CURL* EmbeddingClient::TakeHandle() const {
  {
    std::lock_guard<std::mutex> lock(handles_mu_);
    if (!idle_handles_.empty()) {
      CURL* handle = idle_handles_.back();
      idle_handles_.pop_back();
      return handle;
    }
  }
  return curl_easy_init();
}

void EmbeddingClient::ReturnHandle(CURL* handle) const {
  if (handle == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(handles_mu_);
    if (idle_handles_.size() < kMaxIdleHandles) {
      idle_handles_.push_back(handle);
      return;
    }
  }
  curl_easy_cleanup(handle);
}

EmbeddingClient::Counters EmbeddingClient::counters() const {
  Counters counters;
  counters.requests = requests_.load(std::memory_order_relaxed);
  counters.retries = retries_.load(std::memory_order_relaxed);
  counters.failures = failures_.load(std::memory_order_relaxed);
  counters.tokens = tokens_.load(std::memory_order_relaxed);
  return counters;
}

}  // namespace arbiter::retrieval
