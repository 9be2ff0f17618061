#include "retrieval/vector_index.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <queue>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "retrieval/faiss_arrays.h"
#include "retrieval/huge_pages.h"
#include "retrieval/index_search.h"
#include "retrieval/inner_product.h"
#include "retrieval/simd_flat.h"

namespace arbiter::retrieval {
namespace {

using faiss_idx = faiss::Index::idx_t;

// Keeps labels whose id is live and, with an allow-list, allowed.
class LiveSelector final : public faiss::IDSelector {
 public:
  // `live` is read only when some row is dead: each read is a likely cache
  // miss per candidate.
  LiveSelector(const std::vector<uint8_t>* live,
               const std::vector<int64_t>& id_of_label,
               const AllowedIds* allowed)
      : live_(live), id_of_label_(id_of_label), allowed_(allowed) {
    if (live_ != nullptr) reads_[read_count_++] = {live_->data(), 1};
    if (allowed_ != nullptr) {
      reads_[read_count_++] = {id_of_label_.data(), sizeof(int64_t)};
    }
  }
  // Reads the live byte first: the 8-byte id only for an allow-list.
  bool is_member(faiss_idx label) const override {
    return (live_ == nullptr || (*live_)[label] != 0) &&
           (allowed_ == nullptr || allowed_->contains(id_of_label_[label]));
  }
  // What is_member reads per label, for a graph search to load ahead.
  absl::Span<const FilterPrefetch> reads() const {
    return absl::MakeConstSpan(reads_.data(), read_count_);
  }

 private:
  const std::vector<uint8_t>* live_;
  const std::vector<int64_t>& id_of_label_;
  const AllowedIds* allowed_;
  std::array<FilterPrefetch, 2> reads_;
  size_t read_count_ = 0;
};

int64_t DefaultNlist(int64_t n) {
  return std::max<int64_t>(1, static_cast<int64_t>(4 * std::sqrt(n)));
}

// The largest divisor of dim that keeps sub-vectors at least 4 wide.
int DefaultPqM(int dim) {
  for (int m = std::max(1, dim / 4); m > 1; --m) {
    if (dim % m == 0) return m;
  }
  return 1;
}

// Format 2 appends IVF-PQ's re-ranking copy; format 1 images still load.
constexpr char kMagic[8] = {'A', 'R', 'B', 'V', 'I', 'D', 'X', '2'};
constexpr char kMagicV1[8] = {'A', 'R', 'B', 'V', 'I', 'D', 'X', '1'};
static_assert(sizeof(kMagic) == sizeof(kMagicV1));
// Images hold IndexOptions as its bytes: a new field must take the place
// of padding (as pq_refine_factor did) or come with a new format.
static_assert(sizeof(IndexOptions) == 48 &&
              std::is_trivially_copyable_v<IndexOptions>);

void Put(std::string& out, const void* data, size_t size) {
  out.append(static_cast<const char*>(data), size);
}
template <typename T>
void PutValue(std::string& out, T value) {
  Put(out, &value, sizeof(value));
}

// Appends FAISS's stream straight to the image: one copy of the vectors,
// with no zero-filled staging buffer, is all a snapshot holds writers for.
class StringWriter final : public faiss::IOWriter {
 public:
  explicit StringWriter(std::string& out) : out_(out) {}
  size_t operator()(const void* ptr, size_t size, size_t nitems) override {
    out_.append(static_cast<const char*>(ptr), size * nitems);
    return nitems;
  }

 private:
  std::string& out_;
};

// Reads fixed-size values off the front of a byte image.
class Reader {
 public:
  explicit Reader(absl::string_view bytes) : rest_(bytes) {}
  template <typename T>
  bool Get(T& value) {
    if (rest_.size() < sizeof(T)) return false;
    std::memcpy(&value, rest_.data(), sizeof(T));
    rest_.remove_prefix(sizeof(T));
    return true;
  }
  bool GetArray(std::vector<int64_t>& values, int64_t n) {
    if (n < 0 || rest_.size() / sizeof(int64_t) < static_cast<size_t>(n)) {
      return false;
    }
    values.resize(n);
    if (n > 0) std::memcpy(values.data(), rest_.data(), n * sizeof(int64_t));
    rest_.remove_prefix(n * sizeof(int64_t));
    return true;
  }
  // The next n bytes, if there are that many.
  bool Take(uint64_t n, absl::string_view& out) {
    if (rest_.size() < n) return false;
    out = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return true;
  }
  absl::string_view rest() const { return rest_; }

