#include "retrieval/allowed_ids.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <vector>

namespace arbiter::retrieval {
namespace {

// Dense ids (a bitmap) and sparse ones (a hash set) answer alike.
TEST(AllowedIdsTest, ContainsExactlyTheGivenIds) {
  std::mt19937_64 rng(7);
  for (int64_t spread : {int64_t{3}, int64_t{1} << 40}) {
    std::vector<int64_t> ids;
    std::set<int64_t> expected;
    for (int i = 0; i < 5000; ++i) {
      const int64_t id = 1000 + static_cast<int64_t>(rng() % (5000 * spread));
      ids.push_back(id);
      expected.insert(id);
    }
    AllowedIds allowed(ids);
    // Sorted, each once.
    EXPECT_TRUE(std::equal(allowed.ids().begin(), allowed.ids().end(),
                           expected.begin(), expected.end()));
    for (int64_t probe = 0; probe < 20000; ++probe) {
      EXPECT_EQ(allowed.contains(probe), expected.contains(probe)) << probe;
    }
    for (int64_t id : ids) EXPECT_TRUE(allowed.contains(id));
    EXPECT_FALSE(allowed.contains(-1));
    EXPECT_FALSE(allowed.contains(std::numeric_limits<int64_t>::max()));
  }
}

TEST(AllowedIdsTest, EmptyAndExtremeIds) {
  AllowedIds none({});
  EXPECT_TRUE(none.empty());
  EXPECT_FALSE(none.contains(0));
  AllowedIds extremes({std::numeric_limits<int64_t>::min(),
                       std::numeric_limits<int64_t>::max(), 0});
  EXPECT_TRUE(extremes.contains(std::numeric_limits<int64_t>::min()));
  EXPECT_TRUE(extremes.contains(std::numeric_limits<int64_t>::max()));
  EXPECT_TRUE(extremes.contains(0));
  EXPECT_FALSE(extremes.contains(1));
  AllowedIds one({42});
  EXPECT_TRUE(one.contains(42));
  EXPECT_FALSE(one.contains(41));
  EXPECT_FALSE(one.contains(43));
}

}  // namespace
}  // namespace arbiter::retrieval
