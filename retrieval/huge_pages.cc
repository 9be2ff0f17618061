#include "retrieval/huge_pages.h"

#include <sys/mman.h>

#include <cstdint>

#include "retrieval/faiss_arrays.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux 6.1; older headers lack it.
#endif

namespace arbiter::retrieval {

bool AdviseHugePages(const void* data, size_t bytes, bool collapse_now) {
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  const uintptr_t begin =
      (reinterpret_cast<uintptr_t>(data) + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end =
      (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHugePage - 1);
  if (data == nullptr || end <= begin) return false;
  void* start = reinterpret_cast<void*>(begin);
  // Advice only: a kernel without THP (or an old one) refuses, and the
  // pages stay as they are.
  if (madvise(start, end - begin, MADV_HUGEPAGE) != 0) return false;
  return !collapse_now || madvise(start, end - begin, MADV_COLLAPSE) == 0;
}

void MoveToHugePages(const faiss::Index& index) {
  ForEachFaissArray(index, [](const auto& array, bool) {
    AdviseHugePages(array.data(), array.size() * sizeof(array[0]),
                    /*collapse_now=*/true);
  });
}

}  // namespace arbiter::retrieval
