// Retrieval throughput and latency:
//
//  1. Ingest: the quickstart corpus (48 articles) repeated, with unique ids
//     and slightly varied text, up to --docs documents, through
//     Collection::Upsert with the built-in embedder and the quickstart's
//     chunking and embedding_dim, into a store on disk (WAL,
//     synchronous=FULL: every document is one fsync'd transaction) and/or in
//     memory, by one or more writer threads. Reports documents/s and
//     chunks/s overall and per tenth of the run, Upsert latency, the index
//     the collection ends with (auto moves to HNSW past 50k chunks in a
//     background rebuild) and RSS.
//  2. RAG retrieval latency: an open-loop load generator issues quickstart
//     questions on a fixed schedule (--qps) from a small worker pool; each
//     request does what the gateway's rag route does before calling the
//     model, Search(hybrid, top_k) + AssembleContext(max_context_tokens),
//     and is timed from its *scheduled* start, so queueing behind slow
//     requests counts (no coordinated omission). Also keyword-only and
//     vector-only, on the ingested collection and on the plain 48-document
//     quickstart collection. When the closed-loop capacity is below --qps,
//     the run at --qps is still shown (and the backlog it builds), followed
//     by a run at 80% of capacity.
//
//   ./build/bench/retrieval_bench [--docs 100000 | --quick] [--stores
//   disk,memory]
//       [--writers 1,2] [--qps 1000] [--seconds 10] [--workers 4]
//       [--index auto|flat|hnsw] [--keyword-budget N] [--breakdown]
//       [--no-latency]
//       [--db PATH [--snapshot]] [--corpus DIR]

#include <fcntl.h>
#include <malloc.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "retrieval/chunker.h"
#include "retrieval/collection.h"
#include "retrieval/embedder.h"
#include "retrieval/retriever.h"
#include "retrieval/store.h"
#include "retrieval/vector_index.h"

namespace arbiter::retrieval {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}
double Micros(Clock::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

struct Options {
  std::string corpus = ARBITER_SOURCE_DIR "/quickstart";
  int64_t docs = 100'000;
  std::vector<std::string> stores = {"disk", "memory"};
  std::vector<int> writers = {1};
  double qps = 1000;
  double seconds = 10;
  int workers = 4;
  // The quickstart's retrieval and rag settings (quickstart/arbiter.yaml).
  int top_k = 4;
  int max_context_tokens = 600;
  int embedding_dim = 1024;
  int chunk_tokens = 200;
  int chunk_overlap_tokens = 40;
  IndexKind index = IndexKind::kAuto;
  int64_t keyword_budget = DocumentStore::Options().keyword_match_budget;
  bool latency = true;
  bool breakdown = false;
  std::string latency_store = "disk";
  std::string tmpdir = std::filesystem::temp_directory_path().string();
  // Keeps the (first, single-writer) disk store here; a later run with the
  // same path and --docs reopens it instead of ingesting again.
  std::string db;
  bool snapshot = false;  // On reopen: use (or write) <db>.index.
};

DocumentStore::Options StoreOptions(const Options& options) {
  DocumentStore::Options store;
  store.keyword_match_budget = options.keyword_budget;
  return store;
}

// ---------------------------------------------------------------- helpers

int64_t ProcStatusKb(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) {
      int64_t kb = 0;
      std::istringstream(line.substr(std::strlen(field) + 1)) >> kb;
      return kb;
    }
  }
  return 0;
}
double RssMb() { return ProcStatusKb("VmRSS") / 1024.0; }
double HwmMb() { return ProcStatusKb("VmHWM") / 1024.0; }

double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
         (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

int64_t FileBytes(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? st.st_size : 0;
}

struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0, mean = 0;
};

Percentiles Summarize(std::vector<double> values) {
  Percentiles p;
  if (values.empty()) return p;
  std::sort(values.begin(), values.end());
  auto at = [&](double q) {
    return values[static_cast<size_t>(q * (values.size() - 1))];
  };
  p.p50 = at(0.5);
  p.p90 = at(0.9);
  p.p99 = at(0.99);
  p.p999 = at(0.999);
  p.max = values.back();
  double sum = 0;
  for (double v : values) sum += v;
  p.mean = sum / values.size();
  return p;
}

// ---------------------------------------------------------------- corpus

std::vector<Document> LoadCorpus(const std::string& dir) {
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string ext = entry.path().extension().string();
    if (entry.is_regular_file() && (ext == ".md" || ext == ".txt")) {
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  std::vector<Document> docs;
  for (const auto& file : files) {
    std::ifstream in(file);
    std::stringstream content;
    content << in.rdbuf();
    docs.push_back(ParseDocument(file.filename().string(), content.str()));
  }
  return docs;
}

std::vector<std::string> LoadQuestions(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::vector<std::string> questions;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    questions.push_back(nlohmann::json::parse(line).at("question"));
  }
  return questions;
}