 private:
  absl::string_view rest_;
};

template <typename T>
bool GrowthDueFor(const std::vector<T>& array, size_t min_bytes) {
  return array.capacity() * sizeof(T) >= min_bytes &&
         array.size() * 4 >= array.capacity() * 3;
}

}  // namespace

// One array of a Growth: its copy in twice the room, filled slice by slice.
class GrowingArray {
 public:
  virtual ~GrowingArray() = default;
  // A writer outgrew the array itself: the copy's source is gone.
  [[nodiscard]] virtual bool Stale() const = 0;
  // Copies about `max_bytes` more (one element at least); returns how many.
  virtual size_t CopySome(size_t max_bytes) = 0;
  // All rows present at the start are copied.
  [[nodiscard]] virtual bool Done() const = 0;
  virtual void MoveToHugePages() = 0;
  virtual void Finish() = 0;
  [[nodiscard]] virtual size_t bytes() const = 0;
};

namespace {

template <typename T>
class GrowingArrayOf final : public GrowingArray {
 public:
  GrowingArrayOf(std::vector<T>& array, bool rewritten)
      : array_(array),
        rewritten_(rewritten),
        source_(array.data()),
        planned_(array.size()) {
    copy_.reserve(2 * array.capacity());
  }
  bool Stale() const override { return array_.data() != source_; }
  size_t CopySome(size_t max_bytes) override {
    const size_t from = copy_.size();
    const size_t n =
        std::min(planned_ - from, std::max<size_t>(1, max_bytes / sizeof(T)));
    // Inserting into reserved room writes each element once: no zero fill.
    copy_.insert(copy_.end(), array_.begin() + from, array_.begin() + from + n);
    return n * sizeof(T);
  }
  bool Done() const override { return copy_.size() == planned_; }
  void MoveToHugePages() override {
    AdviseHugePages(copy_.data(), copy_.size() * sizeof(T),
                    /*collapse_now=*/true);
  }
  void Finish() override {
    // Rewritten rows are copied again, into pages the first pass touched:
    // at memory speed, not page-fault speed.
    if (rewritten_) {
      std::copy(array_.begin(), array_.begin() + planned_, copy_.begin());
    }
    copy_.insert(copy_.end(), array_.begin() + planned_, array_.end());
    array_.swap(copy_);
  }
  size_t bytes() const override { return planned_ * sizeof(T); }

 private:
  std::vector<T>& array_;
  const bool rewritten_;
  const T* const source_;
  const size_t planned_;
  std::vector<T> copy_;  // After Finish: the old array, freed with this.
};

}  // namespace

VectorIndex::Growth::Growth() = default;
VectorIndex::Growth::~Growth() = default;

bool VectorIndex::Growth::CopySome(size_t slice_bytes) {
  for (const auto& array : arrays_) {
    if (array->Stale()) return false;
  }
  // Small arrays share a slice with the next.
  for (size_t budget = std::max<size_t>(1, slice_bytes);
       next_ < arrays_.size() && budget > 0;) {
    budget -= std::min(budget, arrays_[next_]->CopySome(budget));
    if (arrays_[next_]->Done()) ++next_;
  }
  return next_ < arrays_.size();
}

void VectorIndex::Growth::MoveToHugePages() {
  for (auto& array : arrays_) array->MoveToHugePages();
}

bool VectorIndex::Growth::Finish() {
  if (next_ < arrays_.size()) return false;  // Copying stopped: stale.
  for (const auto& array : arrays_) {
    if (array->Stale()) return false;
  }
  for (auto& array : arrays_) array->Finish();
  return true;
}

int64_t VectorIndex::Growth::bytes() const {
  int64_t total = 0;
  for (const auto& array : arrays_) total += array->bytes();
  return total;
}

absl::string_view IndexKindName(IndexKind kind) {
  switch (kind) {
    case IndexKind::kAuto:
      return "auto";
    case IndexKind::kFlat:
      return "flat";
    case IndexKind::kHnsw:
      return "hnsw";
    case IndexKind::kIvfFlat:
      return "ivf_flat";
    case IndexKind::kIvfPq:
      return "ivf_pq";
  }
  return "unknown";
}

absl::StatusOr<IndexKind> ParseIndexKind(absl::string_view name) {
  for (IndexKind kind : {IndexKind::kAuto, IndexKind::kFlat, IndexKind::kHnsw,
                         IndexKind::kIvfFlat, IndexKind::kIvfPq}) {
    if (name == IndexKindName(kind)) return kind;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown index kind \"", name,
                   "\"; expected auto, flat, hnsw, ivf_flat or ivf_pq"));
}

