#pragma once

#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace arbiter::retrieval {

// Words that say nothing about a topic ("how do I ..."): the embedder drops
// them, since in a few hundred buckets they would collide with, and drown,
// the words that do. `word` is lower-case.
[[nodiscard]] bool IsStopWord(absl::string_view word);

// A text embedder that needs no model download: word unigrams and bigrams and
// character 3- to 5-grams of each word (common English stop words left out)
// are hashed into `dim` buckets, weighted by sublinear term frequency times
// the bucket's inverse document frequency (learned by Fit), and the vector is
// L2-normalised so inner product is cosine similarity.
//
//   HashedNgramEmbedder embedder(512);
//   embedder.Fit(chunk_texts);
//   std::vector<float> v = embedder.Embed("reset my password");
//
// Thread-safe for Embed after Fit; Fit is not.
class HashedNgramEmbedder final {
 public:
  explicit HashedNgramEmbedder(int dim);

  HashedNgramEmbedder(const HashedNgramEmbedder&) = delete;
  HashedNgramEmbedder& operator=(const HashedNgramEmbedder&) = delete;

  // Learns bucket document frequencies from a corpus. Without Fit every
  // bucket weighs the same.
  void Fit(absl::Span<const absl::string_view> documents);

  // Returns a unit vector of dim() floats (all zeros for text with no words).
  [[nodiscard]] std::vector<float> Embed(absl::string_view text) const;

  [[nodiscard]] int dim() const { return dim_; }

  // The learned bucket weights, to save beside vectors made with them and
  // restore later, so queries and stored vectors stay comparable.
  [[nodiscard]] const std::vector<float>& weights() const { return idf_; }
  // False (and no change) unless there are exactly dim() weights.
  bool SetWeights(std::vector<float> weights);

 private:
  const int dim_;
  std::vector<float> idf_;  // Per bucket; constant after Fit.
};

}  // namespace arbiter::retrieval
