#include "retrieval/embedder.h"

#include <cmath>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "retrieval/tokenizer.h"

namespace arbiter::retrieval {
namespace {

// FNV-1a: stable across processes, so stored embeddings stay comparable.
uint64_t Fnv1a(absl::string_view data, uint64_t seed) {
  uint64_t h = 14695981039346656037ull ^ seed;
  for (char c : data) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 32;
  return h;
}

// Seeds keep the feature families apart in hash space.
constexpr uint64_t kWordSeed = 1;
constexpr uint64_t kBigramSeed = 2;
constexpr uint64_t kCharSeed = 3;
// Character n-grams match morphology ("reset"/"resetting") but are many;
// they weigh less than whole words.
constexpr float kCharWeight = 0.35f;
constexpr float kBigramWeight = 0.8f;

// Feature hash -> summed weight, for one text.
absl::flat_hash_map<uint64_t, float> Features(absl::string_view text) {
  absl::flat_hash_map<uint64_t, float> features;
  std::vector<std::string> words = Words(text);
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& word = words[i];
    features[Fnv1a(word, kWordSeed)] += 1.0f;
    if (i > 0) {
      features[Fnv1a(absl::StrCat(words[i - 1], " ", word), kBigramSeed)] +=
          kBigramWeight;
    }
    std::string padded = absl::StrCat("<", word, ">");
    for (size_t n = 3; n <= 5; ++n) {
      for (size_t start = 0; start + n <= padded.size(); ++start) {
        features[Fnv1a(absl::string_view(padded).substr(start, n),
                       kCharSeed)] += kCharWeight;
      }
    }
  }
  return features;
}

}  // namespace

HashedNgramEmbedder::HashedNgramEmbedder(int dim)
    : dim_(dim), idf_(dim, 1.0f) {}

void HashedNgramEmbedder::Fit(absl::Span<const absl::string_view> documents) {
  std::vector<int> document_frequency(dim_, 0);
  for (absl::string_view document : documents) {
    absl::flat_hash_set<int> buckets;
    for (const auto& [hash, weight] : Features(document)) {
      buckets.insert(static_cast<int>(hash % dim_));
    }
    for (int bucket : buckets) ++document_frequency[bucket];
  }
  const double n = static_cast<double>(documents.size());
  for (int b = 0; b < dim_; ++b) {
    idf_[b] =
        static_cast<float>(std::log((n + 1) / (document_frequency[b] + 1)) + 1);
  }
}

std::vector<float> HashedNgramEmbedder::Embed(absl::string_view text) const {
  std::vector<float> vector(dim_, 0.0f);
  for (const auto& [hash, weight] : Features(text)) {
    int bucket = static_cast<int>(hash % dim_);
    // A sign bit spreads collisions so they cancel instead of piling up.
    float sign = (hash >> 63) ? -1.0f : 1.0f;
    vector[bucket] += sign * (1.0f + std::log(weight + 1.0f)) * idf_[bucket];
  }
  double norm = 0;
  for (float v : vector) norm += static_cast<double>(v) * v;
  if (norm > 0) {
    float scale = static_cast<float>(1.0 / std::sqrt(norm));
    for (float& v : vector) v *= scale;
  }
  return vector;
}

}  // namespace arbiter::retrieval