IndexKind ChooseIndexKind(int64_t vectors, int dim,
                          const IndexOptions& options) {
  if (options.kind != IndexKind::kAuto) return options.kind;
  if (vectors < options.auto_exact_below) return IndexKind::kFlat;
  // HNSW keeps every vector plus ~2M links of 4 bytes at the bottom layer.
  const int64_t hnsw_bytes =
      vectors * (int64_t{4} * dim + int64_t{8} * options.hnsw_m + 16);
  return hnsw_bytes <= options.auto_memory_budget_bytes ? IndexKind::kHnsw
                                                        : IndexKind::kIvfPq;
}

VectorIndex::VectorIndex(IndexKind kind, int dim, IndexOptions options,
                         std::unique_ptr<faiss::Index> index)
    : kind_(kind), dim_(dim), options_(options), index_(std::move(index)) {
  // Graph builds and additions compute distances with our SIMD loops.
  if (auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(index_.get())) {
    UseSimdDistances(*hnsw);
  }
}

VectorIndex::~VectorIndex() = default;

absl::StatusOr<std::unique_ptr<VectorIndex>> VectorIndex::Build(
    int dim, const IndexOptions& options, absl::Span<const int64_t> ids,
    absl::Span<const float> vectors) {
  if (dim < 1) return absl::InvalidArgumentError("dim: must be >= 1");
  if (vectors.size() != ids.size() * dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("vectors: expected ", ids.size(), " rows of ", dim,
                     " floats, got ", vectors.size(), " floats"));
  }
  const int64_t n = static_cast<int64_t>(ids.size());
  IndexKind kind = ChooseIndexKind(n, dim, options);
  int64_t nlist = options.ivf_nlist > 0 ? options.ivf_nlist : DefaultNlist(n);
  int pq_m = options.pq_m > 0 ? options.pq_m : DefaultPqM(dim);
  if (kind == IndexKind::kIvfPq && (dim % pq_m != 0 || n < 256 * 39)) {
    // PQ needs 256 centroids per sub-quantizer, each trained on ~39 points.
    kind = IndexKind::kIvfFlat;
  }
  if (kind == IndexKind::kIvfFlat || kind == IndexKind::kIvfPq) {
    nlist = std::min<int64_t>(nlist, n / 39);
    if (nlist < 2) kind = IndexKind::kFlat;  // Too few vectors to cluster.
  }
  try {
    std::unique_ptr<faiss::Index> index;
    switch (kind) {
      case IndexKind::kAuto:
      case IndexKind::kFlat:
        index = std::make_unique<faiss::IndexFlatIP>(dim);
        break;
      case IndexKind::kHnsw: {
        auto hnsw = std::make_unique<faiss::IndexHNSWFlat>(
            dim, options.hnsw_m, faiss::METRIC_INNER_PRODUCT);
        hnsw->hnsw.efConstruction = options.hnsw_ef_construction;
        hnsw->hnsw.efSearch = options.hnsw_ef_search;
        index = std::move(hnsw);
        break;
      }
      case IndexKind::kIvfFlat:
      case IndexKind::kIvfPq: {
        auto* quantizer = new faiss::IndexFlatIP(dim);
        std::unique_ptr<faiss::IndexIVF> ivf;
        if (kind == IndexKind::kIvfFlat) {
          ivf = std::make_unique<faiss::IndexIVFFlat>(
              quantizer, dim, nlist, faiss::METRIC_INNER_PRODUCT);
        } else {
          ivf = std::make_unique<faiss::IndexIVFPQ>(
              quantizer, dim, nlist, pq_m, 8, faiss::METRIC_INNER_PRODUCT);
        }
        ivf->own_fields = true;
        ivf->nprobe = std::min<int64_t>(options.ivf_nprobe, nlist);
        ivf->cp.seed = 1234;  // Same data, same index.
        omp_set_num_threads(omp_get_num_procs());
        ivf->train(n, vectors.data());
        // Exact fallback searches reconstruct vectors by label.
        ivf->set_direct_map_type(faiss::DirectMap::Array);
        index = std::move(ivf);
        break;
      }
    }
    auto built = std::unique_ptr<VectorIndex>(
        new VectorIndex(kind, dim, options, std::move(index)));
    if (kind == IndexKind::kIvfPq && options.pq_refine_factor > 1) {
      built->TrainRefine(vectors.data(), n);
      built->refine_codes_.reserve(static_cast<size_t>(n) * dim);
    }
    if (absl::Status s = built->AddRows(ids, vectors); !s.ok()) return s;
    built->ReserveRoomAhead();
    built->MoveToHugePages();
    return built;
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("building a ", IndexKindName(kind), " index: ", e.what()));
  }
}

