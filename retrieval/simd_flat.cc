#include "retrieval/simd_flat.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/impl/DistanceComputer.h>

#include <utility>

#include "retrieval/inner_product.h"

namespace arbiter::retrieval {
namespace {

class SimdInnerProductComputer final : public faiss::FlatCodesDistanceComputer {
 public:
  explicit SimdInnerProductComputer(const faiss::IndexFlat& storage)
      : faiss::FlatCodesDistanceComputer(storage.codes.data(),
                                         storage.code_size),
        vectors_(storage.get_xb()),
        dim_(static_cast<size_t>(storage.d)) {}

  void set_query(const float* query) override { query_ = query; }
  float distance_to_code(const uint8_t* code) override {
    return InnerProduct(query_, reinterpret_cast<const float*>(code), dim_);
  }
  float symmetric_dis(idx_t i, idx_t j) override {
    return InnerProduct(vectors_ + i * dim_, vectors_ + j * dim_, dim_);
  }

 private:
  const float* const vectors_;
  const size_t dim_;
  const float* query_ = nullptr;
};

// An IndexFlatIP in every other respect, so FAISS writes it as one.
class SimdFlatIP final : public faiss::IndexFlatIP {
 public:
  explicit SimdFlatIP(int dim) : faiss::IndexFlatIP(dim) {}
  faiss::FlatCodesDistanceComputer* get_FlatCodesDistanceComputer()
      const override {
    return new SimdInnerProductComputer(*this);
  }
};

}  // namespace

void UseSimdDistances(faiss::IndexHNSW& index) {
  auto* flat = dynamic_cast<faiss::IndexFlat*>(index.storage);
  if (flat == nullptr || dynamic_cast<SimdFlatIP*>(flat) != nullptr ||
      flat->metric_type != faiss::METRIC_INNER_PRODUCT || !index.own_fields) {
    return;
  }
  auto* simd = new SimdFlatIP(flat->d);
  simd->codes = std::move(flat->codes);
  simd->ntotal = flat->ntotal;
  simd->is_trained = flat->is_trained;
  delete flat;
  index.storage = simd;
}

}  // namespace arbiter::retrieval
