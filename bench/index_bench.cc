// Compares FAISS's index kinds, bare and through arbiter's VectorIndex, with
// hnswlib's HNSW on the same synthetic embedding-like data, in one run: build
// time, memory, and single-thread QPS at the lowest search breadth that
// reaches recall@10 >= 0.95, the overhead of arbiter's wrapper (id mapping,
// tombstones, filtering) over bare FAISS, and filtered searches (an allow-list
// of 50% of the ids; 10% of the ids tombstoned).
//
//   ./build/bench/index_bench [--n 1000000] [--dim 128] [--queries 1000]
//       [--m 32] [--ef-construction 80] [--nlist 0] [--pq-m 0]
//       [--pq-refine 10] [--only hnsw,filter,growth,ivf_flat,ivf_pq,flat]
//       [--quick] [--dense-ids] [--verbose]
//
// `growth` (not in the default set) adds rows to arbiter's HNSW index after
// its searches until its room is 3/4 full, and times growing it ahead of
// need.
//
// --pq-refine lists IVF-PQ re-ranking factors (IndexOptions::
// pq_refine_factor; default the library's): one arbiter index is built for
// each, and FAISS's IndexRefineFlat (full float vectors) re-ranks with the
// first as the reference.
//
// Builds use --threads threads (2 by default): hnswlib through a ParallelFor
// of addPoint over std::threads, FAISS through OpenMP. arbiter's Build uses
// every core (omp_get_num_procs()), which is the same on a 2-core machine.
// Searches run one query per call on one thread, as arbiter serves them.

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexRefine.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>
#include <faiss/utils/distances.h>
#include <hnswlib/hnswlib.h>
#include <malloc.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/types/span.h"
#include "retrieval/huge_pages.h"
#include "retrieval/index_search.h"
#include "retrieval/vector_index.h"

namespace arbiter::retrieval {
namespace {

using faiss_idx = faiss::Index::idx_t;
using Clock = std::chrono::steady_clock;

struct Options {
  int64_t n = 1'000'000;
  int dim = 128;
  int queries = 1000;
  int flat_queries = 200;  // Exact search is slow: a subset of the queries.
  int k = 10;
  int m = 32;
  int ef_construction = 80;
  int nlist = 0;  // 0: 4 * sqrt(n), capped at n / 39 as VectorIndex caps it.
  int pq_m = 0;   // 0: VectorIndex's default (largest divisor <= dim / 4).
  // IVF-PQ re-ranking factors, one arbiter index each.
  std::vector<int> pq_refine = {kDefaultPqRefineFactor};
  int clusters = 1000;
  double spread = 1.0;  // Noise norm around a (unit) cluster centre.
  double decay = 0.5;   // Noise std of coordinate j is ∝ (j + 1)^-decay.
  uint64_t seed = 42;
  // Ids as a collection's chunks have them (row + 1, in insertion order),
  // instead of spread over 2^62: allow-lists become AllowedIds' bitmap.
  bool dense_ids = false;
  int threads = 2;  // Build threads.
  int reps = 3;     // Timed passes per setting (best kept) after a warmup.
  // Queries of the allow-list sweep (at most --queries).
  int filter_queries = 1000;
  double target = 0.95;
  std::set<std::string> only = {"hnsw", "filter", "ivf_flat", "ivf_pq", "flat"};
  bool verbose = false;
};

const std::vector<int> kEfSearch = {10, 12,  16,  24,  32,  48, 64,
                                    96, 128, 192, 256, 384, 512};
const std::vector<int> kNprobe = {1, 2, 4, 8, 16, 32, 64, 128, 256};
constexpr int kTruthDepth = 100;  // Exact neighbours kept per query.

const Clock::time_point kStart = Clock::now();

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void Log(const std::string& line) {
  std::cerr << absl::StrFormat("[%7.1fs] %s\n", SecondsSince(kStart), line);
}

int64_t RssBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

double PeakRssMiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      int64_t kb = 0;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(absl::StripSuffix(
                               absl::StripPrefix(line, "VmHWM:"), "kB")),
                           &kb)) {
        return kb / 1024.0;
      }
    }
  }
  return 0;
}

// RSS before a build, with freed memory handed back to the OS first.
int64_t RssBaseline() {
  malloc_trim(0);
  return RssBytes();
}

constexpr double kMiB = 1024.0 * 1024.0;

// Runs fn(i) for i in [begin, end) on `threads` std::threads.
void ParallelFor(int64_t begin, int64_t end, int threads,
                 const std::function<void(int64_t)>& fn) {
  std::atomic<int64_t> next{begin};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      for (int64_t i = next++; i < end; i = next++) fn(i);
    });
  }
  for (std::thread& w : workers) w.join();
}

// ---------------------------------------------------------------- data

// A mixture of Gaussian clusters around random unit centres. The noise has a
// decaying spectrum (std of coordinate j ∝ (j + 1)^-decay, norm ≈ spread),
// so the data has a modest effective dimension like real embeddings rather
// than being isotropic noise; every row is L2-normalised (cosine = inner
// product). Rows are drawn in blocks with their own seeds: the result does
// not depend on the thread count.
class Mixture {
 public:
  explicit Mixture(const Options& options)
      : options_(options),
        centres_(static_cast<size_t>(options.clusters) * options.dim),
        scale_(options.dim) {
    std::mt19937_64 rng(options.seed);
    std::normal_distribution<float> normal;
    for (int c = 0; c < options.clusters; ++c) {
      float* centre = &centres_[static_cast<size_t>(c) * options.dim];
      for (int j = 0; j < options.dim; ++j) centre[j] = normal(rng);
      Normalize(centre);
    }
    double total = 0;
    for (int j = 0; j < options.dim; ++j) {
      scale_[j] = static_cast<float>(std::pow(j + 1.0, -options.decay));
      total += scale_[j] * scale_[j];
    }
    for (float& s : scale_) {
      s = static_cast<float>(s * options.spread / std::sqrt(total));
    }
  }

  // `count` rows into out; `stream` separates base vectors from queries.
  void Sample(int64_t count, uint64_t stream, float* out) const {
    constexpr int64_t kBlock = 4096;
    const int dim = options_.dim;
    ParallelFor(
        0, (count + kBlock - 1) / kBlock, options_.threads, [&](int64_t block) {
          std::mt19937_64 rng(options_.seed * 1'000'003 + stream * 7'919 +
                              block);
          std::normal_distribution<float> normal;
          std::uniform_int_distribution<int> cluster(0, options_.clusters - 1);
          const int64_t end = std::min(count, (block + 1) * kBlock);
          for (int64_t i = block * kBlock; i < end; ++i) {
            float* row = out + i * dim;
            const float* centre =
                &centres_[static_cast<size_t>(cluster(rng)) * dim];
            for (int j = 0; j < dim; ++j) {
              row[j] = centre[j] + scale_[j] * normal(rng);
            }
            Normalize(row);
          }
        });
  }

 private:
  void Normalize(float* row) const {
    double norm = 0;
    for (int j = 0; j < options_.dim; ++j) norm += row[j] * row[j];
    const float inv = static_cast<float>(1 / std::sqrt(norm));
    for (int j = 0; j < options_.dim; ++j) row[j] *= inv;
  }

  const Options& options_;
  std::vector<float> centres_;
  std::vector<float> scale_;
};

struct Dataset {
  int dim = 0;
  int64_t n = 0;
  int nq = 0;
  std::vector<float> base;     // n × dim
  std::vector<float> queries;  // nq × dim
  std::vector<int64_t> ids;    // External id of each row.
  absl::flat_hash_map<int64_t, int64_t> row_of_id;
  std::vector<faiss_idx> exact;  // nq × kTruthDepth rows, best first.

  const float* query(int q) const {
    return queries.data() + static_cast<size_t>(q) * dim;
  }
  const float* row(int64_t r) const {
    return base.data() + static_cast<size_t>(r) * dim;
  }
};

