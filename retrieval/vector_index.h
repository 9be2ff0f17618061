#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "retrieval/allowed_ids.h"

namespace faiss {
struct Index;
}  // namespace faiss

namespace arbiter::retrieval {

// The FAISS index kinds a collection can use. kAuto is resolved by
// ChooseIndexKind when an index is built.
enum class IndexKind { kAuto, kFlat, kHnsw, kIvfFlat, kIvfPq };

// "auto", "flat", "hnsw", "ivf_flat", "ivf_pq".
[[nodiscard]] absl::string_view IndexKindName(IndexKind kind);
[[nodiscard]] absl::StatusOr<IndexKind> ParseIndexKind(absl::string_view name);

// IndexOptions::pq_refine_factor's default.
inline constexpr int kDefaultPqRefineFactor = 10;

struct IndexOptions {
  IndexKind kind = IndexKind::kAuto;
  int hnsw_m = 32;  // Graph degree (links per node).
  int hnsw_ef_construction = 80;
  int hnsw_ef_search = 64;  // Default search breadth.
  int ivf_nlist = 0;        // Inverted lists; 0: 4 * sqrt(n).
  int ivf_nprobe = 16;      // Lists searched by default.
  int pq_m = 0;             // PQ sub-quantizers; 0: dim / 4 (or less).
  // IVF-PQ re-ranking: FAISS returns k * pq_refine_factor candidates by
  // their PQ scores, re-scored against an 8-bit copy of every vector (dim
  // bytes each) to keep the best k. PQ codes alone top out near recall@10
  // 0.55-0.75; see bench/README.md for how the default was chosen. 0 or 1:
  // no re-ranking, and no copy kept.
  int pq_refine_factor = kDefaultPqRefineFactor;
  // For auto: vectors below which the exact index is used, and the memory
  // an HNSW graph may take before IVF-PQ is chosen instead.
  int64_t auto_exact_below = 50'000;
  int64_t auto_memory_budget_bytes = int64_t{4} << 30;
};

// The FAISS guideline, in short: exact search below ~50k vectors; above,
// HNSW when its graph and vectors fit the memory budget, else IVF-PQ (about
// dim / 4 bytes of PQ code per vector, plus dim bytes of re-ranking copy
// with pq_refine_factor > 1: still ~3.5x smaller than HNSW's float vectors
// and links).
[[nodiscard]] IndexKind ChooseIndexKind(int64_t vectors, int dim,
                                        const IndexOptions& options);

// Arrays smaller than this double quickly enough where they are.
inline constexpr size_t kGrowAheadMinBytes = size_t{4} << 20;

struct Neighbor {
  int64_t id = 0;
  float score =
      0;  // Inner product (cosine for unit vectors); higher is better.
};

// A FAISS index over inner product with 64-bit external ids, and the same
// behaviour for every kind: ids map to FAISS's sequential labels, removals
// are tombstones (HNSW cannot remove; the others would shift labels), and
// searches skip tombstones and unwanted ids inside FAISS with an id selector,
// so k results come back whenever k live (allowed) vectors exist.
// Callers rebuild once tombstone_share() grows (Collection does, in the
// background). Not thread-safe for writes; concurrent const calls are fine.
// FAISS exceptions never escape: they become INTERNAL statuses.
class VectorIndex final {
 public:
  // Builds an index of `options.kind` (kAuto resolved over ids.size())
  // holding `vectors` (ids.size() rows of dim floats). IVF kinds train on
  // them; with too few vectors to train, the exact index is used instead.
  static absl::StatusOr<std::unique_ptr<VectorIndex>> Build(
      int dim, const IndexOptions& options, absl::Span<const int64_t> ids,
      absl::Span<const float> vectors);
  ~VectorIndex();

  VectorIndex(const VectorIndex&) = delete;
  VectorIndex& operator=(const VectorIndex&) = delete;

  // Adds rows; an id already present is replaced (its old row tombstoned).
  absl::Status Add(absl::Span<const int64_t> ids,
                   absl::Span<const float> vectors);
  // Tombstones the ids that are present; returns how many were.
  int64_t Remove(absl::Span<const int64_t> ids);

  // The k best live vectors, best first. With `allowed`, only those ids.
  // `effort` overrides the search breadth (efSearch for HNSW, nprobe for
  // IVF); 0 keeps the index's default.
  [[nodiscard]] absl::StatusOr<std::vector<Neighbor>> Search(
      absl::Span<const float> query, int k, const AllowedIds* allowed = nullptr,
      int effort = 0) const;

  [[nodiscard]] bool Contains(int64_t id) const {
    return label_of_.contains(id);
  }
  [[nodiscard]] IndexKind kind() const { return kind_; }
  [[nodiscard]] int dim() const { return dim_; }
  [[nodiscard]] int64_t size() const {
    return static_cast<int64_t>(label_of_.size());
  }
  [[nodiscard]] int64_t tombstones() const { return tombstones_; }
  // Tombstoned rows over all rows (0 for an empty index).
  [[nodiscard]] double tombstone_share() const;
  // Bytes held by FAISS plus the id maps and IVF-PQ's re-ranking copy (an
  // estimate for PQ codes).
  [[nodiscard]] int64_t MemoryBytes() const;
  // The live ids, in no particular order.
  [[nodiscard]] std::vector<int64_t> Ids() const;

