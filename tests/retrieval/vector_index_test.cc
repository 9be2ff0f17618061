#include "retrieval/vector_index.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/algorithm/container.h"

namespace arbiter::retrieval {
namespace {

using ::testing::Each;
using ::testing::HasSubstr;
using ::testing::SizeIs;

constexpr int kDim = 32;

// Clustered unit vectors, like embeddings; ids start at 1000 to catch code
// that confuses ids with FAISS labels.
struct Data {
  std::vector<int64_t> ids;
  std::vector<float> vectors;
};
Data MakeData(int n, uint32_t seed = 7) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise;
  std::vector<float> centers(50 * kDim);
  for (float& c : centers) c = noise(rng);
  Data data;
  for (int i = 0; i < n; ++i) {
    const int center = static_cast<int>(rng() % 50);
    float norm = 0;
    std::vector<float> row(kDim);
    for (int d = 0; d < kDim; ++d) {
      row[d] = centers[center * kDim + d] + 0.5f * noise(rng);
      norm += row[d] * row[d];
    }
    for (float& x : row) x /= std::sqrt(norm);
    data.ids.push_back(1000 + i);
    data.vectors.insert(data.vectors.end(), row.begin(), row.end());
  }
  return data;
}

absl::Span<const float> Row(const Data& data, int i) {
  return absl::MakeConstSpan(data.vectors).subspan(i * kDim, kDim);
}

std::unique_ptr<VectorIndex> BuildOrDie(const Data& data, IndexKind kind) {
  IndexOptions options;
  options.kind = kind;
  auto index = VectorIndex::Build(kDim, options, data.ids, data.vectors);
  EXPECT_TRUE(index.ok()) << index.status();
  return *std::move(index);
}

std::vector<int64_t> IdsOf(const std::vector<Neighbor>& neighbors) {
  std::vector<int64_t> ids;
  for (const Neighbor& n : neighbors) ids.push_back(n.id);
  return ids;
}

TEST(IndexKindTest, NamesRoundTripAndUnknownIsNamed) {
  for (IndexKind kind : {IndexKind::kAuto, IndexKind::kFlat, IndexKind::kHnsw,
                         IndexKind::kIvfFlat, IndexKind::kIvfPq}) {
    EXPECT_EQ(*ParseIndexKind(IndexKindName(kind)), kind);
  }
  auto bad = ParseIndexKind("annoy");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("\"annoy\""));
}