// Truth for recall@k: per query, the ids of the k best rows that pass `keep`,
// cut from the exact top kTruthDepth (or, should fewer pass there, computed
// by brute force over all rows).
std::vector<int64_t> Truth(const Dataset& data, int nq, int k,
                           const std::function<bool(int64_t)>& keep) {
  std::vector<int64_t> truth(static_cast<size_t>(nq) * k, -1);
  int brute = 0;
  for (int q = 0; q < nq; ++q) {
    int found = 0;
    for (int j = 0; j < kTruthDepth && found < k; ++j) {
      const faiss_idx r = data.exact[static_cast<size_t>(q) * kTruthDepth + j];
      if (r >= 0 && keep(r))
        truth[static_cast<size_t>(q) * k + found++] = data.ids[r];
    }
    if (found == k) continue;
    ++brute;
    std::vector<std::pair<float, int64_t>> scored;
    for (int64_t r = 0; r < data.n; ++r) {
      if (!keep(r)) continue;
      scored.push_back(
          {faiss::fvec_inner_product(data.query(q), data.row(r), data.dim), r});
    }
    const size_t top = std::min<size_t>(k, scored.size());
    std::partial_sort(scored.begin(), scored.begin() + top, scored.end(),
                      std::greater<>());
    for (size_t j = 0; j < top; ++j) {
      truth[static_cast<size_t>(q) * k + j] = data.ids[scored[j].second];
    }
  }
  if (brute > 0) Log(absl::StrCat("truth: ", brute, " queries brute-forced"));
  return truth;
}

Dataset MakeDataset(const Options& options) {
  Dataset data;
  data.dim = options.dim;
  data.n = options.n;
  data.nq = options.queries;
  Mixture mixture(options);
  data.base.resize(static_cast<size_t>(data.n) * data.dim);
  data.queries.resize(static_cast<size_t>(data.nq) * data.dim);
  mixture.Sample(data.n, 1, data.base.data());
  mixture.Sample(data.nq, 2, data.queries.data());
  // Ids unrelated to row numbers: an odd multiplier is a bijection mod 2^62.
  data.ids.resize(data.n);
  data.row_of_id.reserve(data.n);
  for (int64_t r = 0; r < data.n; ++r) {
    data.ids[r] = options.dense_ids
                      ? r + 1
                      : static_cast<int64_t>((static_cast<uint64_t>(r + 1) *
                                              0x9E3779B97F4A7C15ULL) &
                                             ((uint64_t{1} << 62) - 1));
    data.row_of_id[data.ids[r]] = r;
  }
  Log(absl::StrFormat("data: %d × %d-d base, %d queries", data.n, data.dim,
                      data.nq));
  omp_set_num_threads(options.threads);
  faiss::IndexFlatIP flat(data.dim);
  flat.add(data.n, data.base.data());
  std::vector<float> scores(static_cast<size_t>(data.nq) * kTruthDepth);
  data.exact.resize(scores.size());
  flat.search(data.nq, data.queries.data(), kTruthDepth, scores.data(),
              data.exact.data());
  Log("truth: exact top-100 per query (IndexFlatIP)");
  return data;
}

// ---------------------------------------------------------------- contenders

struct Point {
  int setting = 0;
  double recall = 0;
  double qps = 0;
};

// One way of answering every query at a range of search settings.
struct Contender {
  std::string index;  // "HNSW", "IVF-Flat", ...
  std::string impl;
  std::string setting_name;  // "ef", "nprobe", "exact"
  double build_s = -1;       // < 0: shares another row's index.
  int64_t memory = -1;       // Estimated bytes.
  int64_t rss_delta = -1;    // Bytes of RSS the build added.
  int nq = 0;
  const std::vector<int64_t>* truth = nullptr;  // nq × k ids.
  // Answers queries [0, nq) at `setting` into out (nq × k ids, -1 padded);
  // with `check`, also validates what it got (first pass only).
  std::function<void(int setting, int64_t* out, bool check)> run;
  std::vector<Point> curve;
  // For arbiter rows: bare FAISS built on its own, and the same index
  // (arbiter's graph or lists) searched bare: through arbiter's own search
  // loop without VectorIndex for HNSW and Flat, through FAISS for IVF.
  const Contender* bare = nullptr;
  const Contender* same_index = nullptr;
  std::string note;
};

Contender NewContender(std::string index, std::string impl,
                       std::string setting_name, int nq,
                       const std::vector<int64_t>* truth,
                       std::string note = "") {
  Contender c;
  c.index = std::move(index);
  c.impl = std::move(impl);
  c.setting_name = std::move(setting_name);
  c.nq = nq;
  c.truth = truth;
  c.note = std::move(note);
  return c;
}

double Recall(const int64_t* found, const std::vector<int64_t>& truth, int nq,
              int k) {
  int64_t hits = 0, total = 0;
  for (int q = 0; q < nq; ++q) {
    const int64_t* want = &truth[static_cast<size_t>(q) * k];
    const int64_t* got = found + static_cast<size_t>(q) * k;
    for (int i = 0; i < k; ++i) {
      if (want[i] < 0) continue;
      ++total;
      for (int j = 0; j < k; ++j) {
        if (got[j] == want[i]) {
          ++hits;
          break;
        }
      }
    }
  }
  return total == 0 ? 1 : static_cast<double>(hits) / total;
}

// Sweeps the group's contenders over `settings`, interleaved so that noise
// from the shared machine hits them alike: a warmup (and check) pass each,
// then `reps` timed passes each, keeping the fastest.
void Sweep(std::vector<Contender*> group, const std::vector<int>& settings,
           const Options& options) {
  omp_set_num_threads(1);
  std::vector<std::vector<int64_t>> out(group.size());
  for (size_t c = 0; c < group.size(); ++c) {
    out[c].resize(static_cast<size_t>(group[c]->nq) * options.k);
  }
  for (int setting : settings) {
    std::vector<double> best(group.size(), 1e300);
    for (size_t c = 0; c < group.size(); ++c) {
      group[c]->run(setting, out[c].data(), /*check=*/true);
    }
    for (int rep = 0; rep < options.reps; ++rep) {
      for (size_t c = 0; c < group.size(); ++c) {
        omp_set_num_threads(1);
        const Clock::time_point t = Clock::now();
        group[c]->run(setting, out[c].data(), /*check=*/false);
        best[c] = std::min(best[c], SecondsSince(t));
      }
    }
    std::vector<std::string> line;
    for (size_t c = 0; c < group.size(); ++c) {
      Point p{setting,
              Recall(out[c].data(), *group[c]->truth, group[c]->nq, options.k),
              group[c]->nq / best[c]};
      group[c]->curve.push_back(p);
      line.push_back(
          absl::StrFormat("%s %.3f/%.0f", group[c]->impl, p.recall, p.qps));
    }
    Log(absl::StrCat("  ", group[0]->setting_name, "=", setting, ": ",
                     absl::StrJoin(line, "; ")));
  }
}

const Point* Lowest(const Contender& c, double target) {
  for (const Point& p : c.curve) {
    if (p.recall >= target) return &p;
  }
  return nullptr;
}

const Point* BestRecall(const Contender& c) {
  const Point* best = nullptr;
  for (const Point& p : c.curve) {
    if (best == nullptr || p.recall > best->recall) best = &p;
  }
  return best;
}

const Point* At(const Contender& c, int setting) {
  for (const Point& p : c.curve) {
    if (p.setting == setting) return &p;
  }
  return nullptr;
}

// QPS at exactly `target` recall, interpolating log(QPS) linearly in recall
// between the settings either side; 0 when the target is never reached.
double QpsAtRecall(const Contender& c, double target) {
  for (size_t i = 0; i < c.curve.size(); ++i) {
    if (c.curve[i].recall < target) continue;
    if (i == 0) return c.curve[0].qps;  // Already past it at the lowest.
    const Point& a = c.curve[i - 1];
    const Point& b = c.curve[i];
    const double t = (target - a.recall) / (b.recall - a.recall);
    return std::exp(std::log(a.qps) + t * (std::log(b.qps) - std::log(a.qps)));
  }
  return 0;
}

std::string Qps(double qps) {
  return qps < 100 ? absl::StrFormat("%.1f", qps)
                   : absl::StrFormat("%.0f", qps);
}