absl::Status VectorIndex::Add(absl::Span<const int64_t> ids,
                              absl::Span<const float> vectors) {
  if (vectors.size() != ids.size() * dim_) {
    return absl::InvalidArgumentError(
        absl::StrCat("vectors: expected ", ids.size(), " rows of ", dim_,
                     " floats, got ", vectors.size(), " floats"));
  }
  Remove(ids);
  return AddRows(ids, vectors);
}

absl::Status VectorIndex::AddRows(absl::Span<const int64_t> ids,
                                  absl::Span<const float> vectors) {
  if (ids.empty()) return absl::OkStatus();
  const int64_t first = index_->ntotal;
  try {
    // Large adds (builds) may use every core; small ones stay on this thread.
    omp_set_num_threads(ids.size() > 1000 ? omp_get_num_procs() : 1);
    index_->add(static_cast<faiss_idx>(ids.size()), vectors.data());
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("adding vectors: ", e.what()));
  }
  // Same labels as FAISS: codes are appended in the order rows were added.
  if (refines()) {
    EncodeRefine(vectors.data(), static_cast<int64_t>(ids.size()));
  }
  id_of_label_.reserve(first + ids.size());
  live_.resize(first + ids.size(), 1);
  for (size_t i = 0; i < ids.size(); ++i) {
    id_of_label_.push_back(ids[i]);
    label_of_[ids[i]] = first + static_cast<int64_t>(i);
  }
  return absl::OkStatus();
}

template <typename Self, typename Visit>
void VectorIndex::ForEachGrowingArray(Self& self, Visit&& visit) {
  ForEachFaissArray(*self.index_, visit);
  visit(self.id_of_label_, /*rewritten=*/true);
  visit(self.live_, /*rewritten=*/true);
  visit(self.refine_codes_, /*rewritten=*/false);
}

void VectorIndex::MoveToHugePages() const {
  ForEachGrowingArray(*this, [](const auto& array, bool) {
    AdviseHugePages(array.data(), array.size() * sizeof(array[0]),
                    /*collapse_now=*/true);
  });
}

void VectorIndex::ReserveRoomAhead() {
  ForEachGrowingArray(*this, [](auto& array, bool) {
    array.reserve(std::max(array.capacity(), 2 * array.size()));
  });
}

bool VectorIndex::GrowthDue(size_t min_bytes) const {
  bool due = false;
  ForEachGrowingArray(*this, [&](const auto& array, bool) {
    due = due || GrowthDueFor(array, min_bytes);
  });
  return due;
}

std::unique_ptr<VectorIndex::Growth> VectorIndex::StartGrowth(
    size_t min_bytes) {
  auto growth = std::unique_ptr<Growth>(new Growth());
  ForEachGrowingArray(*this, [&](auto& array, bool rewritten) {
    if (!GrowthDueFor(array, min_bytes)) return;
    using T = typename std::decay_t<decltype(array)>::value_type;
    growth->arrays_.push_back(
        std::make_unique<GrowingArrayOf<T>>(array, rewritten));
  });
  if (growth->arrays_.empty()) return nullptr;
  return growth;
}

void VectorIndex::TrainRefine(const float* vectors, int64_t rows) {
  std::vector<float> max(dim_, -std::numeric_limits<float>::infinity());
  refine_min_.assign(dim_, std::numeric_limits<float>::infinity());
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = vectors + r * dim_;
    for (int j = 0; j < dim_; ++j) {
      refine_min_[j] = std::min(refine_min_[j], row[j]);
      max[j] = std::max(max[j], row[j]);
    }
  }
  refine_scale_.assign(dim_, 0);
  for (int j = 0; j < dim_; ++j) {
    if (!(max[j] >= refine_min_[j])) refine_min_[j] = max[j] = 0;  // No rows.
    refine_scale_[j] = (max[j] - refine_min_[j]) / 255;
  }
}