TEST(IndexKindTest, AutoFollowsSizeAndMemory) {
  IndexOptions options;
  EXPECT_EQ(ChooseIndexKind(49'999, 384, options), IndexKind::kFlat);
  EXPECT_EQ(ChooseIndexKind(1'000'000, 384, options), IndexKind::kHnsw);
  options.auto_memory_budget_bytes = 100 << 20;  // 1M x 384-d HNSW is ~1.8 GB.
  EXPECT_EQ(ChooseIndexKind(1'000'000, 384, options), IndexKind::kIvfPq);
  options.kind = IndexKind::kIvfFlat;
  EXPECT_EQ(ChooseIndexKind(10, 384, options), IndexKind::kIvfFlat);
}

class EveryKindTest : public ::testing::TestWithParam<IndexKind> {};

TEST_P(EveryKindTest, FindsNeighboursWithHighRecall) {
  const Data data = MakeData(12'000);
  auto index = BuildOrDie(data, GetParam());
  ASSERT_EQ(index->kind(), GetParam());
  EXPECT_EQ(index->size(), 12'000);
  auto exact = BuildOrDie(data, IndexKind::kFlat);
  int hits = 0, total = 0;
  for (int q = 0; q < 50; ++q) {
    auto want = exact->Search(Row(data, q * 97), 10);
    auto got = index->Search(Row(data, q * 97), 10, nullptr, 64);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_THAT(*got, SizeIs(10));
    for (int64_t id : IdsOf(*want)) {
      hits += absl::c_linear_search(IdsOf(*got), id) ? 1 : 0;
      ++total;
    }
    EXPECT_TRUE(std::is_sorted(got->begin(), got->end(),
                               [](const Neighbor& a, const Neighbor& b) {
                                 return a.score > b.score;
                               }));
  }
  // PQ codes are lossy; the others should be near exact at this breadth.
  EXPECT_GE(static_cast<double>(hits) / total,
            GetParam() == IndexKind::kIvfPq ? 0.5 : 0.9);
}

TEST_P(EveryKindTest, NeverReturnsARemovedIdAndReplacesOnAdd) {
  const Data data = MakeData(12'000);
  auto index = BuildOrDie(data, GetParam());
  // Remove a query's own neighbourhood: the best answers are gone.
  auto before = index->Search(Row(data, 5), 20);
  ASSERT_TRUE(before.ok());
  const std::vector<int64_t> removed = IdsOf(*before);
  EXPECT_EQ(index->Remove(removed), 20);
  EXPECT_EQ(index->Remove(removed), 0);  // Already gone.
  EXPECT_EQ(index->tombstones(), 20);
  auto after = index->Search(Row(data, 5), 20);
  ASSERT_TRUE(after.ok());
  EXPECT_THAT(*after, SizeIs(20));
  for (int64_t id : IdsOf(*after)) {
    EXPECT_FALSE(absl::c_linear_search(removed, id)) << id;
  }
  // Re-adding an id under a new vector replaces the old row.
  const int64_t id = data.ids[100];
  ASSERT_TRUE(index->Add({id}, Row(data, 5)).ok());
  EXPECT_EQ(index->tombstones(), 21);
  auto top = index->Search(Row(data, 5), 1);
  ASSERT_TRUE(top.ok());
  EXPECT_EQ(top->front().id, id);
}

TEST_P(EveryKindTest, AllowListStillReturnsKWhenKExist) {
  const Data data = MakeData(12'000);
  auto index = BuildOrDie(data, GetParam());
  // A few far-away allowed ids: the approximate search alone misses them.
  absl::flat_hash_set<int64_t> allowed = {data.ids[11], data.ids[3001],
                                          data.ids[7002], data.ids[9999],
                                          data.ids[42]};
  index->Remove({data.ids[42]});
  auto got = index->Search(Row(data, 0), 10, &allowed);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_THAT(*got, SizeIs(4));  // The fifth is removed.
  for (int64_t id : IdsOf(*got)) {
    EXPECT_TRUE(allowed.contains(id));
    EXPECT_NE(id, data.ids[42]);
  }
  // A broad filter (every other id) still fills k.
  absl::flat_hash_set<int64_t> half;
  for (size_t i = 0; i < data.ids.size(); i += 2) half.insert(data.ids[i]);
  auto broad = index->Search(Row(data, 1), 10, &half);
  ASSERT_TRUE(broad.ok());
  EXPECT_THAT(*broad, SizeIs(10));
  for (int64_t id : IdsOf(*broad)) EXPECT_TRUE(half.contains(id));
}

TEST_P(EveryKindTest, SerializedImageSearchesTheSame) {
  const Data data = MakeData(12'000);
  auto index = BuildOrDie(data, GetParam());
  index->Remove({data.ids[1], data.ids[2]});
  auto image = index->Serialize();
  ASSERT_TRUE(image.ok()) << image.status();
  auto loaded = VectorIndex::Deserialize(*image);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->kind(), index->kind());
  EXPECT_EQ((*loaded)->size(), index->size());
  EXPECT_EQ((*loaded)->tombstones(), 2);
  EXPECT_FALSE((*loaded)->Contains(data.ids[1]));
  for (int q : {1, 2, 300}) {
    EXPECT_EQ(IdsOf(*index->Search(Row(data, q), 10)),
              IdsOf(*(*loaded)->Search(Row(data, q), 10)));
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, EveryKindTest,
                         ::testing::Values(IndexKind::kFlat, IndexKind::kHnsw,
                                           IndexKind::kIvfFlat,
                                           IndexKind::kIvfPq),
                         [](const auto& info) {
                           return std::string(IndexKindName(info.param));
                         });

TEST(VectorIndexTest, TooFewVectorsForIvfFallsBackToExact) {
  const Data data = MakeData(50);
  EXPECT_EQ(BuildOrDie(data, IndexKind::kIvfFlat)->kind(), IndexKind::kFlat);
  // PQ needs ~10k vectors to train; IVF-Flat is the next best.
  EXPECT_EQ(BuildOrDie(MakeData(5000), IndexKind::kIvfPq)->kind(),
            IndexKind::kIvfFlat);
}

TEST(VectorIndexTest, EmptyIndexAndBadShapes) {
  auto index = BuildOrDie(Data{}, IndexKind::kHnsw);
  auto none = index->Search(std::vector<float>(kDim, 0.1f), 5);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  auto wrong_dim = index->Search(std::vector<float>(kDim + 1, 0.1f), 5);
  EXPECT_THAT(wrong_dim.status().message(), HasSubstr("33 dimensions"));
  auto wrong_rows = index->Add({1, 2}, std::vector<float>(kDim, 0.1f));
  EXPECT_THAT(wrong_rows.message(), HasSubstr("expected 2 rows"));
  auto zero_k = index->Search(std::vector<float>(kDim, 0.1f), 0);
  EXPECT_EQ(zero_k.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(VectorIndexTest, CorruptImagesAreRejected) {
  const Data data = MakeData(200);
  auto image = *BuildOrDie(data, IndexKind::kHnsw)->Serialize();
  EXPECT_EQ(VectorIndex::Deserialize("garbage").status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(VectorIndex::Deserialize(image.substr(0, image.size() / 2))
                .status()
                .code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(VectorIndex::Deserialize(image.substr(0, 40)).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(VectorIndexTest, MemoryCountsVectorsGraphAndMaps) {
  const Data data = MakeData(2000);
  auto flat = BuildOrDie(data, IndexKind::kFlat);
  auto hnsw = BuildOrDie(data, IndexKind::kHnsw);
  EXPECT_GE(flat->MemoryBytes(), 2000 * kDim * 4 + 2000 * 8);
  EXPECT_GT(hnsw->MemoryBytes(), flat->MemoryBytes());  // Plus the links.
}

}  // namespace
}  // namespace arbiter::retrieval