std::string Mib(int64_t bytes) {
  return bytes < 0 ? "—" : absl::StrFormat("%.0f", bytes / kMiB);
}

std::string Overhead(const Contender& arbiter, const Contender* bare,
                     int setting) {
  if (bare == nullptr) return "—";
  const Point* a = At(arbiter, setting);
  const Point* b = At(*bare, setting);
  if (a == nullptr || b == nullptr) return "—";
  // Time per query, relative: negative when arbiter is faster.
  return absl::StrFormat("%+.1f%%", 100 * (b->qps / a->qps - 1));
}

std::string Row(const Contender& c, const Options& options) {
  const Point* p = Lowest(c, options.target);
  std::string setting, recall, qps, interp;
  if (p != nullptr) {
    setting = c.setting_name == "exact"
                  ? "exact"
                  : absl::StrCat(c.setting_name, "=", p->setting);
    recall = absl::StrFormat("%.3f", p->recall);
    qps = Qps(p->qps);
    const double at = QpsAtRecall(c, options.target);
    interp = c.curve.front().recall >= options.target
                 ? absl::StrCat("≥ ", Qps(at))
                 : Qps(at);
  } else {
    p = BestRecall(c);
    setting = absl::StrFormat("not reached (ceiling; best at %s=%d)",
                              c.setting_name, p->setting);
    recall = absl::StrFormat("%.3f", p->recall);
    qps = Qps(p->qps);
    interp = "—";
  }
  std::string overhead = "";
  if (c.bare != nullptr || c.same_index != nullptr) {
    overhead = absl::StrCat(Overhead(c, c.bare, p->setting), " / ",
                            Overhead(c, c.same_index, p->setting));
  }
  std::string impl = c.impl;
  if (!c.note.empty()) impl = absl::StrCat(impl, " (", c.note, ")");
  return absl::StrFormat(
      "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c.index, impl,
      c.build_s < 0 ? "—" : absl::StrFormat("%.1f", c.build_s), Mib(c.memory),
      Mib(c.rss_delta), setting, recall, qps, interp, overhead);
}

std::string Curve(const Contender& c) {
  std::string s = absl::StrFormat("%s | %s:", c.index, c.impl);
  for (const Point& p : c.curve) {
    absl::StrAppendFormat(
        &s, "\n    %s=%-4d recall@10 %.4f  %8.1f QPS  %9.1f µs", c.setting_name,
        p.setting, p.recall, p.qps, 1e6 / p.qps);
  }
  return s + "\n";
}

struct Report {
  std::vector<std::string> rows;
  std::vector<std::string> curves;
  std::vector<std::string> notes;

  void Add(const Contender& c, const Options& options) {
    rows.push_back(Row(c, options));
    curves.push_back(Curve(c));
  }
};

// Reads arbiter's FAISS index back out of its image, to search the very same
// graph (or lists) bare. Layout, as VectorIndex::Serialize writes it: magic
// (8), kind (i32), dim (i32), IndexOptions, rows (i64), rows × i64 ids, FAISS
// length (i64), FAISS bytes, then IVF-PQ's re-ranking copy.
class ViewReader final : public faiss::IOReader {
 public:
  explicit ViewReader(absl::string_view bytes) : rest_(bytes) {}
  size_t operator()(void* ptr, size_t size, size_t nitems) override {
    if (size == 0) return 0;
    const size_t items = std::min(nitems, rest_.size() / size);
    std::memcpy(ptr, rest_.data(), items * size);
    rest_.remove_prefix(items * size);
    return items;
  }

 private:
  absl::string_view rest_;
};

std::unique_ptr<faiss::Index> FaissIndexOf(const VectorIndex& index) {
  absl::StatusOr<std::string> image = index.Serialize();
  if (!image.ok()) {
    Log(absl::StrCat("Serialize failed: ", image.status().ToString()));
    return nullptr;
  }
  size_t offset = 8 + 4 + 4 + sizeof(IndexOptions);
  int64_t rows = 0, length = 0;
  if (image->size() < offset + 8) return nullptr;
  std::memcpy(&rows, image->data() + offset, 8);
  offset += 8 + static_cast<size_t>(rows) * 8;
  if (image->size() < offset + 8) return nullptr;
  std::memcpy(&length, image->data() + offset, 8);
  offset += 8;
  if (length < 0 || image->size() < offset + static_cast<size_t>(length)) {
    Log("arbiter's index image has an unexpected layout");
    return nullptr;
  }
  ViewReader reader(absl::string_view(*image).substr(offset, length));
  try {
    auto copy = std::unique_ptr<faiss::Index>(faiss::read_index(&reader));
    // On huge pages like arbiter's own (VectorIndex asks for them), so the
    // bare searches of this copy differ from arbiter's by the wrapper only.
    MoveToHugePages(*copy);
    return copy;
  } catch (const std::exception& e) {
    Log(absl::StrCat("reading arbiter's FAISS index: ", e.what()));
    return nullptr;
  }
}

// Bare FAISS, one query per call (as arbiter calls it), labels mapped to ids
// through a plain vector. `make_params` fills the per-setting parameters.
template <typename Params>
std::function<void(int, int64_t*, bool)> BareRun(
    const faiss::Index& index, const Dataset& data, int nq, int k,
    const faiss::IDSelector* sel, std::function<void(Params&, int)> set) {
  return [&index, &data, nq, k, sel, set](int setting, int64_t* out, bool) {
    Params params;
    set(params, setting);
    params.sel = const_cast<faiss::IDSelector*>(sel);
    std::vector<float> scores(k);
    std::vector<faiss_idx> labels(k);
    for (int q = 0; q < nq; ++q) {
      index.search(1, data.query(q), k, scores.data(), labels.data(), &params);
      for (int j = 0; j < k; ++j) {
        out[static_cast<size_t>(q) * k + j] =
            labels[j] < 0 ? -1 : data.ids[labels[j]];
      }
    }
  };
}

// arbiter's search loop (SearchHnswGraph, SearchIvfFlat or ScanFlat) called
// directly on
// arbiter's FAISS index: what VectorIndex adds on top (id map, tombstones,
// allow-list lookups, result conversion) is the difference. Labels are rows.
std::function<void(int, int64_t*, bool)> CoreRun(
    const faiss::Index& index, const Dataset& data, int nq, int k,
    const std::vector<uint8_t>* keep_rows) {
  return [&index, &data, nq, k, keep_rows](int setting, int64_t* out, bool) {
    auto accept_kept = [keep_rows](int64_t row) {
      return (*keep_rows)[row] != 0;
    };
    auto accept_any = [](int64_t) { return true; };
    const absl::FunctionRef<bool(int64_t)> accept =
        keep_rows != nullptr ? absl::FunctionRef<bool(int64_t)>(accept_kept)
                             : absl::FunctionRef<bool(int64_t)>(accept_any);
    const auto* hnsw = dynamic_cast<const faiss::IndexHNSWFlat*>(&index);
    const auto* ivf = dynamic_cast<const faiss::IndexIVFFlat*>(&index);
    const auto* flat = dynamic_cast<const faiss::IndexFlat*>(&index);
    for (int q = 0; q < nq; ++q) {
      const std::vector<ScoredLabel> found =
          hnsw != nullptr
              ? SearchHnswGraph(*hnsw, data.query(q), k, setting, accept)
          : ivf != nullptr
              ? SearchIvfFlat(*ivf, data.query(q), k, setting, accept)
              : ScanFlat(*flat, data.query(q), k, accept);
      int64_t* dst = out + static_cast<size_t>(q) * k;
      std::fill(dst, dst + k, -1);
      for (size_t j = 0; j < found.size(); ++j) {
        dst[j] = data.ids[found[j].label];
      }
    }
  };
}

// FAISS 1.7.3 sizes HNSW's candidate queue by the index's hnsw.efSearch and
// takes only the stop rule from SearchParametersHNSW::efSearch (fixed in 1.8,
// facebookresearch/faiss#3233): both are set, so ef means what it means to
// hnswlib and to FAISS >= 1.8.
std::function<void(faiss::SearchParametersHNSW&, int)> HnswSetter(
    faiss::Index* index) {
  auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(index);
  return [hnsw](faiss::SearchParametersHNSW& params, int ef) {
    params.efSearch = ef;
    if (hnsw != nullptr) hnsw->hnsw.efSearch = ef;
  };
}

