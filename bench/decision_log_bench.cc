// What the decision log costs per request, measured from the allocator, and
// what keeping embeddings as 8-bit codes does to contextual decisions.
//   ./build/bench/decision_log_bench [--max-mb 64] [--dim 512]

#include <malloc.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gateway/config.h"
#include "nlohmann/json.hpp"
#include "policy/decision_log.h"
#include "policy/engine.h"
#include "policy/hash.h"
#include "policy/route_stats.h"
#include "retrieval/embedder.h"

namespace arbiter::policy {
namespace {

size_t AllocatedBytes() {
  const struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
}

// About as long as a real one: "arb2_" and the base64 of route, task, time,
// nonce and MAC.
std::string RequestId(int64_t i) {
  return absl::StrCat("arb2_", std::string(48, 'x'), "_", i);
}

std::vector<float> UnitVector(int dim, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> v(dim);
  float norm = 0;
  for (float& x : v) {
    x = normal(rng);
    norm += x * x;
  }
  for (float& x : v) x /= std::sqrt(norm);
  return v;
}

// Fills a log past its budget twice over, so every generation has turned
// over, and reports what it holds and what the allocator gave it.
void MeasureMemory(size_t max_bytes, int dim, bool with_embedding) {
  std::mt19937 rng(1);
  const std::vector<float> embedding =
      with_embedding ? UnitVector(dim, rng) : std::vector<float>();
  const size_t before = AllocatedBytes();
  auto log = std::make_unique<DecisionLog>(
      DecisionLog::Options{.max_bytes = max_bytes, .embedding_dim = dim});
  const size_t per_request = with_embedding ? dim + 4 + 16 : 16;
  const int64_t requests = 2 * static_cast<int64_t>(max_bytes / per_request);
  size_t fewest = SIZE_MAX;
  size_t most = 0;
  size_t peak = 0;
  for (int64_t i = 0; i < requests; ++i) {
    log->Record(RequestId(i), embedding);
    if (i >= requests / 2) {
      const size_t size = log->size();
      fewest = std::min(fewest, size);
      most = std::max(most, size);
      if (i % 1024 == 0) peak = std::max(peak, AllocatedBytes() - before);
    }
  }
  const size_t allocated = AllocatedBytes() - before;
  const size_t size = log->size();
  std::printf("%-16s %10zu %10zu %10zu %10.1f %10.1f %10.1f %10.1f\n",
              with_embedding ? absl::StrCat(dim, "-d embedding").c_str()
                             : "no embedding",
              size, fewest, most, log->bytes() / 1048576.0,
              allocated / 1048576.0, static_cast<double>(allocated) / size,
              peak / 1048576.0);
}

struct Question {
  std::string text;
  std::string doc;
};

std::vector<Question> ReadQuestions(const std::string& path) {
  std::ifstream in(path);
  std::vector<Question> questions;
  for (std::string line; std::getline(in, line);) {
    auto json = nlohmann::json::parse(line, nullptr, false);
    if (!json.is_object()) continue;
    questions.push_back({json.value("question", ""), json.value("doc", "")});
  }
  return questions;
}

std::vector<std::string> ReadCorpus(const std::vector<Question>& questions,
                                    const std::string& dir) {
  std::vector<std::string> documents;
  for (const Question& question : questions) {
    std::ifstream in(absl::StrCat(dir, "/", question.doc, ".md"));
    std::stringstream text;
    text << in.rdbuf();
    documents.push_back(text.str());
  }
  return documents;
}

v1::Config ContextualConfig(int dim) {
  v1::Config config;
  config.add_tasks("faq");
  for (int r = 0; r < 3; ++r) {
    v1::Route* route = config.add_routes();
    route->set_name(absl::StrCat("route-", r));
    route->set_kind(v1::ROUTE_KIND_PROMPTED);
  }
  config.mutable_policy()->mutable_contextual()->set_cost_weight(0);
  config.mutable_retrieval()->set_embedding_dim(dim);
  // The engine reads a config with its defaults applied, as a loaded one.
  ApplyConfigDefaults(config);
  return config;
}

// Two contextual engines learn from the same judged traffic, one from the
// prompts' float embeddings, one from what the decision log gives back;
// then both decide every question. Prompts are the quickstart's questions
// embedded as the gateway does; each route is good on a third of the
// articles.
void MeasureDecisions(const std::string& source_dir, int dim) {
  const std::vector<Question> questions =
      ReadQuestions(absl::StrCat(source_dir, "/quickstart/questions.jsonl"));
  if (questions.empty()) {
    std::printf("no quickstart questions under %s\n", source_dir.c_str());
    return;
  }
  const std::vector<std::string> documents =
      ReadCorpus(questions, absl::StrCat(source_dir, "/quickstart/corpus"));
  retrieval::HashedNgramEmbedder embedder(dim);
  embedder.Fit(
      std::vector<absl::string_view>(documents.begin(), documents.end()));
  std::vector<std::vector<float>> embeddings;
  for (const Question& question : questions) {
    embeddings.push_back(embedder.Embed(question.text));
  }
  auto exact = Engine::Create(ContextualConfig(dim), {0.001, 0.001, 0.001});
  auto coded = Engine::Create(ContextualConfig(dim), {0.001, 0.001, 0.001});
  if (!exact.ok() || !coded.ok()) {
    std::printf("engine: %s\n", exact.status().ToString().c_str());
    return;
  }
  DecisionLog log({.max_bytes = size_t{64} << 20, .embedding_dim = dim});
  RouteStats stats(3, 1, absl::ZeroDuration());
  std::mt19937 rng(5);
  double worst_similarity_error = 0;
  double similarity_error_sum = 0;
  int64_t pairs = 0;
  // Eight judged answers per question and route, in random order.
  std::vector<int> order;
  for (int round = 0; round < 8; ++round) {
    for (size_t q = 0; q < questions.size(); ++q) order.push_back(q);
  }
  std::shuffle(order.begin(), order.end(), rng);
  for (size_t i = 0; i < order.size(); ++i) {
    const int q = order[i];
    const int route = static_cast<int>(i % 3);
    const bool good =
        StableHash64(questions[q].doc) % 3 == static_cast<uint64_t>(route);
    const double score =
        std::bernoulli_distribution(good ? 0.9 : 0.4)(rng) ? 1 : 0;
    const std::string id = RequestId(static_cast<int64_t>(i));
    log.Record(id, embeddings[q]);
    auto kept = log.TakeFeedback(id);
    if (!kept.ok() || kept->size() != embeddings[q].size()) {
      std::printf("the log lost request %zu\n", i);
      return;
    }
    // Against another question: the similarity the memory would compute.
    const std::vector<float>& other = embeddings[order[(i + 1) % order.size()]];
    double exact_dot = 0;
    double coded_dot = 0;
    for (int d = 0; d < dim; ++d) {
      exact_dot += other[d] * embeddings[q][d];
      coded_dot += other[d] * (*kept)[d];
    }
    worst_similarity_error =
        std::max(worst_similarity_error, std::fabs(exact_dot - coded_dot));
    similarity_error_sum += std::fabs(exact_dot - coded_dot);
    ++pairs;
    (*exact)->ObserveOutcome(0, route, embeddings[q], score);
    (*coded)->ObserveOutcome(0, route, *kept, score);
    stats.RecordCompletion(route, 0, {100, 50, 0.001, 0.1});
    stats.RecordFeedback(route, 0, score);
  }
  stats.Publish();
  int same = 0;
  int right_exact = 0;
  int right_coded = 0;
  for (size_t q = 0; q < questions.size(); ++q) {
    RequestFeatures features;
    features.embedding = embeddings[q];
    features.uniform = 0.5;  // Past exploration: every route is judged.
    auto a = (*exact)->Decide(features, *stats.Snapshot());
    auto b = (*coded)->Decide(features, *stats.Snapshot());
    if (!a.ok() || !b.ok()) continue;
    const int good = static_cast<int>(StableHash64(questions[q].doc) % 3);
    same += a->route == b->route;
    right_exact += a->route == good;
    right_coded += b->route == good;
  }
  std::printf(
      "\n%zu quickstart questions, %d-d hashed n-gram embeddings, %zu judged "
      "answers:\n"
      "similarity error of 8-bit codes: mean %.5f, worst %.5f\n"
      "same route chosen: %d of %zu; best route chosen: %d (float) and %d "
      "(8-bit)\n",
      questions.size(), dim, order.size(), similarity_error_sum / pairs,
      worst_similarity_error, same, questions.size(), right_exact, right_coded);
}

}  // namespace
}  // namespace arbiter::policy

int main(int argc, char** argv) {
  size_t max_mb = 64;
  int dim = 512;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--max-mb") == 0) max_mb = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--dim") == 0) dim = std::atoi(argv[i + 1]);
  }
  std::printf(
      "decision log of %zu MiB, filled twice over; requests held at the end, "
      "fewest and most while refilling; MiB as counted by the log and by "
      "mallinfo2\n%-16s %10s %10s %10s %10s %10s %10s %10s\n",
      max_mb, "", "held", "fewest", "most", "MiB (log)", "MiB (malloc)",
      "B/request", "peak MiB");
  arbiter::policy::MeasureMemory(max_mb << 20, dim, false);
  arbiter::policy::MeasureMemory(max_mb << 20, dim, true);
  arbiter::policy::MeasureDecisions(ARBITER_SOURCE_DIR, dim);
  return 0;
}
