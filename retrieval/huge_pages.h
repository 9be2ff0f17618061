#pragma once

// A search reads its index's vectors and graph links at random: with 4 KiB
// pages nearly every node it visits costs a TLB miss as well as a cache
// miss. Where the kernel leaves transparent huge pages to the program
// ("madvise" mode, Debian's default), large arrays have to ask for them.

#include <cstddef>

namespace faiss {
struct Index;
}  // namespace faiss

namespace arbiter::retrieval {

// Asks for 2 MiB pages over the whole 2 MiB-aligned part of [data, data +
// bytes); with `collapse_now`, also has the kernel move what is already
// there onto them at once (Linux >= 6.1) instead of some time later. A
// no-op where huge pages are unavailable or the range is under 2 MiB.
// True when the kernel took all the advice asked for.
bool AdviseHugePages(const void* data, size_t bytes, bool collapse_now);

// Moves a FAISS index's flat vectors (its own, or an HNSW graph's storage),
// graph links and direct map (faiss_arrays.h) onto huge pages at once.
void MoveToHugePages(const faiss::Index& index);

}  // namespace arbiter::retrieval