// arbiter's Search for every query. With `check`, validates each answer: k
// results (when k rows qualify), distinct ids, each one passing `keep`, best
// first, and (unless `approximate_scores`) scores that are the true inner
// products.
struct ArbiterChecks {
  std::atomic<int64_t> errors{0}, short_answers{0}, duplicates{0},
      disallowed{0}, unordered{0}, bad_scores{0};
  std::string first_problem;

  std::string Summary() const {
    return absl::StrFormat(
        "errors %d, short answers %d, duplicate ids %d, dead/disallowed ids "
        "%d, out of order %d, wrong scores %d%s",
        errors.load(), short_answers.load(), duplicates.load(),
        disallowed.load(), unordered.load(), bad_scores.load(),
        first_problem.empty() ? "" : absl::StrCat("; first: ", first_problem));
  }
  bool Clean() const {
    return errors + short_answers + duplicates + disallowed + unordered +
               bad_scores ==
           0;
  }
};

std::function<void(int, int64_t*, bool)> ArbiterRun(
    const VectorIndex& index, const Dataset& data, int nq, int k,
    const AllowedIds* allowed, std::function<bool(int64_t row)> keep,
    bool approximate_scores, ArbiterChecks* checks) {
  return [&index, &data, nq, k, allowed, keep, approximate_scores, checks](
             int setting, int64_t* out, bool check) {
    for (int q = 0; q < nq; ++q) {
      int64_t* dst = out + static_cast<size_t>(q) * k;
      absl::StatusOr<std::vector<Neighbor>> found = index.Search(
          absl::MakeConstSpan(data.query(q), data.dim), k, allowed, setting);
      if (!found.ok()) {
        std::fill(dst, dst + k, -1);
        if (check) {
          ++checks->errors;
          if (checks->first_problem.empty()) {
            checks->first_problem = found.status().ToString();
          }
        }
        continue;
      }
      const size_t got = std::min<size_t>(found->size(), k);
      for (size_t j = 0; j < got; ++j) dst[j] = (*found)[j].id;
      std::fill(dst + got, dst + k, -1);
      if (!check) continue;
      auto problem = [&](std::atomic<int64_t>& counter, std::string what) {
        ++counter;
        if (checks->first_problem.empty()) {
          checks->first_problem =
              absl::StrCat("query ", q, " setting ", setting, ": ", what);
        }
      };
      if (static_cast<int>(found->size()) != k) {
        problem(checks->short_answers,
                absl::StrCat(found->size(), " results for k=", k));
      }
      absl::flat_hash_set<int64_t> seen;
      for (size_t j = 0; j < found->size(); ++j) {
        const Neighbor& nb = (*found)[j];
        if (!seen.insert(nb.id).second) {
          problem(checks->duplicates, absl::StrCat("id ", nb.id, " twice"));
        }
        auto row = data.row_of_id.find(nb.id);
        if (row == data.row_of_id.end() || !keep(row->second)) {
          problem(checks->disallowed, absl::StrCat("id ", nb.id,
                                                   " is unknown, dead or not "
                                                   "allowed"));
          continue;
        }
        if (j > 0 && nb.score > (*found)[j - 1].score + 1e-6f) {
          problem(checks->unordered, absl::StrCat("score ", nb.score, " after ",
                                                  (*found)[j - 1].score));
        }
        if (!approximate_scores) {
          const float exact = faiss::fvec_inner_product(
              data.query(q), data.row(row->second), data.dim);
          if (std::abs(exact - nb.score) > 1e-4f) {
            problem(checks->bad_scores,
                    absl::StrCat("id ", nb.id, " score ", nb.score,
                                 " but inner product ", exact));
          }
        }
      }
    }
  };
}

void NoteChecks(const std::string& what, const ArbiterChecks& checks,
                Report& report) {
  const std::string line = absl::StrCat(
      what, ": ",
      checks.Clean() ? "all answers valid" : "PROBLEMS: " + checks.Summary());
  Log(line);
  report.notes.push_back(line);
}

std::unique_ptr<VectorIndex> BuildArbiter(const Dataset& data,
                                          const IndexOptions& index_options,
                                          Contender& c) {
  const int64_t rss = RssBaseline();
  const Clock::time_point t = Clock::now();
  absl::StatusOr<std::unique_ptr<VectorIndex>> built =
      VectorIndex::Build(data.dim, index_options, data.ids, data.base);
  c.build_s = SecondsSince(t);
  c.rss_delta = RssBytes() - rss;
  if (!built.ok()) {
    Log(absl::StrCat("arbiter Build failed: ", built.status().ToString()));
    return nullptr;
  }
  if ((*built)->kind() != index_options.kind) {
    Log(absl::StrCat("arbiter built ", IndexKindName((*built)->kind()),
                     " instead of ", IndexKindName(index_options.kind)));
  }
  c.memory = (*built)->MemoryBytes();
  Log(absl::StrFormat("%s %s: built in %.1f s, %.0f MiB (RSS +%.0f MiB)",
                      c.index, c.impl, c.build_s, c.memory / kMiB,
                      c.rss_delta / kMiB));
  return std::move(*built);
}

int64_t FaissHnswBytes(const faiss::IndexHNSW& index) {
  const faiss::HNSW& hnsw = index.hnsw;
  return index.ntotal * index.d * 4 +
         static_cast<int64_t>(hnsw.neighbors.size()) * 4 +
         static_cast<int64_t>(hnsw.offsets.size()) * 8 +
         static_cast<int64_t>(hnsw.levels.size()) * 4;
}

int64_t FaissIvfBytes(const faiss::IndexIVF& index) {
  int64_t bytes = static_cast<int64_t>(index.nlist) * index.d * 4;
  for (size_t l = 0; l < index.nlist; ++l) {
    bytes += static_cast<int64_t>(index.invlists->list_size(l)) *
             (static_cast<int64_t>(index.code_size) + 8);
  }
  if (const auto* pq = dynamic_cast<const faiss::IndexIVFPQ*>(&index)) {
    bytes += static_cast<int64_t>(pq->pq.centroids.size()) * 4;
  }
  return bytes;
}

// hnswlib: level-0 block (links, vector, label) per element, upper-level
// link lists, level and lock per element, the label map (~40 B an entry).
int64_t HnswlibBytes(const hnswlib::HierarchicalNSW<float>& index) {
  int64_t bytes =
      static_cast<int64_t>(index.max_elements_) *
      (index.size_data_per_element_ + sizeof(int) + sizeof(std::mutex) + 40);
  for (size_t i = 0; i < index.cur_element_count; ++i) {
    bytes += static_cast<int64_t>(index.element_levels_[i]) *
             index.size_links_per_element_;
  }
  return bytes;
}

// ---------------------------------------------------------------- groups

