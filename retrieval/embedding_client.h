#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

typedef void CURL;

namespace arbiter::retrieval {

struct EmbeddingServerOptions {
  // Base URL, e.g. "http://127.0.0.1:8080/v1"; requests go to
  // url + "/embeddings".
  std::string url;
  // Sent as "model".
  std::string model;
  // Sent as "Authorization: Bearer ..." when non-empty.
  std::string api_key;
  // Expected vector dimension (required, >= 1).
  int dim = 0;
  // Inputs per HTTP request.
  int max_batch = 64;
  // Per HTTP attempt (whole transfer).
  absl::Duration timeout = absl::Seconds(10);
  absl::Duration connect_timeout = absl::Seconds(2);
  // Extra attempts after the first for retryable failures.
  int max_retries = 3;
  // Doubles each retry, with jitter.
  absl::Duration backoff = absl::Milliseconds(100);
  // A larger answer is cut off and the batch fails (not retried): 64 MiB
  // holds 64 vectors of 8192 floats with room to spare.
  int64_t max_response_bytes = int64_t{64} << 20;
};

struct Embeddings {
  // One per input, in input order, L2-normalised.
  std::vector<std::vector<float>> vectors;
  // Sum of usage.prompt_tokens reported (0 if absent).
  int64_t tokens = 0;
};

// A blocking client of an OpenAI-compatible /v1/embeddings server (vLLM,
// TEI, llama.cpp, Ollama, OpenAI). Inputs are sent in batches of max_batch;
// connection failures, timeouts, HTTP 408, 429 and 5xx are retried with
// exponential backoff (or the server's Retry-After), other failures are not.
//
//   EmbeddingServerOptions options;
//   options.url = "http://127.0.0.1:8080/v1";
//   options.model = "bge-small-en-v1.5";
//   options.dim = 384;
//   ASSIGN_OR_RETURN(auto client, EmbeddingClient::Create(options));
//   ASSIGN_OR_RETURN(Embeddings embeddings, client->Embed(texts));
//
// Thread-safe: concurrent Embed calls share a small pool of connections.
class EmbeddingClient final {
 public:
  // INVALID_ARGUMENT naming the bad option, e.g.
  // "embedding_server.dim: must be >= 1".
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<EmbeddingClient>> Create(
      EmbeddingServerOptions options);
  ~EmbeddingClient();

  EmbeddingClient(const EmbeddingClient&) = delete;
  EmbeddingClient& operator=(const EmbeddingClient&) = delete;

  // Blocks until every batch is embedded or one fails; the whole call fails
  // then. An empty list returns empty Embeddings without a request; an empty
  // text is INVALID_ARGUMENT ("texts[3]: empty text"). A server answering
  // with vectors of another dimension is FAILED_PRECONDITION; a malformed
  // answer is INTERNAL naming the field ("data[1].embedding[3]: expected a
  // number, got a string"); one over max_response_bytes is UNAVAILABLE.
  [[nodiscard]] absl::StatusOr<Embeddings> Embed(
      absl::Span<const std::string> texts) const;

  [[nodiscard]] int dim() const { return options_.dim; }

  // Since creation: HTTP requests sent (attempts, retries included), retries,
  // Embed calls that returned an error, and prompt tokens reported.
  struct Counters {
    int64_t requests = 0;
    int64_t retries = 0;
    int64_t failures = 0;
    int64_t tokens = 0;
  };
  [[nodiscard]] Counters counters() const;

 private:
  explicit EmbeddingClient(EmbeddingServerOptions options);

  absl::StatusOr<Embeddings> EmbedAll(
      absl::Span<const std::string> texts) const;
  // One batch, retried; `offset` is its first input's index, for messages.
  absl::StatusOr<Embeddings> EmbedBatch(absl::Span<const std::string> texts,
                                        size_t offset) const;

  // A handle keeps its connection alive, so reusing it saves a handshake.
  CURL* TakeHandle() const;
  void ReturnHandle(CURL* handle) const;

  const EmbeddingServerOptions options_;
  const std::string endpoint_;  // url + "/embeddings".

  mutable std::mutex handles_mu_;
  mutable std::vector<CURL*> idle_handles_ ABSL_GUARDED_BY(handles_mu_);

  mutable std::atomic<int64_t> requests_{0};
  mutable std::atomic<int64_t> retries_{0};
  mutable std::atomic<int64_t> failures_{0};
  mutable std::atomic<int64_t> tokens_{0};
};

}  // namespace arbiter::retrieval