// Copy `copy` of a corpus document: its own id, and every prose paragraph
// tagged with the copy number, so no two copies have identical chunks (nor
// identical vectors).
Document Variant(const Document& base, int64_t copy) {
  Document doc;
  doc.id = absl::StrCat(base.id, "-", copy);
  doc.title = base.title;
  if (copy == 0) {
    doc.text = base.text;
    return doc;
  }
  std::vector<std::string> paragraphs = absl::StrSplit(base.text, "\n\n");
  for (std::string& paragraph : paragraphs) {
    if (!paragraph.empty() && paragraph[0] != '#' && paragraph.back() == '.') {
      absl::StrAppend(&paragraph, " (Copy ", copy, ".)");
    }
  }
  doc.text = absl::StrJoin(paragraphs, "\n\n");
  return doc;
}

// ---------------------------------------------------------------- ingest

struct LogLines {
  Clock::time_point start = Clock::now();
  std::mutex mu;
  std::vector<std::string> lines;
  std::function<void(absl::string_view)> Sink() {
    return [this](absl::string_view line) {
      std::lock_guard lock(mu);
      lines.push_back(absl::StrFormat("  [+%6.1fs] %s",
                                      Seconds(Clock::now() - start), line));
    };
  }
};

struct Slice {
  double docs_per_s = 0, chunks_per_s = 0, upsert_p99_ms = 0, upsert_max_ms = 0;
  int64_t chunks_end = 0;
  std::string kind_end;
  double rss_mb = 0;
};

struct IngestResult {
  std::string store;
  int writers = 0;
  int64_t docs = 0, chunks = 0;
  double seconds = 0, settle_seconds = 0;
  double docs_per_s = 0, chunks_per_s = 0;
  double last10_docs_per_s = 0, last10_chunks_per_s = 0;
  Percentiles upsert_ms;
  IndexStats stats;
  double rss_mb = 0, rss_start_mb = 0, hwm_mb = 0;
  int64_t db_bytes = 0;
  std::vector<Slice> slices;
  std::vector<std::string> log;
};

struct Loaded {
  std::unique_ptr<DocumentStore> store;
  std::unique_ptr<Collection> collection;
  std::string path;  // Empty for memory.
  std::shared_ptr<LogLines> log;
};

CollectionOptions MakeCollectionOptions(const Options& options,
                                        std::shared_ptr<LogLines> log) {
  CollectionOptions collection;
  collection.chunking = {options.chunk_tokens, options.chunk_overlap_tokens};
  collection.embedding_dim = options.embedding_dim;
  collection.index.kind = options.index;
  collection.log = log->Sink();
  return collection;
}

// Waits until the background maintenance thread is idle: the process burns
// under 5% of a core for two seconds in a row (writers and searchers are
// stopped, so any CPU is a rebuild).
double WaitForQuiet() {
  const auto start = Clock::now();
  for (;;) {
    const double before = CpuSeconds();
    std::this_thread::sleep_for(std::chrono::seconds(2));
    if (CpuSeconds() - before < 0.1) break;
    if (Clock::now() - start > std::chrono::minutes(30)) break;
  }
  return Seconds(Clock::now() - start) - 2;
}

std::string StorePath(const Options& options, const std::string& kind,
                      int writers) {
  if (kind == "memory") return ":memory:";
  if (!options.db.empty() && writers == 1) return options.db;
  return absl::StrCat(options.tmpdir, "/retrieval_bench_", getpid(), "_",
                      writers, ".db");
}

void RemoveDb(const std::string& path) {
  if (path.empty() || path == ":memory:") return;
  for (const char* suffix : {"", "-wal", "-shm"}) {
    std::filesystem::remove(path + suffix);
  }
}