// What growing arbiter's HNSW index ahead of need costs and what it spares
// writers. Rows are added until the room reserved at build is 3/4 full;
// then a Growth runs as a collection's grower runs it (alone here): the
// copy, which the writer that filled an array used to make holding the
// index, the move onto huge pages, and the swap, which is all that holds it
// now.
void MeasureGrowth(VectorIndex& index, const Dataset& data, Report& report) {
  const int64_t first_id = *absl::c_max_element(data.ids) + 1;
  constexpr int64_t kBatch = 10'000;
  const Clock::time_point add_start = Clock::now();
  int64_t added = 0;
  while (!index.GrowthDue() && added < data.n) {
    const int64_t n = std::min(kBatch, data.n - added);
    std::vector<int64_t> ids(n);
    for (int64_t i = 0; i < n; ++i) ids[i] = first_id + added + i;
    const absl::Status s =
        index.Add(ids, absl::MakeConstSpan(data.base).subspan(
                           static_cast<size_t>(added) * data.dim,
                           static_cast<size_t>(n) * data.dim));
    if (!s.ok()) {
      Log(absl::StrCat("growth: Add failed: ", s.ToString()));
      return;
    }
    added += n;
  }
  const double add_s = SecondsSince(add_start);
  std::unique_ptr<VectorIndex::Growth> growth = index.StartGrowth();
  if (growth == nullptr) {
    report.notes.push_back("growth ahead of need: never due");
    return;
  }
  Clock::time_point t = Clock::now();
  while (growth->CopySome()) {
  }
  const double copy_ms = 1e3 * SecondsSince(t);
  t = Clock::now();
  growth->MoveToHugePages();
  const double huge_ms = 1e3 * SecondsSince(t);
  t = Clock::now();
  const bool swapped = growth->Finish();
  const double hold_ms = 1e3 * SecondsSince(t);
  const int64_t bytes = growth->bytes();
  growth.reset();
  report.notes.push_back(absl::StrFormat(
      "growth ahead of need (HNSW, due after adding %d rows in %.1f s): %.0f "
      "MiB copied in %.0f ms beside searches and writers (a writer used to "
      "wait for this copy, holding the index), moved onto huge pages in %.0f "
      "ms, swapped in%s holding the index for %.1f ms",
      added, add_s, bytes / 1048576.0, copy_ms, huge_ms,
      swapped ? "" : " (FAILED)", hold_ms));
}

void HnswGroup(const Dataset& data, const Options& options, Report& report) {
  const int k = options.k;
  const std::vector<int64_t> truth =
      Truth(data, data.nq, k, [](int64_t) { return true; });

  // 1. hnswlib.
  Contender lib = NewContender("HNSW", "hnswlib 0.6.2", "ef", data.nq, &truth);
  hnswlib::InnerProductSpace space(data.dim);
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> hnswlib_index;
  {
    const int64_t rss = RssBaseline();
    const Clock::time_point t = Clock::now();
    hnswlib_index = std::make_unique<hnswlib::HierarchicalNSW<float>>(
        &space, data.n, options.m, options.ef_construction, 100);
    hnswlib_index->addPoint(data.row(0), 0);
    ParallelFor(1, data.n, options.threads, [&](int64_t r) {
      hnswlib_index->addPoint(data.row(r), static_cast<size_t>(r));
    });
    lib.build_s = SecondsSince(t);
    lib.rss_delta = RssBytes() - rss;
    lib.memory = HnswlibBytes(*hnswlib_index);
    Log(absl::StrFormat("hnswlib: built in %.1f s, %.0f MiB (RSS +%.0f MiB)",
                        lib.build_s, lib.memory / kMiB, lib.rss_delta / kMiB));
  }
  lib.run = [&](int ef, int64_t* out, bool) {
    hnswlib_index->setEf(ef);
    for (int q = 0; q < data.nq; ++q) {
      auto found = hnswlib_index->searchKnn(data.query(q), k);
      int64_t* dst = out + static_cast<size_t>(q) * k;
      std::fill(dst, dst + k, -1);
      for (int j = static_cast<int>(found.size()) - 1; j >= 0; --j) {
        dst[j] = data.ids[found.top().second];
        found.pop();
      }
    }
  };

  // 2. Bare FAISS, and the same index searched with all queries in one call.
  Contender bare =
      NewContender("HNSW", "FAISS IndexHNSWFlat", "ef", data.nq, &truth);
  std::unique_ptr<faiss::IndexHNSWFlat> faiss_index;
  {
    omp_set_num_threads(options.threads);
    const int64_t rss = RssBaseline();
    const Clock::time_point t = Clock::now();
    faiss_index = std::make_unique<faiss::IndexHNSWFlat>(
        data.dim, options.m, faiss::METRIC_INNER_PRODUCT);
    faiss_index->hnsw.efConstruction = options.ef_construction;
    faiss_index->add(data.n, data.base.data());
    bare.build_s = SecondsSince(t);
    bare.rss_delta = RssBytes() - rss;
    bare.memory = FaissHnswBytes(*faiss_index);
    Log(absl::StrFormat("FAISS HNSW: built in %.1f s, %.0f MiB (RSS +%.0f MiB)",
                        bare.build_s, bare.memory / kMiB,
                        bare.rss_delta / kMiB));
  }
  bare.run = BareRun<faiss::SearchParametersHNSW>(
      *faiss_index, data, data.nq, k, nullptr, HnswSetter(faiss_index.get()));
  Contender batch =
      NewContender("HNSW", "FAISS IndexHNSWFlat, all queries in one call", "ef",
                   data.nq, &truth, "the row above's index");
  batch.run = [&](int ef, int64_t* out, bool) {
    faiss::SearchParametersHNSW params;
    HnswSetter(faiss_index.get())(params, ef);
    std::vector<float> scores(static_cast<size_t>(data.nq) * k);
    std::vector<faiss_idx> labels(scores.size());
    faiss_index->search(data.nq, data.queries.data(), k, scores.data(),
                        labels.data(), &params);
    for (size_t i = 0; i < labels.size(); ++i) {
      out[i] = labels[i] < 0 ? -1 : data.ids[labels[i]];
    }
  };

  // 3. arbiter, and bare FAISS on arbiter's own graph.
  Contender arb =
      NewContender("HNSW", "arbiter VectorIndex", "ef", data.nq, &truth);
  arb.bare = &bare;
  IndexOptions index_options;
  index_options.kind = IndexKind::kHnsw;
  index_options.hnsw_m = options.m;
  index_options.hnsw_ef_construction = options.ef_construction;
  std::unique_ptr<VectorIndex> arbiter_index =
      BuildArbiter(data, index_options, arb);
  if (arbiter_index == nullptr) return;
  ArbiterChecks checks;
  arb.run = ArbiterRun(
      *arbiter_index, data, data.nq, k, nullptr, [](int64_t) { return true; },
      false, &checks);
  {
    // What a collection's snapshot holds index updates off for: the copy.
    const Clock::time_point t = Clock::now();
    absl::StatusOr<std::string> image = arbiter_index->Serialize();
    const double ms = 1e3 * SecondsSince(t);
    if (image.ok()) {
      report.notes.push_back(absl::StrFormat(
          "HNSW snapshot image (VectorIndex::Serialize): %.0f MiB copied in "
          "%.0f ms",
          image->size() / 1048576.0, ms));
    }
  }
  std::unique_ptr<faiss::Index> same = FaissIndexOf(*arbiter_index);
  // On arbiter's graph: arbiter's search loop without VectorIndex (the
  // wrapper's cost), and FAISS's own search (the loop's gain).
  Contender core = NewContender(
      "HNSW", "arbiter SearchHnswGraph", "ef", data.nq, &truth,
      "arbiter's graph, bare: no id map, no tombstones, no filter");
  Contender same_true = NewContender("HNSW", "FAISS IndexHNSWFlat", "ef",
                                     data.nq, &truth, "arbiter's graph");
  std::vector<Contender*> group = {&lib, &bare, &batch, &arb};
  if (same != nullptr) {
    core.run = CoreRun(*same, data, data.nq, k, nullptr);
    same_true.run = BareRun<faiss::SearchParametersHNSW>(
        *same, data, data.nq, k, nullptr, HnswSetter(same.get()));
    arb.same_index = &core;
    group.push_back(&core);
    group.push_back(&same_true);
  }
  Log("HNSW sweep (recall/QPS)");
  Sweep(group, kEfSearch, options);
  for (const Contender* c : group) report.Add(*c, options);
  NoteChecks("arbiter HNSW, unfiltered", checks, report);
  {
    const double lib_qps = QpsAtRecall(lib, options.target);
    const double arb_qps = QpsAtRecall(arb, options.target);
    const double bare_qps = QpsAtRecall(bare, options.target);
    const double true_qps = QpsAtRecall(same_true, options.target);
    report.notes.push_back(absl::StrFormat(
        "HNSW at recall@%d = %.2f (interpolated): hnswlib %.0f QPS, bare "
        "FAISS (own build) %.0f, FAISS on arbiter's graph %.0f, arbiter "
        "%.0f (arbiter / hnswlib = %.2f)",
        k, options.target, lib_qps, bare_qps, true_qps, arb_qps,
        lib_qps > 0 ? arb_qps / lib_qps : 0));
  }
  hnswlib_index.reset();
  faiss_index.reset();
  // Last: it adds rows to arbiter's index.
  const absl::Cleanup growth = [&] {
    if (options.only.contains("growth")) {
      MeasureGrowth(*arbiter_index, data, report);
    }
  };

  if (!options.only.contains("filter") || same == nullptr) return;

  // 4. Filtered: an allow-list of half the ids, then 10% tombstoned. The
  // bare baseline is FAISS on the same graph with an IDSelectorBitmap over
  // labels (rows), the cheapest selector FAISS has.
  std::mt19937_64 rng(options.seed + 17);
  std::vector<uint8_t> allowed_rows(data.n, 0), dead_rows(data.n, 0);
  std::vector<int64_t> allowed_ids;
  allowed_ids.reserve(data.n / 2 + 1);
  {
    std::vector<int64_t> rows(data.n);
    for (int64_t r = 0; r < data.n; ++r) rows[r] = r;
    std::shuffle(rows.begin(), rows.end(), rng);
    for (int64_t i = 0; i < data.n / 2; ++i) {
      allowed_rows[rows[i]] = 1;
      allowed_ids.push_back(data.ids[rows[i]]);
    }
    std::shuffle(rows.begin(), rows.end(), rng);
    for (int64_t i = 0; i < data.n / 10; ++i) dead_rows[rows[i]] = 1;
  }
  // Spread over 2^62, ids make this AllowedIds' hash set; with --dense-ids,
  // as a collection's chunk ids, its bitmap.
  const AllowedIds allowed(std::move(allowed_ids));
  auto bitmap_of = [&](auto keep) {
    std::vector<uint8_t> bitmap((data.n + 7) / 8, 0);
    for (int64_t r = 0; r < data.n; ++r) {
      if (keep(r)) bitmap[r / 8] |= static_cast<uint8_t>(1 << (r % 8));
    }
    return bitmap;
  };
  auto is_allowed = [&](int64_t r) { return allowed_rows[r] != 0; };
  auto is_live = [&](int64_t r) { return dead_rows[r] == 0; };
  {
    const int nq = std::min(options.filter_queries, data.nq);
    const std::vector<int64_t> allowed_truth = Truth(data, nq, k, is_allowed);
    const std::vector<uint8_t> bitmap = bitmap_of(is_allowed);
    faiss::IDSelectorBitmap selector(bitmap.size(), bitmap.data());
    Contender fa =
        NewContender("HNSW, 50% of ids allowed", "arbiter VectorIndex", "ef",
                     nq, &allowed_truth);
    fa.note = absl::StrCat("allow-list: AllowedIds (",
                           options.dense_ids ? "bitmap" : "hash set", ") of ",
                           allowed.ids().size(), " ids; ", nq, " queries");
    Contender fb = NewContender(
        "HNSW, 50% of ids allowed", "FAISS IndexHNSWFlat + IDSelectorBitmap",
        "ef", nq, &allowed_truth,
        absl::StrCat("arbiter's graph; ", nq, " queries"));
    Contender fc =
        NewContender("HNSW, 50% of ids allowed", "arbiter SearchHnswGraph",
                     "ef", nq, &allowed_truth,
                     absl::StrCat("arbiter's graph, bare, a byte per row; ", nq,
                                  " queries"));
    ArbiterChecks filter_checks;
    fa.run = ArbiterRun(*arbiter_index, data, nq, k, &allowed, is_allowed,
                        false, &filter_checks);
    fb.run = BareRun<faiss::SearchParametersHNSW>(*same, data, nq, k, &selector,
                                                  HnswSetter(same.get()));
    fc.run = CoreRun(*same, data, nq, k, &allowed_rows);
    fa.same_index = &fc;
    Log("HNSW with 50% of ids allowed");
    Sweep({&fa, &fc, &fb}, kEfSearch, options);
    report.Add(fa, options);
    report.Add(fc, options);
    report.Add(fb, options);
    NoteChecks("arbiter HNSW, 50% allowed", filter_checks, report);
  }
  {
    std::vector<int64_t> dead;
    for (int64_t r = 0; r < data.n; ++r) {
      if (dead_rows[r]) dead.push_back(data.ids[r]);
    }
    const Clock::time_point t = Clock::now();
    const int64_t removed = arbiter_index->Remove(dead);
    report.notes.push_back(absl::StrFormat(
        "Remove of %d ids (10%%): %.1f ms; %d removed, tombstone_share %.3f",
        dead.size(), 1e3 * SecondsSince(t), removed,
        arbiter_index->tombstone_share()));
    const std::vector<int64_t> live_truth = Truth(data, data.nq, k, is_live);
    const std::vector<uint8_t> bitmap = bitmap_of(is_live);
    faiss::IDSelectorBitmap selector(bitmap.size(), bitmap.data());
    Contender ta =
        NewContender("HNSW, 10% of ids tombstoned", "arbiter VectorIndex", "ef",
                     data.nq, &live_truth);
    Contender tb = NewContender("HNSW, 10% of ids tombstoned",
                                "FAISS IndexHNSWFlat + IDSelectorBitmap", "ef",
                                data.nq, &live_truth, "arbiter's graph");
    Contender tc = NewContender(
        "HNSW, 10% of ids tombstoned", "arbiter SearchHnswGraph", "ef", data.nq,
        &live_truth, "arbiter's graph, bare, a byte per row");
    std::vector<uint8_t> live_rows(data.n);
    for (int64_t r = 0; r < data.n; ++r) live_rows[r] = is_live(r) ? 1 : 0;
    ArbiterChecks tomb_checks;
    ta.run = ArbiterRun(*arbiter_index, data, data.nq, k, nullptr, is_live,
                        false, &tomb_checks);
    tb.run = BareRun<faiss::SearchParametersHNSW>(
        *same, data, data.nq, k, &selector, HnswSetter(same.get()));
    tc.run = CoreRun(*same, data, data.nq, k, &live_rows);
    ta.same_index = &tc;
    Log("HNSW with 10% of ids tombstoned");
    Sweep({&ta, &tc, &tb}, kEfSearch, options);
    report.Add(ta, options);
    report.Add(tc, options);
    report.Add(tb, options);
    NoteChecks("arbiter HNSW, 10% tombstoned", tomb_checks, report);
  }
}

