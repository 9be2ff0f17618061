#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace arbiter::retrieval {

// Relevance judgements: query id -> document id -> grade (> 0 relevant).
using Qrels = std::map<std::string, std::map<std::string, double>>;

// Standard ranking metrics averaged over the judged queries.
struct RankingMetrics {
  int queries = 0;
  double ndcg_at_10 = 0;
  double recall_at_10 = 0;
  double recall_at_100 = 0;
  double mrr = 0;  // Reciprocal rank of the first relevant document.
};

// `runs` maps a query id to its ranked document ids (best first; repeated
// documents count once, at their first rank). Queries without relevant
// documents in the qrels are skipped, as trec_eval does.
[[nodiscard]] RankingMetrics Evaluate(
    const Qrels& qrels,
    const std::map<std::string, std::vector<std::string>>& runs);

// BEIR: queries.jsonl ({"_id", "text"} per line) and a qrels TSV
// ("query-id corpus-id score", optional header).
[[nodiscard]] absl::StatusOr<std::map<std::string, std::string>>
ParseBeirQueries(absl::string_view jsonl);
[[nodiscard]] absl::StatusOr<Qrels> ParseBeirQrels(absl::string_view tsv);
// TREC: topics (<num> and <title> fields) and qrels ("qid 0 docid grade").
[[nodiscard]] absl::StatusOr<std::map<std::string, std::string>>
ParseTrecTopics(absl::string_view text);
[[nodiscard]] absl::StatusOr<Qrels> ParseTrecQrels(absl::string_view text);

}  // namespace arbiter::retrieval
