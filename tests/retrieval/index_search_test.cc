#include "retrieval/index_search.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVFFlat.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "retrieval/inner_product.h"

namespace arbiter::retrieval {
namespace {

using ::testing::SizeIs;

constexpr int kDim = 48;  // Not a multiple of 16: the SIMD tails run.

// Clustered unit vectors, like embeddings.
std::vector<float> MakeVectors(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise;
  std::vector<float> centres(40 * kDim);
  for (float& c : centres) c = noise(rng);
  std::vector<float> vectors(static_cast<size_t>(n) * kDim);
  for (int i = 0; i < n; ++i) {
    float* row = &vectors[static_cast<size_t>(i) * kDim];
    const float* centre = &centres[(rng() % 40) * kDim];
    double norm = 0;
    for (int d = 0; d < kDim; ++d) {
      row[d] = centre[d] + 0.6f * noise(rng);
      norm += row[d] * row[d];
    }
    for (int d = 0; d < kDim; ++d)
      row[d] /= static_cast<float>(std::sqrt(norm));
  }
  return vectors;
}

double Reference(const float* a, const float* b, size_t dim) {
  double sum = 0;
  for (size_t i = 0; i < dim; ++i) sum += double{a[i]} * b[i];
  return sum;
}

// The exact k best labels passing `keep`, best first.
std::vector<int64_t> BruteForce(const std::vector<float>& vectors,
                                const float* query, int k,
                                const std::function<bool(int64_t)>& keep) {
  std::vector<std::pair<double, int64_t>> scored;
  const int64_t n = static_cast<int64_t>(vectors.size()) / kDim;
  for (int64_t label = 0; label < n; ++label) {
    if (!keep(label)) continue;
    scored.push_back({Reference(query, &vectors[label * kDim], kDim), label});
  }
  const size_t top = std::min<size_t>(k, scored.size());
  std::partial_sort(scored.begin(), scored.begin() + top, scored.end(),
                    std::greater<>());
  std::vector<int64_t> labels;
  for (size_t i = 0; i < top; ++i) labels.push_back(scored[i].second);
  return labels;
}

std::vector<int64_t> LabelsOf(const std::vector<ScoredLabel>& found) {
  std::vector<int64_t> labels;
  for (const ScoredLabel& hit : found) labels.push_back(hit.label);
  return labels;
}

bool Any(int64_t) { return true; }

TEST(InnerProductTest, MatchesADoublePrecisionSumAtEveryLength) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> value(-1, 1);
  for (size_t dim :
       {1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 128, 384, 1024}) {
    std::vector<float> a(dim), b(dim);
    for (size_t i = 0; i < dim; ++i) {
      a[i] = value(rng);
      b[i] = value(rng);
    }
    EXPECT_NEAR(InnerProduct(a.data(), b.data(), dim),
                Reference(a.data(), b.data(), dim), 1e-4 * std::sqrt(dim))
        << "dim " << dim;
  }
  EXPECT_EQ(InnerProduct(nullptr, nullptr, 0), 0);
}

double ReferenceU8(const float* a, const uint8_t* codes, size_t dim) {
  double sum = 0;
  for (size_t i = 0; i < dim; ++i) sum += double{a[i]} * codes[i];
  return sum;
}

TEST(InnerProductU8Test, EveryKernelMatchesADoublePrecisionSum) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> value(-1, 1);
  std::uniform_int_distribution<int> code(0, 255);
  const auto kernels = internal::InnerProductU8Kernels();
  ASSERT_GE(kernels.size(), 1u);
  for (size_t dim : {1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 40, 64, 100, 128,
                     383, 384, 1024}) {
    std::vector<float> a(dim);
    std::vector<uint8_t> codes(dim);
    for (size_t i = 0; i < dim; ++i) {
      a[i] = value(rng);
      codes[i] = static_cast<uint8_t>(code(rng));
    }
    // Codes at both ends: 255 must not read as -1, nor 128 as -128.
    codes[0] = 255;
    if (dim > 1) codes[dim - 1] = 128;
    if (dim > 2) codes[dim / 2] = 0;
    const double want = ReferenceU8(a.data(), codes.data(), dim);
    const double tolerance = 255 * 1e-5 * std::sqrt(dim);
    EXPECT_NEAR(InnerProductU8(a.data(), codes.data(), dim), want, tolerance)
        << "dispatched, dim " << dim;
    for (const auto& [name, kernel] : kernels) {
      EXPECT_NEAR(kernel(a.data(), codes.data(), dim), want, tolerance)
          << name << ", dim " << dim;
    }
  }
  for (const auto& [name, kernel] : kernels) {
    EXPECT_EQ(kernel(nullptr, nullptr, 0), 0) << name;
  }
}

TEST(InnerProductU8Test, AllMaximalCodesSumTheQuery) {
  const std::vector<float> a(100, 0.5f);
  const std::vector<uint8_t> codes(100, 255);
  for (const auto& [name, kernel] : internal::InnerProductU8Kernels()) {
    EXPECT_FLOAT_EQ(kernel(a.data(), codes.data(), 100), 100 * 0.5f * 255)
        << name;
  }
}

