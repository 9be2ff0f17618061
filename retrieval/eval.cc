#include "retrieval/eval.h"

#include <cmath>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/json.h"

namespace arbiter::retrieval {

RankingMetrics Evaluate(
    const Qrels& qrels,
    const std::map<std::string, std::vector<std::string>>& runs) {
  RankingMetrics metrics;
  for (const auto& [query, judged] : qrels) {
    std::vector<double> ideal;
    for (const auto& [doc, grade] : judged) {
      if (grade > 0) ideal.push_back(grade);
    }
    if (ideal.empty()) continue;
    ++metrics.queries;
    std::sort(ideal.rbegin(), ideal.rend());
    auto run = runs.find(query);
    std::vector<std::string> ranked;
    if (run != runs.end()) {
      std::set<std::string> seen;
      for (const std::string& doc : run->second) {
        if (seen.insert(doc).second) ranked.push_back(doc);
      }
    }
    // Named, not the binding itself: clang 14 cannot capture bindings.
    const auto& grades = judged;
    auto grade = [&](size_t rank) {
      auto it = grades.find(ranked[rank]);
      return it == grades.end() ? 0.0 : it->second;
    };
    double dcg = 0, idcg = 0;
    for (size_t i = 0; i < 10; ++i) {
      double discount = 1 / std::log2(i + 2.0);
      if (i < ranked.size()) dcg += (std::pow(2, grade(i)) - 1) * discount;
      if (i < ideal.size()) idcg += (std::pow(2, ideal[i]) - 1) * discount;
    }
    metrics.ndcg_at_10 += idcg > 0 ? dcg / idcg : 0;
    int found10 = 0, found100 = 0;
    double reciprocal = 0;
    for (size_t i = 0; i < ranked.size() && i < 100; ++i) {
      if (grade(i) <= 0) continue;
      if (i < 10) ++found10;
      ++found100;
      if (reciprocal == 0) reciprocal = 1.0 / (i + 1);
    }
    metrics.recall_at_10 += static_cast<double>(found10) / ideal.size();
    metrics.recall_at_100 += static_cast<double>(found100) / ideal.size();
    metrics.mrr += reciprocal;
  }
  if (metrics.queries > 0) {
    metrics.ndcg_at_10 /= metrics.queries;
    metrics.recall_at_10 /= metrics.queries;
    metrics.recall_at_100 /= metrics.queries;
    metrics.mrr /= metrics.queries;
  }
  return metrics;
}

absl::StatusOr<std::map<std::string, std::string>> ParseBeirQueries(
    absl::string_view jsonl) {
  std::map<std::string, std::string> queries;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(jsonl, '\n')) {
    ++line_number;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    auto error = [line_number](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat("queries line ", line_number, ": ", what));
    };
    auto parsed = json::Parse(line);
    if (!parsed.ok()) return error(parsed.status().message());
    const json::View item(*parsed);
    if (!item.is_object()) {
      return error(absl::StrCat("expected a JSON object, got ",
                                json::TypeName(*parsed)));
    }
    // BEIR ids are strings; a number stands for its digits.
    const json::View id = item["_id"];
    absl::StatusOr<std::string> id_text =
        id.get() != nullptr && id.get()->is_number() ? json::Dump(*id.get())
                                                     : id.String();
    if (!id_text.ok()) return error(id_text.status().message());
    auto text = item["text"].String();
    if (!text.ok()) return error(text.status().message());
    queries[*id_text] = *std::move(text);
  }
  return queries;
}

namespace {

absl::StatusOr<Qrels> ParseColumns(absl::string_view text, size_t columns,
                                   size_t doc_column, size_t grade_column,
                                   absl::string_view format) {
  Qrels qrels;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    double grade;
    if (fields.size() != columns ||
        !absl::SimpleAtod(fields[grade_column], &grade)) {
      if (line_number == 1) continue;  // A header.
      return absl::InvalidArgumentError(
          absl::StrCat(format, " qrels line ", line_number, ": expected ",
                       columns, " columns ending in a grade"));
    }
    qrels[std::string(fields[0])][std::string(fields[doc_column])] = grade;
  }
  return qrels;
}

}  // namespace

absl::StatusOr<Qrels> ParseBeirQrels(absl::string_view tsv) {
  return ParseColumns(tsv, 3, 1, 2, "BEIR");
}

absl::StatusOr<Qrels> ParseTrecQrels(absl::string_view text) {
  return ParseColumns(text, 4, 2, 3, "TREC");
}

absl::StatusOr<std::map<std::string, std::string>> ParseTrecTopics(
    absl::string_view text) {
  std::map<std::string, std::string> topics;
  std::string number;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (absl::ConsumePrefix(&line, "<num>")) {
      line = absl::StripAsciiWhitespace(line);
      absl::ConsumePrefix(&line, "Number:");
      number = std::string(absl::StripAsciiWhitespace(line));
    } else if (absl::ConsumePrefix(&line, "<title>")) {
      if (number.empty()) {
        return absl::InvalidArgumentError("TREC topics: <title> before <num>");
      }
      line = absl::StripAsciiWhitespace(line);
      absl::ConsumePrefix(&line, "Topic:");
      topics[number] = std::string(absl::StripAsciiWhitespace(line));
    }
  }
  if (topics.empty()) {
    return absl::InvalidArgumentError("TREC topics: no <num>/<title> found");
  }
  return topics;
}

}  // namespace arbiter::retrieval