  // Growing ahead of need (see Growth below). True when an array of at
  // least `min_bytes` is 3/4 full: its next doubling would be felt by a
  // writer.
  [[nodiscard]] bool GrowthDue(size_t min_bytes = kGrowAheadMinBytes) const;
  class Growth;
  // Grows the arrays that are due. Null when none is. Changes nothing: the
  // caller may hold the index shared.
  [[nodiscard]] std::unique_ptr<Growth> StartGrowth(
      size_t min_bytes = kGrowAheadMinBytes);

  // A self-contained byte image (FAISS index, id map, tombstones, IVF-PQ's
  // re-ranking copy) and back. Images written before re-ranking existed load
  // as they were, except IVF-PQ ones: those are refused (DATA_LOSS) so the
  // caller rebuilds them, with the copy, from its source of truth.
  [[nodiscard]] absl::StatusOr<std::string> Serialize() const;
  static absl::StatusOr<std::unique_ptr<VectorIndex>> Deserialize(
      absl::string_view bytes);

 private:
  VectorIndex(IndexKind kind, int dim, IndexOptions options,
              std::unique_ptr<faiss::Index> index);
  absl::Status AddRows(absl::Span<const int64_t> ids,
                       absl::Span<const float> vectors);

  // Moves the arrays a search reads at random onto huge pages (see
  // huge_pages.h). Only at build and load: advising arrays that later
  // appends fault in would have the kernel compact memory under writers.
  void MoveToHugePages() const;
  // Calls visit(array, rewritten) for each array that grows with the rows:
  // FAISS's (faiss_arrays.h), the id map, the re-ranking copy. `rewritten`
  // arrays also change at rows already there (graph links, tombstones).
  // `Self` is VectorIndex or const VectorIndex.
  template <typename Self, typename Visit>
  static void ForEachGrowingArray(Self& self, Visit&& visit);
  // Room for as many rows again in every growing array, so the first
  // writes after a build or load do not copy the index under its lock.
  void ReserveRoomAhead();

  // IVF-PQ re-ranking (see IndexOptions::pq_refine_factor).
  [[nodiscard]] bool refines() const { return !refine_scale_.empty(); }
  // Per-dimension min and scale over `rows` rows of `vectors`.
  void TrainRefine(const float* vectors, int64_t rows);
  // Appends the codes of `rows` rows, clamped to the trained range.
  void EncodeRefine(const float* vectors, int64_t rows);
  // The query pre-multiplied by the scales, and sum q[i] * min[i].
  struct RefineQuery {
    std::vector<float> scaled;
    float bias = 0;
  };
  [[nodiscard]] RefineQuery PrepareRefine(const float* query) const;
  [[nodiscard]] float RefineScore(const RefineQuery& query,
                                  int64_t label) const;
  void PrefetchRefineRow(int64_t label) const;

  const IndexKind kind_;
  const int dim_;
  const IndexOptions options_;
  std::unique_ptr<faiss::Index> index_;
  std::vector<int64_t> id_of_label_;  // -1 once tombstoned.
  // 1 per live label: the byte a search's filter reads, not the 8-byte id.
  std::vector<uint8_t> live_;
  absl::flat_hash_map<int64_t, int64_t> label_of_;  // Live ids only.
  int64_t tombstones_ = 0;
  // IVF-PQ's re-ranking copy, by label: code c of dimension j stands for
  // refine_min_[j] + refine_scale_[j] * c. Empty for other kinds and for
  // pq_refine_factor <= 1.
  std::vector<float> refine_min_;
  std::vector<float> refine_scale_;
  std::vector<uint8_t> refine_codes_;  // dim_ bytes per label.
};

// FAISS keeps an index's vectors and graph in std::vectors that double when
// full, and the writer that fills one copies all of it into fresh pages
// while holding the index: seconds for a large index. A Growth makes that
// copy, into twice the room, while searches and writers go on; only what
// changed meanwhile is copied under the lock, into pages already touched:
//   index shared:      growth = index.StartGrowth();
//   index shared:      while (growth->CopySome()) {}  (a lock per slice)
//   no lock:           growth->MoveToHugePages();     (the copies are private)
//   index exclusive:   growth->Finish();
//   no lock:           growth.reset();                (frees the old arrays)
// The index must be the same object, alive, at every step but the last.
class GrowingArray;
class VectorIndex::Growth final {
 public:
  ~Growth();
  Growth(const Growth&) = delete;
  Growth& operator=(const Growth&) = delete;

  // A writer waits for one slice at most.
  static constexpr size_t kSliceBytes = size_t{8} << 20;

  // Copies the next slice of the rows present at the start; false once all
  // are copied, or when a writer outgrew an array itself meanwhile (the
  // growth is then stale and Finish refuses it).
  bool CopySome(size_t slice_bytes = kSliceBytes);
  void MoveToHugePages();
  // Copies what changed since the start and swaps the arrays in; false,
  // changing nothing, when stale.
  bool Finish();
  // Bytes the growth copies (the arrays' size at the start).
  [[nodiscard]] int64_t bytes() const;

 private:
  friend class VectorIndex;
  Growth();
  std::vector<std::unique_ptr<GrowingArray>> arrays_;
  size_t next_ = 0;  // The array CopySome is on.
};

}  // namespace arbiter::retrieval