int64_t Nlist(const Options& options) {
  int64_t nlist = options.nlist > 0
                      ? options.nlist
                      : static_cast<int64_t>(4 * std::sqrt(options.n));
  return std::max<int64_t>(1, std::min<int64_t>(nlist, options.n / 39));
}

int PqM(const Options& options) {
  if (options.pq_m > 0) return options.pq_m;
  for (int m = std::max(1, options.dim / 4); m > 1; --m) {
    if (options.dim % m == 0) return m;
  }
  return 1;
}

void IvfGroup(const Dataset& data, const Options& options, bool pq,
              Report& report) {
  const int k = options.k;
  const int64_t nlist = Nlist(options);
  const int pq_m = PqM(options);
  const std::string name = pq ? "IVF-PQ" : "IVF-Flat";
  const std::vector<int64_t> truth =
      Truth(data, data.nq, k, [](int64_t) { return true; });
  std::vector<int> settings;
  for (int s : kNprobe) {
    if (s <= nlist) settings.push_back(s);
  }
  auto ivf_params = [](faiss::SearchParametersIVF& p, int nprobe) {
    p.nprobe = nprobe;
  };

  Contender bare =
      NewContender(name,
                   pq ? absl::StrFormat("FAISS IndexIVFPQ (%d×8 bits)", pq_m)
                      : "FAISS IndexIVFFlat",
                   "nprobe", data.nq, &truth);
  std::unique_ptr<faiss::IndexIVF> faiss_index;
  {
    omp_set_num_threads(options.threads);
    const int64_t rss = RssBaseline();
    const Clock::time_point t = Clock::now();
    auto* quantizer = new faiss::IndexFlatIP(data.dim);
    if (pq) {
      faiss_index = std::make_unique<faiss::IndexIVFPQ>(
          quantizer, data.dim, nlist, pq_m, 8, faiss::METRIC_INNER_PRODUCT);
    } else {
      faiss_index = std::make_unique<faiss::IndexIVFFlat>(
          quantizer, data.dim, nlist, faiss::METRIC_INNER_PRODUCT);
    }
    faiss_index->own_fields = true;
    faiss_index->cp.seed = 1234;
    faiss_index->train(data.n, data.base.data());
    faiss_index->add(data.n, data.base.data());
    bare.build_s = SecondsSince(t);
    bare.rss_delta = RssBytes() - rss;
    bare.memory = FaissIvfBytes(*faiss_index);
    Log(absl::StrFormat("FAISS %s: built in %.1f s, %.0f MiB (RSS +%.0f MiB)",
                        name, bare.build_s, bare.memory / kMiB,
                        bare.rss_delta / kMiB));
  }
  bare.run = BareRun<faiss::SearchParametersIVF>(*faiss_index, data, data.nq, k,
                                                 nullptr, ivf_params);

  // FAISS's own re-ranking against the full float vectors, on the bare
  // index: the reference for arbiter's 8-bit re-ranking. IndexRefine takes
  // no search parameters in 1.7.3, so the base index's nprobe is set.
  const int refine_factor = options.pq_refine.front();
  Contender refine_flat = NewContender(
      name,
      absl::StrFormat("FAISS IndexRefineFlat (IndexIVFPQ %d×8 bits, k_factor "
                      "%d, float vectors)",
                      pq_m, refine_factor),
      "nprobe", data.nq, &truth);
  std::unique_ptr<faiss::IndexRefineFlat> faiss_refine;
  if (pq && refine_factor > 1) {
    const int64_t rss = RssBaseline();
    const Clock::time_point t = Clock::now();
    faiss_refine = std::make_unique<faiss::IndexRefineFlat>(faiss_index.get(),
                                                            data.base.data());
    faiss_refine->k_factor = static_cast<float>(refine_factor);
    // Building the bare index plus copying the vectors.
    refine_flat.build_s = bare.build_s + SecondsSince(t);
    refine_flat.rss_delta = bare.rss_delta + RssBytes() - rss;
    refine_flat.memory = bare.memory + data.n * data.dim * 4;
    refine_flat.run = [&](int nprobe, int64_t* out, bool) {
      faiss_index->nprobe = nprobe;
      std::vector<float> scores(k);
      std::vector<faiss_idx> labels(k);
      for (int q = 0; q < data.nq; ++q) {
        faiss_refine->search(1, data.query(q), k, scores.data(), labels.data());
        for (int j = 0; j < k; ++j) {
          out[static_cast<size_t>(q) * k + j] =
              labels[j] < 0 ? -1 : data.ids[labels[j]];
        }
      }
    };
  }

  // arbiter: one index per re-ranking factor for IVF-PQ.
  const std::vector<int> factors = pq ? options.pq_refine : std::vector<int>{0};
  std::vector<Contender> arbs;
  std::vector<std::unique_ptr<VectorIndex>> arbiter_indexes;
  arbs.reserve(factors.size());
  for (int factor : factors) {
    Contender& arb = arbs.emplace_back(NewContender(
        name,
        pq ? (factor > 1
                  ? absl::StrFormat(
                        "arbiter VectorIndex (re-ranks %d×k on 8-bit codes)",
                        factor)
                  : "arbiter VectorIndex (no re-ranking)")
           : "arbiter VectorIndex",
        "nprobe", data.nq, &truth));
    arb.bare =
        pq && factor > 1 && faiss_refine != nullptr ? &refine_flat : &bare;
    IndexOptions index_options;
    index_options.kind = pq ? IndexKind::kIvfPq : IndexKind::kIvfFlat;
    index_options.ivf_nlist = static_cast<int>(nlist);
    index_options.pq_m = pq_m;
    index_options.pq_refine_factor = factor;
    std::unique_ptr<VectorIndex> index = BuildArbiter(data, index_options, arb);
    if (index == nullptr) return;
    arbiter_indexes.push_back(std::move(index));
  }
  std::vector<std::unique_ptr<ArbiterChecks>> checks;
  for (size_t i = 0; i < arbs.size(); ++i) {
    checks.push_back(std::make_unique<ArbiterChecks>());
    arbs[i].run = ArbiterRun(
        *arbiter_indexes[i], data, data.nq, k, nullptr,
        [](int64_t) { return true; }, pq, checks.back().get());
  }
  std::unique_ptr<faiss::Index> same = FaissIndexOf(*arbiter_indexes.front());
  // IVF-Flat is searched by arbiter's own loop, IVF-PQ by FAISS (then
  // re-ranked): the bare search of the same lists is that loop, or FAISS
  // without re-ranking.
  Contender same_lists =
      pq ? NewContender(name, bare.impl, "nprobe", data.nq, &truth,
                        "arbiter's lists, bare, no re-ranking")
         : NewContender(name, "arbiter SearchIvfFlat", "nprobe", data.nq,
                        &truth, "arbiter's lists, bare: no id map, no filter");
  Contender faiss_lists = NewContender(name, bare.impl, "nprobe", data.nq,
                                       &truth, "arbiter's lists");
  std::vector<Contender*> group = {&bare};
  if (faiss_refine != nullptr) group.push_back(&refine_flat);
  for (Contender& arb : arbs) group.push_back(&arb);
  if (same != nullptr) {
    same_lists.run = pq ? BareRun<faiss::SearchParametersIVF>(
                              *same, data, data.nq, k, nullptr, ivf_params)
                        : CoreRun(*same, data, data.nq, k, nullptr);
    for (Contender& arb : arbs) arb.same_index = &same_lists;
    group.push_back(&same_lists);
    if (!pq) {
      faiss_lists.run = BareRun<faiss::SearchParametersIVF>(
          *same, data, data.nq, k, nullptr, ivf_params);
      group.push_back(&faiss_lists);
    }
  }
  Log(absl::StrCat(name, " sweep (recall/QPS), nlist ", nlist));
  Sweep(group, settings, options);
  for (const Contender* c : group) report.Add(*c, options);
  for (size_t i = 0; i < arbs.size(); ++i) {
    NoteChecks(pq ? absl::StrCat("arbiter ", name, " (re-ranking factor ",
                                 factors[i], ")")
                  : absl::StrCat("arbiter ", name),
               *checks[i], report);
  }
  if (pq) {
    std::vector<std::string> at;
    for (const Contender* c : group) {
      const double qps = QpsAtRecall(*c, options.target);
      at.push_back(absl::StrCat(
          c->impl, c->note.empty() ? "" : absl::StrCat(" (", c->note, ")"), " ",
          qps > 0 ? Qps(qps) : "not reached"));
    }
    report.notes.push_back(
        absl::StrFormat("IVF-PQ QPS at recall@%d = %.2f (interpolated): %s", k,
                        options.target, absl::StrJoin(at, "; ")));
  }
}

