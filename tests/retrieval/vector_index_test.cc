#include "retrieval/vector_index.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>

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
Data MakeData(int n, uint32_t seed = 7, int dim = kDim) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise;
  std::vector<float> centers(50 * dim);
  for (float& c : centers) c = noise(rng);
  Data data;
  for (int i = 0; i < n; ++i) {
    const int center = static_cast<int>(rng() % 50);
    float norm = 0;
    std::vector<float> row(dim);
    for (int d = 0; d < dim; ++d) {
      row[d] = centers[center * dim + d] + 0.5f * noise(rng);
      norm += row[d] * row[d];
    }
    for (float& x : row) x /= std::sqrt(norm);
    data.ids.push_back(1000 + i);
    data.vectors.insert(data.vectors.end(), row.begin(), row.end());
  }
  return data;
}

absl::Span<const float> Row(const Data& data, int i, int dim = kDim) {
  return absl::MakeConstSpan(data.vectors).subspan(i * dim, dim);
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
  // Near exact at this breadth; IVF-PQ too, by re-ranking its candidates.
  EXPECT_GE(static_cast<double>(hits) / total, 0.9);
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
  const AllowedIds allowed({data.ids[11], data.ids[3001], data.ids[7002],
                            data.ids[9999], data.ids[42]});
  index->Remove({data.ids[42]});
  auto got = index->Search(Row(data, 0), 10, &allowed);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_THAT(*got, SizeIs(4));  // The fifth is removed.
  for (int64_t id : IdsOf(*got)) {
    EXPECT_TRUE(allowed.contains(id));
    EXPECT_NE(id, data.ids[42]);
  }
  // A broad filter (every other id) still fills k.
  std::vector<int64_t> every_other;
  for (size_t i = 0; i < data.ids.size(); i += 2) {
    every_other.push_back(data.ids[i]);
  }
  const AllowedIds half(every_other);
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

// Growing ahead of need, at 1 KiB a row: a few thousand rows pass the size
// from which growth is worth it.
constexpr int kWideDim = 256;

class GrowthTest : public ::testing::TestWithParam<IndexKind> {
 protected:
  GrowthTest() : data_(MakeData(6'500, 11, kWideDim)) {}

  std::unique_ptr<VectorIndex> BuildFirst(int rows) {
    IndexOptions options;
    options.kind = GetParam();
    auto index = VectorIndex::Build(
        kWideDim, options, absl::MakeConstSpan(data_.ids).first(rows),
        absl::MakeConstSpan(data_.vectors).first(rows * kWideDim));
    EXPECT_TRUE(index.ok()) << index.status();
    return *std::move(index);
  }
  // Adds rows [from, to) in batches a writer might send.
  void AddRows(VectorIndex& index, int from, int to) {
    for (int i = from; i < to; i += 250) {
      const int n = std::min(250, to - i);
      ASSERT_TRUE(index
                      .Add(absl::MakeConstSpan(data_.ids).subspan(i, n),
                           absl::MakeConstSpan(data_.vectors)
                               .subspan(static_cast<size_t>(i) * kWideDim,
                                        static_cast<size_t>(n) * kWideDim))
                      .ok());
    }
  }
  absl::Span<const float> WideRow(int i) const {
    return Row(data_, i, kWideDim);
  }

  const Data data_;
};

TEST_P(GrowthTest, BuiltAndLoadedIndexesHaveRoomAhead) {
  auto index = BuildFirst(6'000);  // 6 MiB of vectors.
  EXPECT_FALSE(index->GrowthDue());
  EXPECT_EQ(index->StartGrowth(), nullptr);
  auto image = index->Serialize();
  ASSERT_TRUE(image.ok());
  auto loaded = VectorIndex::Deserialize(*image);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE((*loaded)->GrowthDue());
}

// The copy is made slice by slice while rows are added (graph links of old
// rows change too) and removed between slices; swapped in, it must leave
// the index exactly as it was, with room for more.
TEST_P(GrowthTest, CopyMadeDuringWritesSwapsInUnchanged) {
  auto index = BuildFirst(3'000);  // Room for 6,000 rows.
  AddRows(*index, 3'000, 4'600);
  ASSERT_TRUE(index->GrowthDue());
  // Every array, however small: the id map and graph links, which change
  // at old rows, with the vectors.
  auto growth = index->StartGrowth(/*min_bytes=*/1);
  ASSERT_NE(growth, nullptr);
  // Vectors, one id and one live byte per row at least.
  EXPECT_GE(growth->bytes(), int64_t{4'600} * (kWideDim * 4 + 9));
  int next = 4'600, slices = 0;
  std::vector<int64_t> removed;
  for (bool more = true; more; ++slices) {
    more = growth->CopySome(/*slice_bytes=*/256 << 10);
    AddRows(*index, next, next + 40);
    next += 40;
    removed.push_back(data_.ids[slices * 53]);
    ASSERT_EQ(index->Remove({removed.back()}), 1);
  }
  EXPECT_GT(slices, 10);
  growth->MoveToHugePages();
  auto before = index->Serialize();
  ASSERT_TRUE(before.ok());
  ASSERT_TRUE(growth->Finish());
  growth.reset();  // The old arrays go.
  auto after = index->Serialize();
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(*after == *before) << "the swapped-in copy differs";
  EXPECT_FALSE(index->GrowthDue());

  // Writes after the swap land in the new arrays; every row is found.
  AddRows(*index, next, 6'500);
  for (int i = 0; i < 6'500; i += 61) {
    auto top = index->Search(WideRow(i), 1, nullptr, 256);
    ASSERT_TRUE(top.ok()) << top.status();
    ASSERT_THAT(*top, SizeIs(1));
    if (absl::c_linear_search(removed, data_.ids[i])) {
      EXPECT_NE(top->front().id, data_.ids[i]) << "removed row returned";
    } else {
      EXPECT_EQ(top->front().id, data_.ids[i]) << i;
    }
  }
}

// A writer that outgrows an array before the copy is swapped in reallocates
// it itself: the copy is stale, refused, and the index is untouched.
TEST_P(GrowthTest, WriterThatOutgrowsTheRoomMakesTheCopyStale) {
  auto index = BuildFirst(3'000);
  AddRows(*index, 3'000, 4'600);
  auto growth = index->StartGrowth();
  ASSERT_NE(growth, nullptr);
  EXPECT_TRUE(growth->CopySome(/*slice_bytes=*/1 << 20));
  AddRows(*index, 4'600, 6'500);  // Past the room for 6,000.
  EXPECT_FALSE(growth->CopySome());
  auto before = index->Serialize();
  ASSERT_TRUE(before.ok());
  EXPECT_FALSE(growth->Finish());
  growth.reset();
  EXPECT_TRUE(*index->Serialize() == *before);
  auto top = index->Search(WideRow(6'499), 1, nullptr, 256);
  ASSERT_TRUE(top.ok());
  EXPECT_EQ(top->front().id, data_.ids[6'499]);
}

// IVF kinds keep their vectors in per-list arrays that grow one by one.
INSTANTIATE_TEST_SUITE_P(Kinds, GrowthTest,
                         ::testing::Values(IndexKind::kFlat, IndexKind::kHnsw),
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

// IVF-PQ re-ranks its PQ candidates against an 8-bit copy of the vectors.
// 20k clustered 64-d vectors (PQ 16 x 8 bits), 200 held-out queries.
class IvfPqReRankingTest : public ::testing::Test {
 protected:
  static constexpr int kDim64 = 64;
  static constexpr int kRows = 20'000;
  static constexpr int kQueries = 200;

  static void SetUpTestSuite() {
    all_ = new Data(MakeData(kRows + kQueries, 11, kDim64));
    base_ = new Data;
    base_->ids.assign(all_->ids.begin(), all_->ids.begin() + kRows);
    base_->vectors.assign(all_->vectors.begin(),
                          all_->vectors.begin() + kRows * kDim64);
  }
  static void TearDownTestSuite() {
    delete refined_;
    delete plain_;
    delete base_;
    delete all_;
  }

  // Built on first use: ctest runs each test in its own process, and IVF-PQ
  // training dominates the suite's time.
  static const VectorIndex& Refined() {
    if (refined_ == nullptr) {
      refined_ = Build(kDefaultPqRefineFactor).release();
    }
    return *refined_;
  }
  static const VectorIndex& Plain() {
    if (plain_ == nullptr) plain_ = Build(1).release();
    return *plain_;
  }

  static std::unique_ptr<VectorIndex> Build(int refine_factor) {
    IndexOptions options;
    options.kind = IndexKind::kIvfPq;
    options.pq_refine_factor = refine_factor;
    auto index =
        VectorIndex::Build(kDim64, options, base_->ids, base_->vectors);
    EXPECT_TRUE(index.ok()) << index.status();
    EXPECT_EQ((*index)->kind(), IndexKind::kIvfPq);
    return *std::move(index);
  }

  // A copy of an index through its image: cheaper than building one.
  static std::unique_ptr<VectorIndex> Reload(const VectorIndex& index) {
    auto image = index.Serialize();
    EXPECT_TRUE(image.ok()) << image.status();
    auto loaded = VectorIndex::Deserialize(*image);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return *std::move(loaded);
  }

  static absl::Span<const float> Query(int q) {
    return Row(*all_, kRows + q, kDim64);
  }

  static float Dot(absl::Span<const float> a, int row) {
    float sum = 0;
    for (int d = 0; d < kDim64; ++d)
      sum += a[d] * base_->vectors[row * kDim64 + d];
    return sum;
  }

  // The exact k best row numbers for query q among rows passing `keep`.
  static std::vector<int64_t> Exact(int q, int k,
                                    const std::function<bool(int)>& keep) {
    std::vector<std::pair<float, int64_t>> scored;
    for (int r = 0; r < kRows; ++r) {
      if (keep(r)) scored.push_back({Dot(Query(q), r), base_->ids[r]});
    }
    std::partial_sort(scored.begin(), scored.begin() + k, scored.end(),
                      std::greater<>());
    std::vector<int64_t> ids;
    for (int i = 0; i < k; ++i) ids.push_back(scored[i].second);
    return ids;
  }

  static double Recall(const VectorIndex& index) {
    int hits = 0, total = 0;
    for (int q = 0; q < kQueries; ++q) {
      auto got = index.Search(Query(q), 10);
      EXPECT_TRUE(got.ok()) << got.status();
      if (!got.ok()) continue;
      for (int64_t id : Exact(q, 10, [](int) { return true; })) {
        hits += absl::c_linear_search(IdsOf(*got), id) ? 1 : 0;
        ++total;
      }
    }
    return static_cast<double>(hits) / total;
  }

  static Data* all_;
  static Data* base_;
  static VectorIndex* refined_;
  static VectorIndex* plain_;
};

Data* IvfPqReRankingTest::all_ = nullptr;
Data* IvfPqReRankingTest::base_ = nullptr;
VectorIndex* IvfPqReRankingTest::refined_ = nullptr;
VectorIndex* IvfPqReRankingTest::plain_ = nullptr;

TEST_F(IvfPqReRankingTest, ReachesHighRecallAndBeatsPqScoresAlone) {
  const double refined = Recall(Refined());
  const double plain = Recall(Plain());
  RecordProperty("recall_refined", std::to_string(refined));
  RecordProperty("recall_plain", std::to_string(plain));
  EXPECT_GE(refined, 0.9) << "PQ alone: " << plain;
  EXPECT_GE(refined - plain, 0.1) << refined << " against " << plain;
}

TEST_F(IvfPqReRankingTest, ScoresAreCloseToTrueInnerProductsAndOrdered) {
  for (int q = 0; q < 20; ++q) {
    auto got = Refined().Search(Query(q), 10);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_THAT(*got, SizeIs(10));
    for (size_t i = 0; i < got->size(); ++i) {
      const Neighbor& nb = (*got)[i];
      // 8 bits over each dimension's range: errors of a few thousandths.
      EXPECT_NEAR(nb.score, Dot(Query(q), static_cast<int>(nb.id - 1000)), 0.01)
          << "query " << q << " id " << nb.id;
      if (i > 0) {
        EXPECT_LE(nb.score, (*got)[i - 1].score);
      }
    }
  }
}

TEST_F(IvfPqReRankingTest, SerializedImageKeepsResultsScoresAndLabels) {
  auto same = [&](const VectorIndex& a, const VectorIndex& b, int q,
                  const AllowedIds* allowed) {
    auto x = a.Search(Query(q), 10, allowed);
    auto y = b.Search(Query(q), 10, allowed);
    ASSERT_TRUE(x.ok() && y.ok());
    ASSERT_EQ(x->size(), y->size());
    for (size_t i = 0; i < x->size(); ++i) {
      EXPECT_EQ((*x)[i].id, (*y)[i].id) << "query " << q << " rank " << i;
      EXPECT_EQ((*x)[i].score, (*y)[i].score) << "query " << q;
    }
  };
  std::vector<int64_t> every_third;
  for (int r = 0; r < kRows; r += 3) every_third.push_back(base_->ids[r]);
  const AllowedIds allowed(every_third);
  auto loaded = Reload(Refined());
  EXPECT_EQ(loaded->MemoryBytes(), Refined().MemoryBytes());
  for (int q = 0; q < 30; ++q) {
    same(Refined(), *loaded, q, nullptr);
    same(Refined(), *loaded, q, &allowed);
  }
  // Tombstones survive a second round trip.
  loaded->Remove({base_->ids[3], base_->ids[4]});
  auto again = Reload(*loaded);
  EXPECT_EQ(again->tombstones(), 2);
  for (int q = 0; q < 30; ++q) same(*loaded, *again, q, &allowed);
  // Rows added after loading get codes at the labels FAISS gives them: each
  // query, added as a new row, is its own best match with a true score.
  std::vector<int64_t> ids;
  for (int q = 0; q < 10; ++q) ids.push_back(900'000 + q);
  const absl::Span<const float> queries =
      absl::MakeConstSpan(all_->vectors.data() + kRows * kDim64, 10 * kDim64);
  ASSERT_TRUE(loaded->Add(ids, queries).ok());
  ASSERT_TRUE(again->Add(ids, queries).ok());
  for (int q = 0; q < 10; ++q) {
    same(*loaded, *again, q, nullptr);
    auto top = again->Search(Query(q), 1);
    ASSERT_TRUE(top.ok());
    EXPECT_EQ(top->front().id, 900'000 + q);
    EXPECT_NEAR(top->front().score, 1.0, 0.01);
  }
}

TEST_F(IvfPqReRankingTest, FilteredSearchesStillReturnKWhenKExist) {
  auto index = Reload(Refined());
  // 95% tombstoned: the first probes find fewer than k live candidates.
  std::vector<int64_t> dead;
  for (int r = 0; r < kRows; ++r) {
    if (r % 20 != 0) dead.push_back(base_->ids[r]);
  }
  ASSERT_EQ(index->Remove(dead), static_cast<int64_t>(dead.size()));
  for (int q = 0; q < 20; ++q) {
    auto got = index->Search(Query(q), 10);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_THAT(*got, SizeIs(10));
    const std::vector<int64_t> want =
        Exact(q, 10, [](int r) { return r % 20 == 0; });
    int hits = 0;
    for (const Neighbor& nb : *got) {
      EXPECT_EQ((nb.id - 1000) % 20, 0) << nb.id << " is tombstoned";
      hits += absl::c_linear_search(want, nb.id) ? 1 : 0;
    }
    EXPECT_GE(hits, 7) << "query " << q;
  }
  // A handful of scattered allowed ids: found by the exact fallback.
  const AllowedIds allowed({base_->ids[0], base_->ids[4000], base_->ids[8000],
                            base_->ids[12000], base_->ids[19980],
                            base_->ids[1]});
  auto few = index->Search(Query(0), 10, &allowed);
  ASSERT_TRUE(few.ok());
  EXPECT_THAT(*few, SizeIs(5));  // ids[1] is tombstoned.
  EXPECT_TRUE(std::is_sorted(
      few->begin(), few->end(),
      [](const Neighbor& a, const Neighbor& b) { return a.score > b.score; }));
}

TEST_F(IvfPqReRankingTest, CopyIsCountedInMemoryAndOptional) {
  // dim bytes per vector, on top of the PQ codes.
  EXPECT_GE(Refined().MemoryBytes() - Plain().MemoryBytes(),
            int64_t{kRows} * kDim64);
  EXPECT_LE(Refined().MemoryBytes() - Plain().MemoryBytes(),
            int64_t{kRows} * kDim64 + 4096);
  // Without re-ranking the image still round-trips.
  auto image = Plain().Serialize();
  ASSERT_TRUE(image.ok());
  auto loaded = VectorIndex::Deserialize(*image);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(IdsOf(*(*loaded)->Search(Query(0), 10)),
            IdsOf(*Plain().Search(Query(0), 10)));
}

TEST_F(IvfPqReRankingTest, ImagesBeforeReRankingLoadExceptIvfPq) {
  // Format 1 had no re-ranking section (format 2 writes a 0 dimension count
  // for kinds without one) and a '1' as its magic's last byte.
  auto as_format1 = [](std::string image, size_t section) {
    image[7] = '1';
    image.resize(image.size() - section);
    return image;
  };
  auto flat = BuildOrDie(MakeData(300), IndexKind::kFlat);
  auto old_flat = VectorIndex::Deserialize(as_format1(*flat->Serialize(), 4));
  ASSERT_TRUE(old_flat.ok()) << old_flat.status();
  EXPECT_EQ((*old_flat)->size(), 300);
  EXPECT_EQ(IdsOf(*(*old_flat)->Search(Row(MakeData(300), 5), 3)),
            IdsOf(*flat->Search(Row(MakeData(300), 5), 3)));
  // An old IVF-PQ image is refused so the caller rebuilds it with the copy.
  const size_t section = 4 + kDim64 * 8 + size_t{kRows} * kDim64;
  auto old_pq =
      VectorIndex::Deserialize(as_format1(*Refined().Serialize(), section));
  EXPECT_EQ(old_pq.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(old_pq.status().message(), HasSubstr("before re-ranking"));
}

TEST_F(IvfPqReRankingTest, DamagedCopyIsRejected) {
  const std::string image = *Refined().Serialize();
  for (size_t cut : {size_t{1}, size_t{kDim64}, size_t{kRows} * kDim64 + 8}) {
    EXPECT_EQ(VectorIndex::Deserialize(image.substr(0, image.size() - cut))
                  .status()
                  .code(),
              absl::StatusCode::kDataLoss)
        << "cut " << cut;
  }
  EXPECT_EQ(VectorIndex::Deserialize(image + "x").status().code(),
            absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace arbiter::retrieval
