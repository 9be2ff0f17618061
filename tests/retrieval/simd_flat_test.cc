#include "retrieval/simd_flat.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "retrieval/inner_product.h"

namespace arbiter::retrieval {
namespace {

constexpr int kDim = 40;  // Not a multiple of 16: the SIMD tails run.

std::vector<float> UnitVectors(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise;
  std::vector<float> vectors(static_cast<size_t>(n) * kDim);
  for (int i = 0; i < n; ++i) {
    float* row = &vectors[static_cast<size_t>(i) * kDim];
    double norm = 0;
    for (int d = 0; d < kDim; ++d) {
      row[d] = noise(rng);
      norm += row[d] * row[d];
    }
    for (int d = 0; d < kDim; ++d) {
      row[d] /= static_cast<float>(std::sqrt(norm));
    }
  }
  return vectors;
}

// Recall@10 of FAISS's own HNSW search against brute force.
double Recall(const faiss::IndexHNSWFlat& index,
              const std::vector<float>& vectors,
              const std::vector<float>& queries, int nq) {
  faiss::IndexFlatIP exact(kDim);
  exact.add(static_cast<faiss::Index::idx_t>(vectors.size() / kDim),
            vectors.data());
  constexpr int k = 10;
  std::vector<float> d1(nq * k), d2(nq * k);
  std::vector<faiss::Index::idx_t> l1(nq * k), l2(nq * k);
  exact.search(nq, queries.data(), k, d1.data(), l1.data());
  index.search(nq, queries.data(), k, d2.data(), l2.data());
  int found = 0;
  for (int q = 0; q < nq; ++q) {
    for (int i = 0; i < k; ++i) {
      for (int j = 0; j < k; ++j) found += l1[q * k + i] == l2[q * k + j];
    }
  }
  return static_cast<double>(found) / (nq * k);
}

TEST(SimdFlatTest, DistancesAreInnerProducts) {
  faiss::IndexHNSWFlat index(kDim, 16, faiss::METRIC_INNER_PRODUCT);
  UseSimdDistances(index);
  std::vector<float> vectors = UnitVectors(50, 1);
  index.add(50, vectors.data());
  std::unique_ptr<faiss::DistanceComputer> distance(
      index.storage->get_distance_computer());
  distance->set_query(&vectors[3 * kDim]);
  for (int i = 0; i < 50; ++i) {
    float expected = 0;
    for (int d = 0; d < kDim; ++d) {
      expected += vectors[3 * kDim + d] * vectors[i * kDim + d];
    }
    EXPECT_NEAR((*distance)(i), expected, 1e-5) << i;
    EXPECT_NEAR(distance->symmetric_dis(3, i), expected, 1e-5) << i;
  }
}

// The graph built with SIMD distances is as good as FAISS's own, and the
// index still serializes as a plain IndexHNSWFlat.
TEST(SimdFlatTest, GraphIsAsGoodAndSerializesAsFaiss) {
  const int n = 4000, nq = 100;
  std::vector<float> vectors = UnitVectors(n, 2);
  std::vector<float> queries = UnitVectors(nq, 3);
  faiss::IndexHNSWFlat plain(kDim, 16, faiss::METRIC_INNER_PRODUCT);
  faiss::IndexHNSWFlat simd(kDim, 16, faiss::METRIC_INNER_PRODUCT);
  UseSimdDistances(simd);
  plain.hnsw.efConstruction = simd.hnsw.efConstruction = 40;
  plain.hnsw.efSearch = simd.hnsw.efSearch = 32;
  plain.add(n, vectors.data());
  simd.add(n, vectors.data());
  const double plain_recall = Recall(plain, vectors, queries, nq);
  const double simd_recall = Recall(simd, vectors, queries, nq);
  EXPECT_GT(simd_recall, 0.8);
  EXPECT_GT(simd_recall, plain_recall - 0.03);

  faiss::VectorIOWriter writer;
  faiss::write_index(&simd, &writer);
  faiss::VectorIOReader reader;
  reader.data = writer.data;
  std::unique_ptr<faiss::Index> loaded(faiss::read_index(&reader));
  auto* hnsw = dynamic_cast<faiss::IndexHNSWFlat*>(loaded.get());
  ASSERT_NE(hnsw, nullptr);
  EXPECT_EQ(hnsw->ntotal, n);
  UseSimdDistances(*hnsw);  // After a load too.
  EXPECT_DOUBLE_EQ(Recall(*hnsw, vectors, queries, nq), simd_recall);
}

}  // namespace
}  // namespace arbiter::retrieval
