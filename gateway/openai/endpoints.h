#pragma once

// The other endpoints of the OpenAI-compatible front: GET /v1/models,
// POST /v1/embeddings, and arbiter's POST /v1/feedback. Parsers fail with
// INVALID_ARGUMENT naming the field, the path attached as OpenAI's param
// (answer with ErrorFor in errors.h).
//
//   body = RenderModelsList({{"fast", "arbiter"}, {"rag", "arbiter"}},
//                           absl::ToUnixSeconds(started));
//
//   auto embeddings = ParseEmbeddingsRequest(request.body());
//   if (embeddings.ok()) status = CheckDimensions(*embeddings, embedder.dim());
//   ... vectors = embed(embeddings->inputs) ...
//   body = RenderEmbeddings(vectors, embeddings->model, tokens,
//                           embeddings->encoding);
//
//   auto feedback = ParseFeedbackRequest(request.body());  // v1 proto
//   body = RenderFeedbackResponse(feedback->request_id(), response);

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "arbiter/v1/gateway.pb.h"

namespace arbiter::openai {

struct ModelEntry {
  std::string id;        // A route name.
  std::string owned_by;  // Who serves it, e.g. "arbiter" or the backend.
};

// {"object": "list", "data": [{id, object "model", created, owned_by}]}
// with "arbiter/auto" (owned by "arbiter") first, then `routes` in order
// (an entry named arbiter/auto is not listed twice).
[[nodiscard]] std::string RenderModelsList(absl::Span<const ModelEntry> routes,
                                           int64_t created);

// How the vectors are sent back. The official Node and Python clients ask
// for base64 (little-endian float32) unless told otherwise and decode it.
enum class EmbeddingEncoding { kFloat, kBase64 };

struct EmbeddingsRequest {
  std::string model;
  // One or more texts, in order (input: a string or an array of strings).
  std::vector<std::string> inputs;
  EmbeddingEncoding encoding = EmbeddingEncoding::kFloat;
  // As sent; the embedder's dimension is fixed (CheckDimensions).
  std::optional<int64_t> dimensions;
  // Informational, as OpenAI's.
  std::string user;
};

// At most this many inputs, as OpenAI's limit.
inline constexpr size_t kMaxEmbeddingInputs = 2048;

// model (required), input (a non-empty string or a non-empty array of at
// most kMaxEmbeddingInputs non-empty strings; token arrays are refused:
// arbiter's embedders read text), encoding_format ("float" or "base64";
// default float), dimensions, user. Other fields are refused.
[[nodiscard]] absl::StatusOr<EmbeddingsRequest> ParseEmbeddingsRequest(
    absl::string_view body);

// INVALID_ARGUMENT (param dimensions) unless the request asks for no
// particular dimension or for the embedder's.
[[nodiscard]] absl::Status CheckDimensions(const EmbeddingsRequest& request,
                                           int dimension);

// {"object": "list", "data": [{object "embedding", index, embedding}],
// model, usage {prompt_tokens, total_tokens}}. Floats print in their
// shortest float32 form (0.1, not 0.10000000149011612).
[[nodiscard]] std::string RenderEmbeddings(
    absl::Span<const std::vector<float>> vectors, absl::string_view model,
    int64_t prompt_tokens, EmbeddingEncoding encoding);

// {request_id, correct: bool} or {request_id, score: number in [0, 1]}; one
// of correct and score, never both.
[[nodiscard]] absl::StatusOr<v1::FeedbackRequest> ParseFeedbackRequest(
    absl::string_view body);

// {"object": "feedback", "request_id", "route", "task"}: what the feedback
// was counted for.
[[nodiscard]] std::string RenderFeedbackResponse(
    absl::string_view request_id, const v1::FeedbackResponse& response);

}  // namespace arbiter::openai