class IndexSearchTest : public ::testing::Test {
 protected:
  static constexpr int kRows = 4000;
  static constexpr int kQueries = 50;
  static constexpr int kK = 10;

  void SetUp() override {
    vectors_ = MakeVectors(kRows, 11);
    queries_ = MakeVectors(kQueries, 12);
    flat_.add(kRows, vectors_.data());
    hnsw_.hnsw.efConstruction = 80;
    hnsw_.add(kRows, vectors_.data());
  }
  const float* Query(int q) const { return &queries_[q * kDim]; }

  std::vector<float> vectors_;
  std::vector<float> queries_;
  faiss::IndexFlatIP flat_{kDim};
  faiss::IndexHNSWFlat hnsw_{kDim, 16, faiss::METRIC_INNER_PRODUCT};
};

TEST_F(IndexSearchTest, ScanFlatIsExactAndOrdered) {
  for (int q = 0; q < kQueries; ++q) {
    const std::vector<ScoredLabel> found = ScanFlat(flat_, Query(q), kK, Any);
    EXPECT_EQ(LabelsOf(found), BruteForce(vectors_, Query(q), kK, Any))
        << "query " << q;
    for (const ScoredLabel& hit : found) {
      EXPECT_NEAR(hit.score,
                  Reference(Query(q), &vectors_[hit.label * kDim], kDim), 1e-5);
    }
  }
}

TEST_F(IndexSearchTest, ScanFlatKeepsOnlyAcceptedLabels) {
  auto every_seventh = [](int64_t label) { return label % 7 == 0; };
  for (int q = 0; q < 5; ++q) {
    EXPECT_EQ(LabelsOf(ScanFlat(flat_, Query(q), kK, every_seventh)),
              BruteForce(vectors_, Query(q), kK, every_seventh));
  }
  // Fewer accepted than k: all of them.
  auto three = [](int64_t label) { return label < 3; };
  EXPECT_THAT(ScanFlat(flat_, Query(0), kK, three), SizeIs(3));
  EXPECT_THAT(ScanFlat(flat_, Query(0), 0, Any), SizeIs(0));
}

TEST_F(IndexSearchTest, IvfFlatSearchFindsWhatFaissFinds) {
  faiss::IndexFlatIP quantizer(kDim);
  faiss::IndexIVFFlat ivf(&quantizer, kDim, 40, faiss::METRIC_INNER_PRODUCT);
  ivf.cp.seed = 5;
  ivf.train(kRows, vectors_.data());
  ivf.add(kRows, vectors_.data());
  std::vector<float> scores(kK);
  std::vector<faiss::Index::idx_t> labels(kK);
  for (int nprobe : {1, 4, 40}) {
    ivf.nprobe = nprobe;
    for (int q = 0; q < kQueries; ++q) {
      ivf.search(1, Query(q), kK, scores.data(), labels.data());
      const std::vector<ScoredLabel> found =
          SearchIvfFlat(ivf, Query(q), kK, nprobe, Any);
      // Same candidates, same order (a probed list may hold fewer than k:
      // FAISS pads with -1); scores differ only by rounding.
      const auto valid = std::count_if(labels.begin(), labels.end(),
                                       [](auto label) { return label >= 0; });
      ASSERT_THAT(found, SizeIs(valid)) << "nprobe " << nprobe;
      for (int i = 0; i < valid; ++i) {
        EXPECT_NEAR(found[i].score, scores[i], 1e-5) << "nprobe " << nprobe;
      }
    }
  }
  // Every list probed: exact.
  EXPECT_EQ(LabelsOf(SearchIvfFlat(ivf, Query(2), kK, 40, Any)),
            BruteForce(vectors_, Query(2), kK, Any));
  auto odd = [](int64_t label) { return label % 2 == 1; };
  EXPECT_EQ(LabelsOf(SearchIvfFlat(ivf, Query(3), kK, 40, odd)),
            BruteForce(vectors_, Query(3), kK, odd));
  EXPECT_THAT(SearchIvfFlat(ivf, Query(3), kK, 0, Any), SizeIs(0));
}

TEST_F(IndexSearchTest, HnswGraphSearchHasHighRecallAndTrueScores) {
  int hits = 0;
  for (int q = 0; q < kQueries; ++q) {
    const std::vector<ScoredLabel> found =
        SearchHnswGraph(hnsw_, Query(q), kK, 128, Any);
    ASSERT_THAT(found, SizeIs(kK));
    const std::vector<int64_t> truth = BruteForce(vectors_, Query(q), kK, Any);
    const absl::flat_hash_set<int64_t> want(truth.begin(), truth.end());
    for (size_t i = 0; i < found.size(); ++i) {
      hits += want.contains(found[i].label) ? 1 : 0;
      EXPECT_NEAR(found[i].score,
                  Reference(Query(q), &vectors_[found[i].label * kDim], kDim),
                  1e-5);
      if (i > 0) {
        EXPECT_GE(found[i - 1].score, found[i].score);
      }
    }
  }
  EXPECT_GE(hits, 0.95 * kQueries * kK);
}