void VectorIndex::EncodeRefine(const float* vectors, int64_t rows) {
  std::vector<float> inverse(dim_);
  for (int j = 0; j < dim_; ++j) {
    inverse[j] = refine_scale_[j] > 0 ? 1 / refine_scale_[j] : 0;
  }
  const size_t first = refine_codes_.size();
  refine_codes_.resize(first + static_cast<size_t>(rows) * dim_);
  uint8_t* out = refine_codes_.data() + first;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = vectors + r * dim_;
    for (int j = 0; j < dim_; ++j) {
      // Out-of-range values (rows added after training) clamp; NaN is 0.
      const float v = (row[j] - refine_min_[j]) * inverse[j];
      *out++ = !(v > 0)     ? uint8_t{0}
               : v >= 255.f ? uint8_t{255}
                            : static_cast<uint8_t>(v + 0.5f);
    }
  }
}

VectorIndex::RefineQuery VectorIndex::PrepareRefine(const float* query) const {
  RefineQuery prepared;
  prepared.scaled.resize(dim_);
  double bias = 0;
  for (int j = 0; j < dim_; ++j) {
    prepared.scaled[j] = query[j] * refine_scale_[j];
    bias += double{query[j]} * refine_min_[j];
  }
  prepared.bias = static_cast<float>(bias);
  return prepared;
}

void VectorIndex::PrefetchRefineRow(int64_t label) const {
  const uint8_t* row = refine_codes_.data() + label * dim_;
  for (int offset = 0; offset < dim_; offset += 64) {
    __builtin_prefetch(row + offset);
  }
}

float VectorIndex::RefineScore(const RefineQuery& query, int64_t label) const {
  return query.bias + InnerProductU8(query.scaled.data(),
                                     refine_codes_.data() + label * dim_,
                                     static_cast<size_t>(dim_));
}

int64_t VectorIndex::Remove(absl::Span<const int64_t> ids) {
  int64_t removed = 0;
  for (int64_t id : ids) {
    auto it = label_of_.find(id);
    if (it == label_of_.end()) continue;
    id_of_label_[it->second] = -1;
    live_[it->second] = 0;
    label_of_.erase(it);
    ++tombstones_;
    ++removed;
  }
  return removed;
}

double VectorIndex::tombstone_share() const {
  return id_of_label_.empty()
             ? 0
             : static_cast<double>(tombstones_) / id_of_label_.size();
}