void FlatGroup(const Dataset& data, const Options& options, Report& report) {
  const int k = options.k;
  const int nq = std::min(options.flat_queries, data.nq);
  const std::vector<int64_t> truth =
      Truth(data, nq, k, [](int64_t) { return true; });
  Contender bare = NewContender("Flat (exact)", "FAISS IndexFlatIP", "exact",
                                nq, &truth, absl::StrCat(nq, " queries"));
  std::unique_ptr<faiss::IndexFlatIP> flat;
  {
    const int64_t rss = RssBaseline();
    const Clock::time_point t = Clock::now();
    flat = std::make_unique<faiss::IndexFlatIP>(data.dim);
    flat->add(data.n, data.base.data());
    bare.build_s = SecondsSince(t);
    bare.rss_delta = RssBytes() - rss;
    bare.memory = flat->ntotal * data.dim * 4;
  }
  bare.run = BareRun<faiss::SearchParameters>(
      *flat, data, nq, k, nullptr, [](faiss::SearchParameters&, int) {});
  Contender arb = NewContender("Flat (exact)", "arbiter VectorIndex", "exact",
                               nq, &truth, absl::StrCat(nq, " queries"));
  arb.bare = &bare;
  IndexOptions index_options;
  index_options.kind = IndexKind::kFlat;
  std::unique_ptr<VectorIndex> arbiter_index =
      BuildArbiter(data, index_options, arb);
  if (arbiter_index == nullptr) return;
  ArbiterChecks checks;
  arb.run = ArbiterRun(
      *arbiter_index, data, nq, k, nullptr, [](int64_t) { return true; }, false,
      &checks);
  std::unique_ptr<faiss::Index> same = FaissIndexOf(*arbiter_index);
  Contender core =
      NewContender("Flat (exact)", "arbiter ScanFlat", "exact", nq, &truth,
                   absl::StrCat("arbiter's index, bare; ", nq, " queries"));
  std::vector<Contender*> group = {&bare, &arb};
  if (same != nullptr) {
    core.run = CoreRun(*same, data, nq, k, nullptr);
    arb.same_index = &core;
    group.push_back(&core);
  }
  Log("Flat");
  Sweep(group, {0}, options);
  for (const Contender* c : group) report.Add(*c, options);
  NoteChecks("arbiter Flat", checks, report);
}