TEST_F(IndexSearchTest, HnswGraphSearchIsNoWorseThanFaissOwnSearch) {
  int ours = 0;
  int theirs = 0;
  std::vector<float> scores(kK);
  std::vector<faiss::Index::idx_t> labels(kK);
  hnsw_.hnsw.efSearch = 32;
  for (int q = 0; q < kQueries; ++q) {
    const std::vector<int64_t> truth = BruteForce(vectors_, Query(q), kK, Any);
    const absl::flat_hash_set<int64_t> want(truth.begin(), truth.end());
    for (const ScoredLabel& hit : SearchHnswGraph(hnsw_, Query(q), kK, 32, Any))
      ours += want.contains(hit.label) ? 1 : 0;
    hnsw_.search(1, Query(q), kK, scores.data(), labels.data());
    for (auto label : labels) theirs += want.contains(label) ? 1 : 0;
  }
  EXPECT_GE(ours, theirs - kQueries * kK / 100);
}

TEST_F(IndexSearchTest, HnswGraphSearchReturnsOnlyAcceptedAndStillFindsK) {
  // One label in ten: the beam must walk past rejected neighbours.
  auto tenth = [](int64_t label) { return label % 10 == 3; };
  int hits = 0;
  for (int q = 0; q < kQueries; ++q) {
    const std::vector<ScoredLabel> found =
        SearchHnswGraph(hnsw_, Query(q), kK, 64, tenth);
    ASSERT_THAT(found, SizeIs(kK)) << "query " << q;
    for (const ScoredLabel& hit : found) EXPECT_TRUE(tenth(hit.label));
    const std::vector<int64_t> truth =
        BruteForce(vectors_, Query(q), kK, tenth);
    const absl::flat_hash_set<int64_t> want(truth.begin(), truth.end());
    for (const ScoredLabel& hit : found) hits += want.contains(hit.label);
  }
  EXPECT_GE(hits, 0.9 * kQueries * kK);
}

TEST_F(IndexSearchTest, HnswGraphSearchIsRepeatableAcrossSearches) {
  // The per-thread visited table is reused: a second pass must not see the
  // first pass's marks.
  std::vector<std::vector<int64_t>> first;
  for (int q = 0; q < kQueries; ++q) {
    first.push_back(LabelsOf(SearchHnswGraph(hnsw_, Query(q), kK, 48, Any)));
  }
  for (int pass = 0; pass < 3; ++pass) {
    for (int q = 0; q < kQueries; ++q) {
      EXPECT_EQ(LabelsOf(SearchHnswGraph(hnsw_, Query(q), kK, 48, Any)),
                first[q]);
    }
  }
}

TEST_F(IndexSearchTest, HnswGraphSearchHandlesSmallBeamsAndEmptyIndexes) {
  // ef below k: the beam widens to k.
  EXPECT_THAT(SearchHnswGraph(hnsw_, Query(0), 25, 4, Any), SizeIs(25));
  EXPECT_THAT(SearchHnswGraph(hnsw_, Query(0), 0, 64, Any), SizeIs(0));
  auto none = [](int64_t) { return false; };
  EXPECT_THAT(SearchHnswGraph(hnsw_, Query(0), kK, 64, none), SizeIs(0));
  faiss::IndexHNSWFlat empty(kDim, 16, faiss::METRIC_INNER_PRODUCT);
  EXPECT_THAT(SearchHnswGraph(empty, Query(0), kK, 64, Any), SizeIs(0));
}

TEST_F(IndexSearchTest, VisitedTableGrowsWithTheIndex) {
  // A thread that searched a small index first must cover a larger one.
  faiss::IndexHNSWFlat small(kDim, 16, faiss::METRIC_INNER_PRODUCT);
  small.add(100, vectors_.data());
  EXPECT_THAT(SearchHnswGraph(small, Query(0), kK, 32, Any), SizeIs(kK));
  const std::vector<ScoredLabel> found =
      SearchHnswGraph(hnsw_, Query(0), kK, 64, Any);
  ASSERT_THAT(found, SizeIs(kK));
  EXPECT_EQ(found.front().label,
            BruteForce(vectors_, Query(0), 1, Any).front());
}

TEST_F(IndexSearchTest, SearchesStayRightWhenTheVisitedEpochWraps) {
  // The visited marks are 16-bit epochs: past 65535 searches they wrap and
  // the table must be cleared, or stale marks would hide nodes.
  faiss::IndexHNSWFlat small(kDim, 8, faiss::METRIC_INNER_PRODUCT);
  small.add(300, vectors_.data());
  const std::vector<int64_t> expected =
      LabelsOf(SearchHnswGraph(small, Query(1), kK, 32, Any));
  for (int i = 0; i < 70'000; ++i) {
    const std::vector<int64_t> labels =
        LabelsOf(SearchHnswGraph(small, Query(1), kK, 32, Any));
    if (labels != expected) {
      FAIL() << "search " << i << " differs";
    }
  }
}

}  // namespace
}  // namespace arbiter::retrieval
