#include "retrieval/embedder.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "retrieval/tokenizer.h"

namespace arbiter::retrieval {

bool IsStopWord(absl::string_view word) {
  static const auto* const kStopWords =
      new absl::flat_hash_set<absl::string_view>{
          "a",     "about", "all",  "also", "am",    "an",    "and",   "any",
          "are",   "as",    "at",   "be",   "been",  "but",   "by",    "can",
          "could", "did",   "do",   "does", "for",   "from",  "get",   "had",
          "has",   "have",  "how",  "i",    "if",    "in",    "into",  "is",
          "it",    "its",   "just", "me",   "my",    "no",    "not",   "of",
          "on",    "one",   "only", "or",   "our",   "out",   "s",     "should",
          "so",    "t",     "than", "that", "the",   "their", "them",  "then",
          "there", "these", "they", "this", "those", "to",    "up",    "us",
          "was",   "we",    "were", "what", "when",  "where", "which", "will",
          "with",  "would", "you",  "your"};
  return kStopWords->contains(word);
}

namespace {

// FNV-1a: stable across processes, so stored embeddings stay comparable.
uint64_t Fnv1a(absl::string_view data, uint64_t seed) {
  uint64_t h = 14695981039346656037ull ^ seed;
  for (char c : data) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  // A final mix so the low bits (the bucket) and the top bit (the sign) are
  // independent.
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 32;
  return h;
}

// Seeds keep the feature families apart in hash space.
constexpr uint64_t kWordSeed = 1;
constexpr uint64_t kBigramSeed = 2;
constexpr uint64_t kCharSeed = 3;
// Weights per occurrence, relative to a whole word. Character n-grams match
// inflections ("reset"/"resetting"); bigrams add phrase order but, hashed
// into few buckets, mostly add noise. Tuned on the quickstart questions.
constexpr float kBigramWeight = 0.25f;
constexpr float kCharWeight = 0.5f;
constexpr size_t kMinCharN = 3;
constexpr size_t kMaxCharN = 5;

struct Feature {
  int count = 0;
  float weight = 0;  // The feature family's weight.
};

// Feature hash -> occurrences, for one text.
absl::flat_hash_map<uint64_t, Feature> Features(absl::string_view text) {
  std::vector<std::string> words = Words(text);
  std::vector<std::string> content;
  for (std::string& word : words) {
    if (!IsStopWord(word)) content.push_back(word);
  }
  // A text of stop words only still deserves a non-zero vector.
  if (!content.empty()) words = std::move(content);

  absl::flat_hash_map<uint64_t, Feature> features;
  auto add = [&features](uint64_t hash, float weight) {
    Feature& feature = features[hash];
    ++feature.count;
    feature.weight = weight;
  };
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& word = words[i];
    add(Fnv1a(word, kWordSeed), 1.0f);
    if (i > 0) {
      add(Fnv1a(absl::StrCat(words[i - 1], " ", word), kBigramSeed),
          kBigramWeight);
    }
    const std::string padded = absl::StrCat("<", word, ">");
    const absl::string_view view = padded;
    for (size_t n = kMinCharN; n <= kMaxCharN; ++n) {
      for (size_t start = 0; start + n <= view.size(); ++start) {
        add(Fnv1a(view.substr(start, n), kCharSeed), kCharWeight);
      }
    }
  }
  return features;
}

}  // namespace

// dim < 1 would leave no bucket to hash into.
HashedNgramEmbedder::HashedNgramEmbedder(int dim)
    : dim_(std::max(1, dim)), idf_(dim_, 1.0f) {}

void HashedNgramEmbedder::Fit(absl::Span<const absl::string_view> documents) {
  std::vector<int> document_frequency(dim_, 0);
  for (absl::string_view document : documents) {
    absl::flat_hash_set<int> buckets;
    for (const auto& [hash, feature] : Features(document)) {
      buckets.insert(static_cast<int>(hash % dim_));
    }
    for (int bucket : buckets) ++document_frequency[bucket];
  }
  const double n = static_cast<double>(documents.size());
  for (int b = 0; b < dim_; ++b) {
    // Smoothed, so a bucket in every document still counts a little.
    idf_[b] =
        static_cast<float>(std::log((n + 1) / (document_frequency[b] + 1)) + 1);
  }
}

std::vector<float> HashedNgramEmbedder::Embed(absl::string_view text) const {
  std::vector<float> vector(dim_, 0.0f);
  for (const auto& [hash, feature] : Features(text)) {
    const int bucket = static_cast<int>(hash % dim_);
    // A sign bit spreads collisions so they cancel instead of piling up.
    const float sign = (hash >> 63) ? -1.0f : 1.0f;
    const float tf =
        feature.weight * (1.0f + std::log(static_cast<float>(feature.count)));
    vector[bucket] += sign * tf * idf_[bucket];
  }
  double norm = 0;
  for (float v : vector) norm += static_cast<double>(v) * v;
  if (norm > 0) {
    const float scale = static_cast<float>(1.0 / std::sqrt(norm));
    for (float& v : vector) v *= scale;
  }
  return vector;
}

bool HashedNgramEmbedder::SetWeights(std::vector<float> weights) {
  if (static_cast<int>(weights.size()) != dim_) return false;
  idf_ = std::move(weights);
  return true;
}

}  // namespace arbiter::retrieval
