#pragma once

// Debian's FAISS computes one vector's distance with portable loops, and
// its HNSW graph build does little else: these hand FAISS a flat store whose
// distance computer uses arbiter's SIMD inner products instead.

namespace faiss {
struct IndexHNSW;
}  // namespace faiss

namespace arbiter::retrieval {

// Moves the vectors of an inner-product HNSW index's flat storage into one
// that computes distances with InnerProduct (inner_product.h), so graph
// builds and later additions use it. The graph and the serialized form are
// unchanged (it is still an IndexFlatIP). Does nothing for other storage.
void UseSimdDistances(faiss::IndexHNSW& index);

}  // namespace arbiter::retrieval