absl::StatusOr<std::vector<Neighbor>> VectorIndex::Search(
    absl::Span<const float> query, int k, const AllowedIds* allowed,
    int effort) const {
  if (static_cast<int>(query.size()) != dim_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "query: has ", query.size(), " dimensions; the index has ", dim_));
  }
  if (k < 1) return absl::InvalidArgumentError("k: must be >= 1");
  int64_t available = size();
  if (allowed != nullptr) {
    // Only whether k of them are live matters: stop counting there.
    available = 0;
    for (int64_t id : allowed->ids()) {
      if (label_of_.contains(id) && ++available >= k) break;
    }
  }
  const int want = static_cast<int>(std::min<int64_t>(k, available));
  if (want == 0) return std::vector<Neighbor>{};

  const bool filtered = allowed != nullptr || tombstones_ > 0;
  LiveSelector selector(tombstones_ > 0 ? &live_ : nullptr, id_of_label_,
                        allowed);
  std::vector<Neighbor> found;
  found.reserve(want);
  // Approximate kinds can miss allowed vectors when few pass the filter:
  // widen the search, then fall back to scoring every candidate exactly.
  try {
    if (kind_ != IndexKind::kIvfPq) {
      // Our own loops (index_search.h), with the selector as their filter.
      auto accept_live = [&](int64_t label) {
        return selector.is_member(label);
      };
      auto accept_any = [](int64_t) { return true; };
      const absl::FunctionRef<bool(int64_t)> accept =
          filtered ? absl::FunctionRef<bool(int64_t)>(accept_live)
                   : absl::FunctionRef<bool(int64_t)>(accept_any);
      for (int attempt = 0; attempt < 3; ++attempt) {
        std::vector<ScoredLabel> best;
        if (kind_ == IndexKind::kHnsw) {
          best = SearchHnswGraph(
              static_cast<const faiss::IndexHNSWFlat&>(*index_), query.data(),
              want,
              (effort > 0 ? effort : options_.hnsw_ef_search) << (2 * attempt),
              accept, selector.reads());
        } else if (kind_ == IndexKind::kIvfFlat) {
          const auto& ivf = static_cast<const faiss::IndexIVFFlat&>(*index_);
          best = SearchIvfFlat(
              ivf, query.data(), want,
              static_cast<int>(std::min<size_t>(
                  ivf.nlist,
                  static_cast<size_t>(effort > 0 ? effort : ivf.nprobe)
                      << (2 * attempt))),
              accept);
        } else {
          best = ScanFlat(static_cast<const faiss::IndexFlat&>(*index_),
                          query.data(), want, accept);
        }
        found.clear();
        for (const ScoredLabel& hit : best) {
          found.push_back({id_of_label_[hit.label], hit.score});
        }
        if (static_cast<int>(found.size()) == want) return found;
        if (kind_ == IndexKind::kFlat) break;  // Exact: nothing to widen.
      }
    } else {
      omp_set_num_threads(1);  // One query: no OpenMP team per request.
      // With re-ranking FAISS picks candidates by PQ score and the 8-bit
      // copy orders them; FAISS pads with -1 when fewer exist.
      const int64_t fetch =
          refines()
              ? std::min<int64_t>(int64_t{want} * options_.pq_refine_factor,
                                  index_->ntotal)
              : want;
      std::vector<float> scores(fetch);
      std::vector<faiss_idx> labels(fetch);
      RefineQuery refine_query;
      if (refines()) refine_query = PrepareRefine(query.data());
      std::vector<ScoredLabel> candidates;
      const auto* ivf = static_cast<const faiss::IndexIVF*>(index_.get());
      for (int attempt = 0; attempt < 3; ++attempt) {
        faiss::SearchParametersIVF params;
        params.nprobe = std::min<size_t>(
            ivf->nlist, static_cast<size_t>(effort > 0 ? effort : ivf->nprobe)
                            << (2 * attempt));
        params.sel = filtered ? &selector : nullptr;
        index_->search(1, query.data(), fetch, scores.data(), labels.data(),
                       &params);
        candidates.clear();
        for (int64_t i = 0; i < fetch; ++i) {
          if (labels[i] < 0 || id_of_label_[labels[i]] < 0) continue;
          candidates.push_back({scores[i], labels[i]});
        }
        if (refines()) {
          // Candidates' codes are scattered: load ahead of scoring so the
          // cache misses overlap instead of queueing one by one.
          constexpr size_t kAhead = 8;
          for (size_t i = 0; i < std::min(kAhead, candidates.size()); ++i) {
            PrefetchRefineRow(candidates[i].label);
          }
          for (size_t i = 0; i < candidates.size(); ++i) {
            if (i + kAhead < candidates.size()) {
              PrefetchRefineRow(candidates[i + kAhead].label);
            }
            candidates[i].score =
                RefineScore(refine_query, candidates[i].label);
          }
        }
        const size_t keep = std::min<size_t>(want, candidates.size());
        if (refines()) {
          std::partial_sort(candidates.begin(), candidates.begin() + keep,
                            candidates.end(),
                            [](const ScoredLabel& a, const ScoredLabel& b) {
                              return a.score > b.score;
                            });
        }
        found.clear();
        for (size_t i = 0; i < keep; ++i) {
          found.push_back(
              {id_of_label_[candidates[i].label], candidates[i].score});
        }
        if (static_cast<int>(found.size()) == want) return found;
      }
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("vector search: ", e.what()));
  }

  // Exact scoring of the candidates: the allow-list, or every live row.
  using Entry = std::pair<float, int64_t>;  // Min-heap of the best `want`.
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> best;
  std::vector<float> row(dim_);
  RefineQuery refine_query;
  if (refines()) refine_query = PrepareRefine(query.data());
  auto consider = [&](int64_t id, int64_t label) {
    float score;
    if (refines()) {
      // The 8-bit copy is closer to the vector than PQ's reconstruction.
      score = RefineScore(refine_query, label);
    } else {
      index_->reconstruct(label, row.data());
      score = InnerProduct(query.data(), row.data(), static_cast<size_t>(dim_));
    }
    if (static_cast<int>(best.size()) < want) {
      best.push({score, id});
    } else if (score > best.top().first) {
      best.pop();
      best.push({score, id});
    }
  };
  try {
    if (allowed != nullptr) {
      for (int64_t id : allowed->ids()) {
        auto it = label_of_.find(id);
        if (it != label_of_.end()) consider(id, it->second);
      }
    } else {
      for (const auto& [id, label] : label_of_) consider(id, label);
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("vector search: ", e.what()));
  }
  found.assign(best.size(), {});
  for (size_t i = found.size(); i-- > 0; best.pop()) {
    found[i] = {best.top().second, best.top().first};
  }
  return found;
}

