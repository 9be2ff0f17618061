#include "retrieval/huge_pages.h"

#include <faiss/IndexFlat.h>

#include <cstdint>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace arbiter::retrieval {
namespace {

// AnonHugePages of the mapping holding `address`, from /proc/self/smaps.
int64_t HugeKibAt(const void* address) {
  std::ifstream smaps("/proc/self/smaps");
  const auto at = reinterpret_cast<uintptr_t>(address);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    uintptr_t begin = 0, end = 0;
    char dash = 0;
    std::istringstream range(line);
    if (range >> std::hex >> begin >> dash >> end && dash == '-' &&
        line.find(':') > line.find(' ')) {
      inside = begin <= at && at < end;
      continue;
    }
    if (inside && line.rfind("AnonHugePages:", 0) == 0) {
      return std::stoll(line.substr(14));
    }
  }
  return -1;
}

TEST(HugePagesTest, SmallRangesAreLeftAlone) {
  std::vector<char> small(4096, 'x');
  EXPECT_FALSE(AdviseHugePages(small.data(), small.size(), true));
  EXPECT_FALSE(AdviseHugePages(nullptr, 1 << 30, true));
}

TEST(HugePagesTest, CollapsedArrayKeepsItsContentsOnHugePages) {
  std::vector<int32_t> array(8 << 20);  // 32 MiB, written before the advice.
  std::iota(array.begin(), array.end(), 7);
  if (!AdviseHugePages(array.data(), array.size() * 4, true)) {
    GTEST_SKIP() << "this kernel has no transparent huge pages to give";
  }
  EXPECT_GE(HugeKibAt(array.data() + array.size() / 2), 2048);
  for (size_t i = 0; i < array.size(); ++i) {
    ASSERT_EQ(array[i], static_cast<int32_t>(i) + 7) << i;
  }
}

TEST(HugePagesTest, FaissVectorsMoveOntoHugePages) {
  faiss::IndexFlatIP index(256);
  std::vector<float> rows(256 * 32768, 0.5f);  // 32 MiB of vectors.
  index.add(32768, rows.data());
  if (!AdviseHugePages(rows.data(), rows.size() * 4, true)) {
    GTEST_SKIP() << "this kernel has no transparent huge pages to give";
  }
  MoveToHugePages(index);
  EXPECT_GE(HugeKibAt(index.codes.data() + index.codes.size() / 2), 2048);
  EXPECT_EQ(index.get_xb()[256 * 32767 + 255], 0.5f);
}

}  // namespace
}  // namespace arbiter::retrieval