// ---------------------------------------------------------------- main

bool ParseFlags(int argc, char** argv, Options& options) {
  bool quick = false;
  bool n_set = false, queries_set = false;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    bool ok = true;
    if (flag == "--n") {
      ok = absl::SimpleAtoi(value(), &options.n) && options.n >= 1000;
      n_set = true;
    } else if (flag == "--dim") {
      ok = absl::SimpleAtoi(value(), &options.dim) && options.dim >= 4;
    } else if (flag == "--queries") {
      ok = absl::SimpleAtoi(value(), &options.queries) && options.queries > 0;
      queries_set = true;
    } else if (flag == "--flat-queries") {
      ok = absl::SimpleAtoi(value(), &options.flat_queries) &&
           options.flat_queries > 0;
    } else if (flag == "--filter-queries") {
      ok = absl::SimpleAtoi(value(), &options.filter_queries) &&
           options.filter_queries > 0;
    } else if (flag == "--k") {
      ok = absl::SimpleAtoi(value(), &options.k) && options.k > 0 &&
           options.k <= kTruthDepth;
    } else if (flag == "--m") {
      ok = absl::SimpleAtoi(value(), &options.m) && options.m >= 2;
    } else if (flag == "--ef-construction") {
      ok = absl::SimpleAtoi(value(), &options.ef_construction) &&
           options.ef_construction > 0;
    } else if (flag == "--nlist") {
      ok = absl::SimpleAtoi(value(), &options.nlist) && options.nlist >= 0;
    } else if (flag == "--pq-m") {
      ok = absl::SimpleAtoi(value(), &options.pq_m) && options.pq_m >= 0;
    } else if (flag == "--pq-refine") {
      options.pq_refine.clear();
      for (absl::string_view part : absl::StrSplit(value(), ',')) {
        int factor = 0;
        ok = ok && absl::SimpleAtoi(part, &factor) && factor >= 0;
        options.pq_refine.push_back(factor);
      }
    } else if (flag == "--clusters") {
      ok = absl::SimpleAtoi(value(), &options.clusters) && options.clusters > 0;
    } else if (flag == "--spread") {
      ok = absl::SimpleAtod(value(), &options.spread) && options.spread >= 0;
    } else if (flag == "--decay") {
      ok = absl::SimpleAtod(value(), &options.decay);
    } else if (flag == "--dense-ids") {
      options.dense_ids = true;
    } else if (flag == "--seed") {
      ok = absl::SimpleAtoi(value(), &options.seed);
    } else if (flag == "--threads") {
      ok = absl::SimpleAtoi(value(), &options.threads) && options.threads > 0;
    } else if (flag == "--reps") {
      ok = absl::SimpleAtoi(value(), &options.reps) && options.reps > 0;
    } else if (flag == "--target") {
      ok = absl::SimpleAtod(value(), &options.target);
    } else if (flag == "--only") {
      options.only.clear();
      for (absl::string_view part : absl::StrSplit(value(), ',')) {
        // Benchmark groups (some named after the index kind they time).
        static const std::set<std::string> kGroups = {
            "hnsw", "filter", "growth", "ivf_flat", "ivf_pq", "flat"};
        const std::string s(part);
        ok = ok && kGroups.contains(s);
        options.only.insert(s);
      }
      // Filtered searches and growth run on the HNSW group's arbiter index.
      if (options.only.contains("filter") || options.only.contains("growth")) {
        options.only.insert("hnsw");
      }
    } else if (flag == "--quick") {
      quick = true;
    } else if (flag == "--verbose") {
      options.verbose = true;
    } else {
      ok = false;
    }
    if (!ok) {
      std::cerr << "bad flag " << flag << "\n";
      return false;
    }
  }
  if (quick) {
    if (!n_set) options.n = 12'000;
    if (!queries_set) options.queries = 100;
    options.reps = 1;
  }
  return true;
}

int Main(int argc, char** argv) {
  Options options;
  if (!ParseFlags(argc, argv, options)) return 2;
  Log(
      absl::StrFormat("index_bench: n=%d dim=%d queries=%d, %u hardware "
                      "threads",
                      options.n, options.dim, options.queries,
                      std::thread::hardware_concurrency()));
  const Dataset data = MakeDataset(options);
  Report report;
  if (options.only.contains("hnsw")) HnswGroup(data, options, report);
  malloc_trim(0);
  if (options.only.contains("ivf_flat")) IvfGroup(data, options, false, report);
  malloc_trim(0);
  if (options.only.contains("ivf_pq")) IvfGroup(data, options, true, report);
  malloc_trim(0);
  if (options.only.contains("flat")) FlatGroup(data, options, report);

  std::cout << absl::StrFormat(
      "index_bench: %d × %d-d vectors (%d Gaussian clusters, spread %.2f, "
      "decay %.2f, L2-normalised, inner product), %d queries, recall@%d; "
      "HNSW M=%d efConstruction=%d; IVF nlist=%d, PQ %d×8 bits, re-ranking "
      "factors %s; builds on "
      "%d threads (OMP_WAIT_POLICY=%s), searches one query per call on 1 "
      "thread (best of %d passes after a warmup)\n\n",
      options.n, options.dim, options.clusters, options.spread, options.decay,
      options.queries, options.k, options.m, options.ef_construction,
      Nlist(options), PqM(options), absl::StrJoin(options.pq_refine, ","),
      options.threads,
      getenv("OMP_WAIT_POLICY") ? getenv("OMP_WAIT_POLICY") : "default",
      options.reps);
  std::cout << absl::StrFormat(
      "| index | implementation | build s | memory MiB (est.) | RSS Δ MiB | "
      "lowest setting with recall@%d ≥ %.2f | recall@%d | QPS | QPS at "
      "%.2f (interp.) | arbiter's time per query vs bare FAISS (own build) "
      "/ vs the same index searched bare |\n",
      options.k, options.target, options.k, options.target);
  std::cout << "|---|---|--:|--:|--:|---|--:|--:|--:|--:|\n";
  for (const std::string& row : report.rows) std::cout << row;
  std::cout << "\n";
  for (const std::string& note : report.notes)
    std::cout << "- " << note << "\n";
  std::cout << absl::StrFormat("- peak RSS %.0f MiB\n", PeakRssMiB());
  if (options.verbose) {
    std::cout << "\nsweeps:\n";
    for (const std::string& curve : report.curves) std::cout << curve;
  }
  return 0;
}

}  // namespace
}  // namespace arbiter::retrieval

int main(int argc, char** argv) {
  // libgomp's idle threads spin by default, which on a shared 2-core machine
  // starves OpenBLAS and the next parallel region (IVF-PQ training ran 3-7×
  // slower). libgomp reads the policy when it loads, so set it and start
  // again; an explicit OMP_WAIT_POLICY is kept.
  if (getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv);
  }
  return arbiter::retrieval::Main(argc, argv);
}