int64_t VectorIndex::MemoryBytes() const {
  const int64_t n = index_->ntotal;
  int64_t bytes = 0;
  switch (kind_) {
    case IndexKind::kAuto:
    case IndexKind::kFlat:
      bytes = n * dim_ * 4;
      break;
    case IndexKind::kHnsw: {
      const auto& hnsw =
          static_cast<const faiss::IndexHNSW*>(index_.get())->hnsw;
      bytes = n * dim_ * 4 + hnsw.neighbors.size() * 4 +
              hnsw.offsets.size() * 8 + hnsw.levels.size() * 4;
      break;
    }
    case IndexKind::kIvfFlat:
    case IndexKind::kIvfPq: {
      const auto* ivf = static_cast<const faiss::IndexIVF*>(index_.get());
      // Codes and ids in the lists, the centroids, the direct map.
      bytes = n * (static_cast<int64_t>(ivf->code_size) + 8 + 8) +
              static_cast<int64_t>(ivf->nlist) * dim_ * 4;
      if (kind_ == IndexKind::kIvfPq) {
        bytes += int64_t{256} * dim_ * 4;  // PQ centroids.
      }
      break;
    }
  }
  // The id maps: one int64 and a live byte per row, a hash slot (key, value,
  // control byte) per live id.
  bytes += static_cast<int64_t>(id_of_label_.size()) * 9 +
           static_cast<int64_t>(label_of_.capacity()) * 17;
  // IVF-PQ's re-ranking copy: dim bytes per row, min and scale.
  bytes += static_cast<int64_t>(refine_codes_.size()) +
           static_cast<int64_t>(refine_min_.size() + refine_scale_.size()) * 4;
  return bytes;
}

std::vector<int64_t> VectorIndex::Ids() const {
  std::vector<int64_t> ids;
  ids.reserve(label_of_.size());
  for (const auto& [id, label] : label_of_) ids.push_back(id);
  return ids;
}

absl::StatusOr<std::string> VectorIndex::Serialize() const {
  std::string out;
  // MemoryBytes() bounds the image from above: the string never regrows.
  out.reserve(static_cast<size_t>(MemoryBytes()) + 4096);
  Put(out, kMagic, sizeof(kMagic));
  PutValue<int32_t>(out, static_cast<int32_t>(kind_));
  PutValue<int32_t>(out, dim_);
  PutValue(out, options_);
  PutValue<int64_t>(out, static_cast<int64_t>(id_of_label_.size()));
  if (!id_of_label_.empty()) {
    Put(out, id_of_label_.data(), id_of_label_.size() * sizeof(int64_t));
  }
  // FAISS leaks what it allocated when a read fails half-way: a truncated
  // image is caught by this length before FAISS sees it.
  const size_t length_at = out.size();
  PutValue<int64_t>(out, 0);  // FAISS's length, known once it is written.
  StringWriter writer(out);
  try {
    faiss::write_index(index_.get(), &writer);
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("serializing the index: ", e.what()));
  }
  const int64_t faiss_bytes =
      static_cast<int64_t>(out.size() - length_at - sizeof(int64_t));
  std::memcpy(out.data() + length_at, &faiss_bytes, sizeof(faiss_bytes));
  // Format 2: the re-ranking copy's dimensions (0: none), then its min and
  // scale (dim floats each) and codes (rows x dim bytes, by label).
  PutValue<int32_t>(out, refines() ? dim_ : 0);
  if (refines()) {
    Put(out, refine_min_.data(), refine_min_.size() * sizeof(float));
    Put(out, refine_scale_.data(), refine_scale_.size() * sizeof(float));
    Put(out, refine_codes_.data(), refine_codes_.size());
  }
  return out;
}

