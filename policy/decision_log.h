#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace arbiter::policy {

// What Feedback needs about a served request that its id cannot carry (the
// id names route, task, experiment and arm): whether feedback came already,
// and the prompt's embedding when a contextual policy decided. Requests are
// keyed by a 64-bit hash of their id, salted per log so ids cannot be made
// to collide; embeddings are kept as 8-bit codes and a scale, a quarter of
// their float size (on the quickstart's questions similarities move by
// 0.0002 on average, 0.003 at most; bench/decision_log_bench).
//
// Bounded by bytes: requests are filed in kGenerations generations of
// max_bytes / kGenerations each, and when the newest is full the oldest is
// forgotten whole. Feedback for a forgotten request is credited from its id
// alone (its embedding is lost, and a repeat is not caught). Thread-safe.
//
//   DecisionLog log({.max_bytes = 64 << 20, .embedding_dim = 512});
//   log.Record(request_id, embedding);
//   auto embedding = log.TakeFeedback(request_id);  // Then ALREADY_EXISTS.
class DecisionLog final {
 public:
  static constexpr int kGenerations = 8;

  struct Options {
    // Everything the log allocates; 0 keeps nothing.
    size_t max_bytes = size_t{64} << 20;
    // The size of the embeddings kept; others are dropped.
    int embedding_dim = 0;
  };

  explicit DecisionLog(Options options);
  ~DecisionLog();

  DecisionLog(const DecisionLog&) = delete;
  DecisionLog& operator=(const DecisionLog&) = delete;

  // Remembers a served request, with its prompt's embedding if a contextual
  // policy decided (empty otherwise). A repeated id is ignored.
  void Record(absl::string_view request_id,
              absl::Span<const float> embedding = {});

  // Marks the request's feedback as received and returns its embedding
  // (empty if none was kept). NOT_FOUND if the id is not (or no longer)
  // here; ALREADY_EXISTS if it already had feedback.
  [[nodiscard]] absl::StatusOr<std::vector<float>> TakeFeedback(
      absl::string_view request_id);

  // Requests remembered.
  [[nodiscard]] size_t size() const;
  // Bytes allocated for them: at most max_bytes, but for a moment while a
  // generation's table grows.
  [[nodiscard]] size_t bytes() const;

 private:
  class Generation;

  [[nodiscard]] uint64_t KeyOf(absl::string_view request_id) const;

  const Options options_;
  const size_t generation_bytes_;   // Budget of each generation.
  const size_t records_per_block_;  // Embeddings per allocation.
  const uint64_t salt_;
  mutable std::mutex mu_;  // std:: so ThreadSanitizer sees it.
  std::vector<std::unique_ptr<Generation>> generations_
      ABSL_GUARDED_BY(mu_);  // Oldest first.
};

}  // namespace arbiter::policy
