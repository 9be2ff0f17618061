#pragma once

// The arrays of a FAISS index that grow with its rows and that a search
// reads at random: what huge pages and growth ahead of need work on.

#include <faiss/IndexFlatCodes.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>

#include <type_traits>

namespace arbiter::retrieval {

// T, const when Index is.
template <typename Index, typename T>
using ConstLike = std::conditional_t<std::is_const_v<Index>, const T, T>;

// Calls visit(array, rewritten) for each: the flat vectors (an index's own,
// or an HNSW graph's storage), the graph's links and levels, IVF's direct
// map. `rewritten` arrays also change at rows already there (graph links
// gain and lose neighbours as rows are inserted); the others only grow.
// `Index` is faiss::Index or const faiss::Index.
template <typename Index, typename Visit>
void ForEachFaissArray(Index& index, Visit&& visit) {
  Index* vectors = &index;
  if (auto* hnsw = dynamic_cast<ConstLike<Index, faiss::IndexHNSW>*>(vectors)) {
    visit(hnsw->hnsw.neighbors, /*rewritten=*/true);
    visit(hnsw->hnsw.offsets, /*rewritten=*/false);
    visit(hnsw->hnsw.levels, /*rewritten=*/false);
    vectors = hnsw->storage;
  }
  if (auto* flat =
          dynamic_cast<ConstLike<Index, faiss::IndexFlatCodes>*>(vectors)) {
    visit(flat->codes, /*rewritten=*/false);
  }
  if (auto* ivf = dynamic_cast<ConstLike<Index, faiss::IndexIVF>*>(vectors)) {
    visit(ivf->direct_map.array, /*rewritten=*/false);
  }
}

}  // namespace arbiter::retrieval