absl::StatusOr<std::unique_ptr<VectorIndex>> VectorIndex::Deserialize(
    absl::string_view bytes) {
  auto corrupt = [](absl::string_view what) {
    return absl::DataLossError(absl::StrCat("index image: ", what));
  };
  const bool v1 = bytes.size() >= sizeof(kMagicV1) &&
                  std::memcmp(bytes.data(), kMagicV1, sizeof(kMagicV1)) == 0;
  if (!v1 && (bytes.size() < sizeof(kMagic) ||
              std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0)) {
    return corrupt("not an arbiter index (bad magic)");
  }
  Reader reader(bytes.substr(sizeof(kMagic)));
  int32_t kind_value = 0, dim = 0;
  IndexOptions options;
  int64_t rows = 0;
  std::vector<int64_t> id_of_label;
  int64_t faiss_bytes = 0;
  if (!reader.Get(kind_value) || !reader.Get(dim) || !reader.Get(options) ||
      !reader.Get(rows) || !reader.GetArray(id_of_label, rows) ||
      !reader.Get(faiss_bytes)) {
    return corrupt("truncated header");
  }
  absl::string_view faiss_image;
  if (faiss_bytes < 0 || !reader.Take(faiss_bytes, faiss_image) ||
      (v1 && !reader.rest().empty())) {
    return corrupt(absl::StrCat("expected ", faiss_bytes,
                                " bytes of FAISS index, found ",
                                reader.rest().size() + faiss_image.size()));
  }
  if (kind_value < static_cast<int32_t>(IndexKind::kFlat) ||
      kind_value > static_cast<int32_t>(IndexKind::kIvfPq) || dim < 1) {
    return corrupt("bad kind or dimension");
  }
  const auto kind = static_cast<IndexKind>(kind_value);
  if (v1) {
    if (kind == IndexKind::kIvfPq) {
      // Loading it would serve PQ-only recall (~0.55-0.75) indefinitely;
      // the store can rebuild it with the re-ranking copy.
      return corrupt(
          "an IVF-PQ image from before re-ranking (format 1); rebuild it");
    }
    // Format 1 wrote padding where pq_refine_factor now is.
    options.pq_refine_factor = IndexOptions{}.pq_refine_factor;
  }
  // The re-ranking copy, checked in full before FAISS reads anything.
  int32_t refine_dims = 0;
  absl::string_view refine_min, refine_scale, refine_codes;
  if (!v1) {
    const uint64_t row_bytes = static_cast<uint64_t>(dim);
    if (!reader.Get(refine_dims) || (refine_dims != 0 && refine_dims != dim) ||
        (refine_dims != 0 &&
         (!reader.Take(row_bytes * sizeof(float), refine_min) ||
          !reader.Take(row_bytes * sizeof(float), refine_scale) ||
          reader.rest().size() / row_bytes != static_cast<uint64_t>(rows) ||
          !reader.Take(row_bytes * rows, refine_codes))) ||
        !reader.rest().empty()) {
      return corrupt("bad or truncated re-ranking copy");
    }
    const bool wants_refine =
        kind == IndexKind::kIvfPq && options.pq_refine_factor > 1;
    if (wants_refine != (refine_dims != 0)) {
      return corrupt("re-ranking copy does not match the index options");
    }
  }
  std::unique_ptr<faiss::Index> index;
  try {
    faiss::VectorIOReader io;
    io.data.assign(faiss_image.begin(), faiss_image.end());
    index.reset(faiss::read_index(&io));
  } catch (const std::exception& e) {
    return corrupt(absl::StrCat("FAISS could not read it: ", e.what()));
  }
  if (index == nullptr || index->d != dim || index->ntotal != rows) {
    return corrupt("FAISS index does not match its id map");
  }
  auto loaded = std::unique_ptr<VectorIndex>(
      new VectorIndex(kind, dim, options, std::move(index)));
  if (refine_dims != 0) {
    loaded->refine_min_.resize(dim);
    loaded->refine_scale_.resize(dim);
    std::memcpy(loaded->refine_min_.data(), refine_min.data(),
                refine_min.size());
    std::memcpy(loaded->refine_scale_.data(), refine_scale.data(),
                refine_scale.size());
    loaded->refine_codes_.assign(refine_codes.begin(), refine_codes.end());
  }
  loaded->label_of_.reserve(rows);
  loaded->live_.assign(rows, 0);
  for (int64_t label = 0; label < rows; ++label) {
    const int64_t id = id_of_label[label];
    loaded->live_[label] = id >= 0 ? 1 : 0;
    if (id < 0) {
      ++loaded->tombstones_;
    } else if (!loaded->label_of_.emplace(id, label).second) {
      return corrupt("an id appears twice");
    }
  }
  loaded->id_of_label_ = std::move(id_of_label);
  loaded->ReserveRoomAhead();
  loaded->MoveToHugePages();
  return loaded;
}

}  // namespace arbiter::retrieval