IngestResult Ingest(const Options& options, const std::vector<Document>& base,
                    const std::string& kind, int writers, Loaded& loaded) {
  malloc_trim(0);
  IngestResult result;
  result.store = kind;
  result.writers = writers;
  result.docs = options.docs;
  result.rss_start_mb = RssMb();
  loaded.path = StorePath(options, kind, writers);
  RemoveDb(loaded.path);
  auto store = DocumentStore::Open(loaded.path, StoreOptions(options));
  if (!store.ok()) {
    std::cerr << store.status() << "\n";
    std::exit(1);
  }
  loaded.store = *std::move(store);
  loaded.log = std::make_shared<LogLines>();
  auto collection = Collection::Open(
      *loaded.store, "bench", MakeCollectionOptions(options, loaded.log));
  if (!collection.ok()) {
    std::cerr << collection.status() << "\n";
    std::exit(1);
  }
  loaded.collection = *std::move(collection);
  Collection& target = *loaded.collection;

  const int64_t n = options.docs;
  std::vector<double> upsert_ms(n, 0);
  std::vector<Clock::time_point> done_at(n + 1);
  std::vector<int64_t> chunks_at(11, 0);
  std::vector<std::string> kind_at(11);
  std::vector<double> rss_at(11, 0);
  std::atomic<int64_t> next{0}, done{0};
  std::atomic<bool> failed{false};
  const auto start = Clock::now();
  loaded.log->start = start;
  done_at[0] = start;
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&] {
      for (;;) {
        const int64_t i = next.fetch_add(1);
        if (i >= n || failed) return;
        const Document doc = Variant(base[i % base.size()], i / base.size());
        const auto t0 = Clock::now();
        auto version = target.Upsert(doc);
        const auto t1 = Clock::now();
        if (!version.ok()) {
          std::cerr << "upsert " << doc.id << ": " << version.status() << "\n";
          failed = true;
          return;
        }
        upsert_ms[i] = Micros(t1 - t0) / 1000;
        const int64_t d = done.fetch_add(1) + 1;
        done_at[d] = t1;
        if (d * 10 % n == 0 || d == n) {
          const int64_t tenth = d * 10 / n;
          const IndexStats stats = target.Stats();
          chunks_at[tenth] = stats.vectors;
          kind_at[tenth] = std::string(IndexKindName(stats.kind));
          rss_at[tenth] = RssMb();
          std::cerr << absl::StrFormat(
              "  %s/%dw: %3d%% %8d docs %9d chunks %7.1fs  index %s, rss "
              "%.0f MB\n",
              kind, writers, tenth * 10, d, stats.vectors, Seconds(t1 - start),
              kind_at[tenth], rss_at[tenth]);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  if (failed) std::exit(1);
  const auto end = Clock::now();
  result.seconds = Seconds(end - start);
  result.settle_seconds = WaitForQuiet();
  result.stats = target.Stats();
  result.chunks = result.stats.vectors;
  result.docs_per_s = n / result.seconds;
  result.chunks_per_s = result.chunks / result.seconds;
  // Completion order, so with several writers a tenth is n/10 completions.
  for (int tenth = 1; tenth <= 10; ++tenth) {
    const int64_t from = (tenth - 1) * n / 10, to = tenth * n / 10;
    const double s = Seconds(done_at[to] - done_at[from]);
    Slice slice;
    slice.docs_per_s = (to - from) / s;
    slice.chunks_per_s = (chunks_at[tenth] - chunks_at[tenth - 1]) / s;
    std::vector<double> window(upsert_ms.begin() + from,
                               upsert_ms.begin() + to);
    const Percentiles p = Summarize(window);
    slice.upsert_p99_ms = p.p99;
    slice.upsert_max_ms = p.max;
    slice.chunks_end = chunks_at[tenth];
    slice.kind_end = kind_at[tenth];
    slice.rss_mb = rss_at[tenth];
    result.slices.push_back(slice);
  }
  result.last10_docs_per_s = result.slices.back().docs_per_s;
  result.last10_chunks_per_s = result.slices.back().chunks_per_s;
  result.upsert_ms = Summarize(upsert_ms);
  result.rss_mb = RssMb();
  result.hwm_mb = HwmMb();
  if (kind == "disk") {
    result.db_bytes = FileBytes(loaded.path) + FileBytes(loaded.path + "-wal");
  }
  {
    std::lock_guard lock(loaded.log->mu);
    result.log = loaded.log->lines;
  }
  return result;
}

void PrintIngest(const std::vector<IngestResult>& results) {
  std::cout << "\n### Ingest\n\n"
            << "| store | writers | docs | chunks | time s | docs/s | "
               "chunks/s | last 10%: docs/s | last 10%: chunks/s | upsert "
               "p50 / p99 / max ms | index (rebuilds) | settle s | RSS MB "
               "(start → end, peak) | db MB |\n"
            << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const IngestResult& r : results) {
    std::cout << absl::StrFormat(
        "| %s | %d | %d | %d | %.1f | %.0f | %.0f | %.0f | %.0f | %.2f / "
        "%.2f / %.0f | %s, %d vectors (%d) | %.1f | %.0f → %.0f, %.0f | "
        "%s |\n",
        r.store, r.writers, r.docs, r.chunks, r.seconds, r.docs_per_s,
        r.chunks_per_s, r.last10_docs_per_s, r.last10_chunks_per_s,
        r.upsert_ms.p50, r.upsert_ms.p99, r.upsert_ms.max,
        IndexKindName(r.stats.kind), r.stats.vectors, r.stats.rebuilds,
        r.settle_seconds, r.rss_start_mb, r.rss_mb, r.hwm_mb,
        r.store == "disk" ? absl::StrFormat("%.0f", r.db_bytes / 1048576.0)
                          : "-");
  }
  for (const IngestResult& r : results) {
    std::cout << absl::StrFormat(
        "\n%s store, %d writer(s), by tenth of the run:\n\n"
        "| tenth | docs/s | chunks/s | upsert p99 ms | upsert max ms | "
        "chunks at end | index at end | RSS MB |\n"
        "|---|---|---|---|---|---|---|---|\n",
        r.store, r.writers);
    for (size_t i = 0; i < r.slices.size(); ++i) {
      const Slice& s = r.slices[i];
      std::cout << absl::StrFormat(
          "| %d | %.0f | %.0f | %.2f | %.0f | %d | %s | %.0f |\n", i + 1,
          s.docs_per_s, s.chunks_per_s, s.upsert_p99_ms, s.upsert_max_ms,
          s.chunks_end, s.kind_end, s.rss_mb);
    }
    if (!r.log.empty()) {
      std::cout << "\nCollection log:\n\n```\n";
      for (const std::string& line : r.log) std::cout << line << "\n";
      std::cout << "```\n";
    }
  }
}

// Reopens a store kept by --db that already holds the documents: what a
// restart costs (the index is rebuilt from the store, or loaded from its
// snapshot with --snapshot). False if there is nothing to reuse.
bool Reopen(const Options& options, Loaded& loaded) {
  if (options.db.empty() || !std::filesystem::exists(options.db)) return false;
  auto store = DocumentStore::Open(options.db, StoreOptions(options));
  if (!store.ok()) return false;
  auto count = (*store)->DocumentCount("bench");
  if (!count.ok() || *count != options.docs) return false;
  loaded.path = options.db;
  loaded.store = *std::move(store);
  loaded.log = std::make_shared<LogLines>();
  CollectionOptions collection_options =
      MakeCollectionOptions(options, loaded.log);
  if (options.snapshot) {
    collection_options.snapshot_path = absl::StrCat(options.db, ".index");
  }
  const auto start = Clock::now();
  auto collection =
      Collection::Open(*loaded.store, "bench", collection_options);
  if (!collection.ok()) {
    std::cerr << collection.status() << "\n";
    std::exit(1);
  }
  const double open_s = Seconds(Clock::now() - start);
  loaded.collection = *std::move(collection);
  const double settle_s = WaitForQuiet();
  const IndexStats stats = loaded.collection->Stats();
  std::cout << absl::StrFormat(
      "\nReopened %s (%d documents): Collection::Open took %.1f s (%s), "
      "background work after it %.1f s; index %s with %d vectors; RSS %.0f "
      "MB (peak %.0f MB)\n",
      options.db, *count, open_s, stats.opened_from, settle_s,
      IndexKindName(stats.kind), stats.vectors, RssMb(), HwmMb());
  return true;
}

// ---------------------------------------------------------------- breakdown

// Where the time of one Upsert goes, measured piece by piece on the first
// `sample` documents: chunking, built-in embedding (unfitted weights: the
// cost is the same), the store's transaction alone (disk and memory) with
// precomputed embeddings, and a raw 4 KiB write + fdatasync on the same
// file system as the disk store.
void Breakdown(const Options& options, const std::vector<Document>& base) {
  const int64_t sample = std::min<int64_t>(options.docs, 2000);
  std::vector<Document> docs;
  for (int64_t i = 0; i < sample; ++i) {
    docs.push_back(Variant(base[i % base.size()], i / base.size()));
  }
  const ChunkOptions chunking{options.chunk_tokens,
                              options.chunk_overlap_tokens};
  std::vector<StoredDocument> stored(sample);
  int64_t chunks = 0;
  auto t0 = Clock::now();
  for (int64_t i = 0; i < sample; ++i) {
    stored[i].id = docs[i].id;
    stored[i].title = docs[i].title;
    stored[i].source = docs[i].id;
    stored[i].chunks = ChunkText(docs[i].text, chunking);
    chunks += stored[i].chunks.size();
  }
  const double chunk_s = Seconds(Clock::now() - t0);
  HashedNgramEmbedder embedder(options.embedding_dim);
  t0 = Clock::now();
  for (StoredDocument& doc : stored) {
    for (const std::string& chunk : doc.chunks) {
      doc.embeddings.push_back(
          embedder.Embed(absl::StrCat(doc.title, "\n", chunk)));
    }
  }
  const double embed_s = Seconds(Clock::now() - t0);
  auto store_upserts = [&](const std::string& path) {
    RemoveDb(path);
    auto store = DocumentStore::Open(path, StoreOptions(options));
    if (!store.ok() || !(*store)->CreateCollection("b").ok()) std::exit(1);
    const auto start = Clock::now();
    for (const StoredDocument& doc : stored) {
      if (!(*store)->Upsert("b", doc).ok()) std::exit(1);
    }
    const double s = Seconds(Clock::now() - start);
    store->reset();
    RemoveDb(path);
    return s;
  };
  const double disk_s =
      store_upserts(absl::StrCat(options.tmpdir, "/retrieval_bench_bd.db"));
  const double memory_s = store_upserts(":memory:");
  // Collection::Upsert end to end into a fresh in-memory collection,
  // without background rebuilds, with a flat and with an HNSW index.
  auto collection_upserts = [&](IndexKind kind) {
    auto store = DocumentStore::Open(":memory:", StoreOptions(options));
    auto log = std::make_shared<LogLines>();
    CollectionOptions collection_options = MakeCollectionOptions(options, log);
    collection_options.background_maintenance = false;
    collection_options.index.kind = kind;
    auto collection =
        Collection::Open(**store, "b", collection_options).value();
    const auto start = Clock::now();
    for (const Document& doc : docs) {
      if (!collection->Upsert(doc).ok()) std::exit(1);
    }
    return Seconds(Clock::now() - start);
  };
  const double collection_s = collection_upserts(IndexKind::kFlat);
  const double collection_hnsw_s = collection_upserts(IndexKind::kHnsw);
  // Raw fdatasync of 4 KiB appends.
  std::vector<double> sync_us;
  {
    const std::string path =
        absl::StrCat(options.tmpdir, "/retrieval_bench_sync.bin");
    int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
    std::string page(4096, 'x');
    for (int i = 0; i < 300; ++i) {
      const auto start = Clock::now();
      if (write(fd, page.data(), page.size()) < 0) break;
      fdatasync(fd);
      sync_us.push_back(Micros(Clock::now() - start));
    }
    close(fd);
    std::filesystem::remove(path);
  }
  const Percentiles sync = Summarize(sync_us);
  auto per_doc = [&](double s) { return s / sample * 1e6; };
  std::cout << absl::StrFormat(
      "\n### Where an Upsert's time goes (%d documents, %d chunks, %.2f "
      "chunks/doc, in a fresh collection, no background rebuilds)\n\n"
      "| step | µs per doc | docs/s alone |\n|---|---|---|\n",
      sample, chunks, static_cast<double>(chunks) / sample);
  auto row = [&](const char* name, double s) {
    std::cout << absl::StrFormat("| %s | %.0f | %.0f |\n", name, per_doc(s),
                                 sample / s);
  };
  row("ChunkText", chunk_s);
  row("built-in embedding of the chunks (1024-d)", embed_s);
  row("DocumentStore::Upsert, disk (WAL, synchronous=FULL)", disk_s);
  row("DocumentStore::Upsert, :memory:", memory_s);
  row("Collection::Upsert end to end, :memory:, flat index", collection_s);
  row("Collection::Upsert end to end, :memory:, HNSW index", collection_hnsw_s);
  std::cout << absl::StrFormat(
      "\nRaw 4 KiB write + fdatasync in %s: p50 %.0f µs, p99 %.0f µs "
      "(%d samples).\n",
      options.tmpdir, sync.p50, sync.p99, sync_us.size());
}

// ---------------------------------------------------------------- latency

struct Target {
  std::string name;
  const Collection* collection;
  DocumentStore* store;
  std::string collection_name;
};

const char* ModeName(SearchMode mode) {
  switch (mode) {
    case SearchMode::kHybrid:
      return "hybrid";
    case SearchMode::kKeyword:
      return "keyword";
    case SearchMode::kVector:
      return "vector";
  }
  return "?";
}

// One rag request's retrieval step, as Gateway::BuildBackendRequest does it.
// Returns the context's length so the work is not optimised away.
size_t RagRetrieval(const Collection& collection, const std::string& question,
                    SearchMode mode, const Options& options) {
  auto found = collection.Search(question, options.top_k, mode);
  if (!found.ok()) {
    std::cerr << "search: " << found.status() << "\n";
    std::exit(1);
  }
  std::vector<Chunk> chunks;
  for (SearchHit& hit : *found) {
    chunks.push_back({hit.chunk_id, std::move(hit.doc_id),
                      std::move(hit.doc_title), 0, std::move(hit.text)});
  }
  std::vector<Hit> hits;
  for (size_t i = 0; i < chunks.size(); ++i) {
    hits.push_back({&chunks[i], static_cast<float>((*found)[i].score)});
  }
  return AssembleContext(hits, options.max_context_tokens).block.size();
}

const std::string& QuestionFor(const std::vector<std::string>& questions,
                               int64_t i) {
  return questions[(i * 7919) % questions.size()];
}

// Back-to-back requests from every worker for `seconds`: the throughput
// ceiling.
double Capacity(const Collection& collection,
                const std::vector<std::string>& questions, SearchMode mode,
                const Options& options, double seconds) {
  std::atomic<int64_t> next{0}, completed{0};
  const auto start = Clock::now();
  const auto stop = start + std::chrono::duration_cast<Clock::duration>(
                                std::chrono::duration<double>(seconds));
  std::vector<std::thread> threads;
  std::atomic<size_t> sink{0};
  for (int w = 0; w < options.workers; ++w) {
    threads.emplace_back([&] {
      while (Clock::now() < stop) {
        sink += RagRetrieval(collection, QuestionFor(questions, next++), mode,
                             options);
        ++completed;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return completed / Seconds(Clock::now() - start);
}

struct OpenLoopResult {
  double offered_qps = 0, achieved_qps = 0, wall_s = 0;
  int64_t scheduled = 0, completed = 0, abandoned = 0;
  Percentiles us;
  double cpu_cores = 0;  // Process CPU time over wall time.
};

// Fixed-rate schedule: request i is due at start + i / qps; a free worker
// takes the next request, sleeps until it is due (if it is not overdue
// already) and measures from the due time to the end of the retrieval
// step. Requests not started within `seconds` + max(5 s, `seconds`) of the
// start are abandoned (and counted).
OpenLoopResult OpenLoop(const Collection& collection,
                        const std::vector<std::string>& questions,
                        SearchMode mode, const Options& options, double qps) {
  OpenLoopResult result;
  result.offered_qps = qps;
  result.scheduled = static_cast<int64_t>(qps * options.seconds);
  std::vector<double> latency_us(result.scheduled, -1);
  const auto start = Clock::now() + std::chrono::milliseconds(20);
  const auto interval = std::chrono::duration<double>(1.0 / qps);
  const auto deadline =
      start +
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
          options.seconds + std::max(5.0, options.seconds)));
  std::atomic<int64_t> next{0}, abandoned{0};
  std::atomic<size_t> sink{0};
  std::vector<Clock::time_point> last_done(options.workers, start);
  const double cpu_before = CpuSeconds();
  std::vector<std::thread> threads;
  for (int w = 0; w < options.workers; ++w) {
    threads.emplace_back([&, w] {
      for (;;) {
        const int64_t i = next.fetch_add(1);
        if (i >= result.scheduled) return;
        const auto due =
            start + std::chrono::duration_cast<Clock::duration>(interval * i);
        if (Clock::now() > deadline) {
          ++abandoned;
          continue;
        }
        std::this_thread::sleep_until(due);
        sink +=
            RagRetrieval(collection, QuestionFor(questions, i), mode, options);
        const auto end = Clock::now();
        latency_us[i] = Micros(end - due);
        last_done[w] = end;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const auto end = *std::max_element(last_done.begin(), last_done.end());
  result.wall_s = Seconds(end - start);
  result.cpu_cores = (CpuSeconds() - cpu_before) / result.wall_s;
  std::vector<double> measured;
  for (double us : latency_us) {
    if (us >= 0) measured.push_back(us);
  }
  result.completed = static_cast<int64_t>(measured.size());
  result.abandoned = abandoned;
  result.achieved_qps = result.completed / result.wall_s;
  result.us = Summarize(std::move(measured));
  return result;
}

// One thread, no load: what each piece of a hybrid Search costs. Hybrid
// asks both lists for max(4k, 50) results, then RRF-fuses them; the vector
// list is embedding + FAISS + ChunksById (one SQL lookup per id).
void HybridPieces(const std::vector<Target>& targets,
                  const std::vector<std::string>& questions,
                  const Options& options) {
  const int depth = std::max(options.top_k * 4, 50);
  std::cout << absl::StrFormat(
      "\n### Pieces of one hybrid retrieval (single thread, idle; mean µs "
      "over the questions; depth %d)\n\n"
      "| collection | store KeywordSearch(%d), word counts read | same, "
      "counts cached | "
      "Embed(query) | Search(vector, "
      "%d) | of which ChunksById(%d ids) | Search(hybrid, %d) + "
      "AssembleContext | n |\n|---|---|---|---|---|---|---|---|\n",
      depth, depth, depth, depth, options.top_k);
  for (const Target& target : targets) {
    double keyword = 0, keyword_content = 0, embed = 0, vector = 0, by_id = 0,
           hybrid = 0;
    int n = 0;
    const auto start = Clock::now();
    while (n < static_cast<int>(questions.size()) &&
           (n < 5 || Clock::now() - start < std::chrono::seconds(10))) {
      const std::string& q = questions[n];
      auto t0 = Clock::now();
      auto kw = target.store->KeywordSearch(target.collection_name, q, depth);
      auto t1 = Clock::now();
      // The second time, each word's chunk count comes from the cache.
      auto kw_content =
          target.store->KeywordSearch(target.collection_name, q, depth);
      auto t1b = Clock::now();
      keyword_content += Micros(t1b - t1);
      t1 = Clock::now();
      auto e = target.collection->Embed(q);
      auto t2 = Clock::now();
      auto v = target.collection->Search(q, depth, SearchMode::kVector);
      auto t3 = Clock::now();
      if (!kw.ok() || !kw_content.ok() || !e.ok() || !v.ok()) std::exit(1);
      std::vector<int64_t> ids;
      for (const SearchHit& hit : *v) ids.push_back(hit.chunk_id);
      auto t4 = Clock::now();
      auto chunks = target.store->ChunksById(ids);
      auto t5 = Clock::now();
      RagRetrieval(*target.collection, q, SearchMode::kHybrid, options);
      auto t6 = Clock::now();
      keyword += Micros(t1 - t0);
      embed += Micros(t2 - t1);
      vector += Micros(t3 - t2);
      by_id += Micros(t5 - t4);
      hybrid += Micros(t6 - t5);
      ++n;
    }
    std::cout << absl::StrFormat(
        "| %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %d |\n", target.name,
        keyword / n, keyword_content / n, embed / n, vector / n, by_id / n,
        hybrid / n, n);
  }
}

void LatencyTables(const std::vector<Target>& targets,
                   const std::vector<std::string>& questions,
                   const Options& options) {
  std::cout << absl::StrFormat(
      "\n### RAG retrieval latency (Search(mode, k=%d) + "
      "AssembleContext(%d tokens); open loop, %d workers, %.0f s per row; "
      "µs from the scheduled start)\n\n"
      "| collection | mode | capacity QPS (closed loop) | offered QPS | "
      "achieved QPS | completed / scheduled | p50 µs | p90 µs | p99 µs | "
      "max µs | CPU cores |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|\n",
      options.top_k, options.max_context_tokens, options.workers,
      options.seconds);
  for (const Target& target : targets) {
    for (SearchMode mode :
         {SearchMode::kHybrid, SearchMode::kKeyword, SearchMode::kVector}) {
      // Also the warm-up.
      const double capacity =
          Capacity(*target.collection, questions, mode, options, 3);
      std::vector<double> rates = {options.qps};
      if (capacity < options.qps * 1.05) {
        rates.push_back(std::max(1.0, std::floor(capacity * 0.8)));
      }
      for (double rate : rates) {
        const OpenLoopResult r =
            OpenLoop(*target.collection, questions, mode, options, rate);
        std::cout << absl::StrFormat(
            "| %s | %s | %.0f | %.0f | %.0f | %d / %d | %.0f | %.0f | %.0f | "
            "%.0f | %.2f |\n",
            target.name, ModeName(mode), capacity, r.offered_qps,
            r.achieved_qps, r.completed, r.scheduled, r.us.p50, r.us.p90,
            r.us.p99, r.us.max, r.cpu_cores);
        std::cout.flush();
      }
    }
  }
}

// ---------------------------------------------------------------- main

bool ParseFlags(int argc, char** argv, Options& options) {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    bool ok = true;
    if (flag == "--docs") {
      ok = absl::SimpleAtoi(value(), &options.docs) && options.docs >= 10;
    } else if (flag == "--quick") {
      options.docs = 5000;
      options.seconds = 5;
    } else if (flag == "--corpus") {
      options.corpus = value();
    } else if (flag == "--stores") {
      options.stores = absl::StrSplit(value(), ',', absl::SkipEmpty());
    } else if (flag == "--writers") {
      options.writers.clear();
      for (absl::string_view w : absl::StrSplit(value(), ',')) {
        int n = 0;
        ok = ok && absl::SimpleAtoi(w, &n) && n >= 1;
        options.writers.push_back(n);
      }
    } else if (flag == "--qps") {
      ok = absl::SimpleAtod(value(), &options.qps) && options.qps > 0;
    } else if (flag == "--seconds") {
      ok = absl::SimpleAtod(value(), &options.seconds) && options.seconds > 0;
    } else if (flag == "--workers") {
      ok = absl::SimpleAtoi(value(), &options.workers) && options.workers > 0;
    } else if (flag == "--k") {
      ok = absl::SimpleAtoi(value(), &options.top_k) && options.top_k > 0;
    } else if (flag == "--keyword-budget") {
      ok = absl::SimpleAtoi(value(), &options.keyword_budget) &&
           options.keyword_budget >= 0;
    } else if (flag == "--index") {
      auto kind = ParseIndexKind(value());
      ok = kind.ok();
      if (ok) options.index = *kind;
    } else if (flag == "--latency-store") {
      options.latency_store = value();
    } else if (flag == "--tmpdir") {
      options.tmpdir = value();
    } else if (flag == "--db") {
      options.db = value();
    } else if (flag == "--snapshot") {
      options.snapshot = true;
    } else if (flag == "--no-latency") {
      options.latency = false;
    } else if (flag == "--breakdown") {
      options.breakdown = true;
    } else {
      ok = false;
    }
    if (!ok) {
      std::cerr << "bad flag " << flag << "\n";
      return false;
    }
  }
  return true;
}

int Main(int argc, char** argv) {
  Options options;
  if (!ParseFlags(argc, argv, options)) return 2;
  prctl(PR_SET_TIMERSLACK, 1000);  // 1 µs: sleeps end when they should.
  const std::vector<Document> corpus =
      LoadCorpus(absl::StrCat(options.corpus, "/corpus"));
  const std::vector<std::string> questions =
      LoadQuestions(absl::StrCat(options.corpus, "/questions.jsonl"));
  if (corpus.empty() || questions.empty()) {
    std::cerr << "no corpus or questions under " << options.corpus << "\n";
    return 1;
  }
  std::cout << absl::StrFormat(
      "retrieval_bench: %d quickstart articles repeated to %d documents; "
      "chunks of %d tokens (%d overlap), %d-d built-in embedder, index %s; "
      "keyword match budget %d; "
      "%d questions; %u hardware threads\n",
      corpus.size(), options.docs, options.chunk_tokens,
      options.chunk_overlap_tokens, options.embedding_dim,
      IndexKindName(options.index), options.keyword_budget, questions.size(),
      std::thread::hardware_concurrency());

  if (options.breakdown) Breakdown(options, corpus);

  std::vector<IngestResult> results;
  Loaded kept;  // The collection the latency runs search.
  for (const std::string& kind : options.stores) {
    for (int writers : options.writers) {
      Loaded loaded;
      if (kind == "disk" && writers == 1 && Reopen(options, loaded)) {
        if (options.latency && kept.collection == nullptr &&
            kind == options.latency_store) {
          kept = std::move(loaded);
        }
        continue;
      }
      std::cerr << "ingest: " << kind << " store, " << writers << " writer(s), "
                << options.docs << " documents\n";
      results.push_back(Ingest(options, corpus, kind, writers, loaded));
      if (options.latency && kept.collection == nullptr &&
          kind == options.latency_store) {
        kept = std::move(loaded);
      } else {
        loaded.collection.reset();
        loaded.store.reset();
        if (loaded.path != options.db) RemoveDb(loaded.path);
      }
    }
  }
  if (!results.empty()) PrintIngest(results);

  if (options.latency) {
    // The plain quickstart collection, as the gateway loads it by default
    // (store in memory).
    auto store = DocumentStore::Open(":memory:", StoreOptions(options));
    auto log = std::make_shared<LogLines>();
    auto quickstart =
        Collection::Open(**store, "corpus", MakeCollectionOptions(options, log))
            .value();
    for (const Document& doc : corpus) {
      if (!quickstart->Upsert(doc).ok()) return 1;
    }
    WaitForQuiet();
    std::vector<Target> targets = {
        {absl::StrFormat("quickstart (%d docs, %d chunks, %s)", corpus.size(),
                         quickstart->Stats().vectors,
                         IndexKindName(quickstart->Stats().kind)),
         quickstart.get(), store->get(), "corpus"}};
    if (kept.collection != nullptr) {
      const IndexStats stats = kept.collection->Stats();
      targets.push_back(
          {absl::StrFormat("%d docs, %d chunks, %s, %s store", options.docs,
                           stats.vectors, IndexKindName(stats.kind),
                           options.latency_store),
           kept.collection.get(), kept.store.get(), "bench"});
    }
    HybridPieces(targets, questions, options);
    LatencyTables(targets, questions, options);
    std::cout << absl::StrFormat("\nRSS at the end: %.0f MB (peak %.0f MB)\n",
                                 RssMb(), HwmMb());
  }
  kept.collection.reset();
  kept.store.reset();
  if (kept.path != options.db) RemoveDb(kept.path);
  return 0;
}

}  // namespace
}  // namespace arbiter::retrieval

int main(int argc, char** argv) { return arbiter::retrieval::Main(argc, argv); }
