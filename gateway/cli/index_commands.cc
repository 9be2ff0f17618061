// index add | search | stats: the Retrieval service from the command line.

#include <filesystem>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "gateway/cli/args.h"
#include "gateway/cli/client.h"
#include "gateway/cli/commands.h"
#include "gateway/config.h"
#include "gateway/file_source.h"
#include "nlohmann/json.hpp"
#include "retrieval/eval.h"
#include "retrieval/retriever.h"

namespace arbiter::cli {
namespace {

namespace fs = std::filesystem;

constexpr int kBatch = 32;

// Plain text and Markdown files are one document each; JSON Lines files hold
// one {"id", "title", "text", "metadata"} object per line.
absl::Status ReadDocuments(const fs::path& path,
                           std::vector<v1::RetrievalDocument>& out) {
  auto content = MakeDiskFileSource(".")->Read(path.string());
  if (!content.ok()) return content.status();
  std::string extension = path.extension().string();
  if (extension == ".jsonl") {
    int line_number = 0;
    for (absl::string_view line : absl::StrSplit(*content, '\n')) {
      ++line_number;
      if (absl::StripAsciiWhitespace(line).empty()) continue;
      auto item = nlohmann::json::parse(line, nullptr, false);
      if (item.is_discarded() || !item.is_object() || !item.contains("id") ||
          !item.contains("text") || !item["text"].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path.string(), ":", line_number,
                         ": needs a JSON object with \"id\" and \"text\""));
      }
      v1::RetrievalDocument document;
      document.set_id(item["id"].is_string() ? item["id"].get<std::string>()
                                             : item["id"].dump());
      document.set_title(item.value("title", document.id()));
      document.set_text(item["text"].get<std::string>());
      document.set_source(path.string());
      if (item.contains("metadata")) {
        document.set_metadata_json(item["metadata"].dump());
      }
      out.push_back(std::move(document));
    }
    return absl::OkStatus();
  }
  if (extension != ".md" && extension != ".txt" && extension != ".markdown") {
    return absl::OkStatus();  // Not a document: skipped.
  }
  retrieval::Document parsed =
      retrieval::ParseDocument(path.filename().string(), *content);
  v1::RetrievalDocument document;
  document.set_id(parsed.id);
  document.set_title(parsed.title);
  document.set_text(parsed.text);
  document.set_source(path.string());
  out.push_back(std::move(document));
  return absl::OkStatus();
}

int IndexAdd(const Args& args) {
  if (args.positional().size() < 2) {
    std::cerr << "usage: arbiter index add --collection C PATH...\n";
    return 2;
  }
  std::vector<v1::RetrievalDocument> documents;
  for (size_t i = 1; i < args.positional().size(); ++i) {
    fs::path path = args.positional()[i];
    std::error_code error;
    if (fs::is_directory(path, error)) {
      std::vector<fs::path> files;
      for (const auto& entry : fs::recursive_directory_iterator(path, error)) {
        if (entry.is_regular_file()) files.push_back(entry.path());
      }
      std::sort(files.begin(), files.end());
      for (const fs::path& file : files) {
        if (absl::Status s = ReadDocuments(file, documents); !s.ok()) {
          return Fail(s.message());
        }
      }
    } else if (absl::Status s = ReadDocuments(path, documents); !s.ok()) {
      return Fail(s.message());
    }
  }
  if (documents.empty()) return Fail("no .md, .txt or .jsonl documents found");
  auto stub =
      v1::Retrieval::NewStub(Connect(args.Get("target", kDefaultTarget)));
  const absl::Time start = absl::Now();
  size_t done = 0;
  for (size_t begin = 0; begin < documents.size(); begin += kBatch) {
    v1::UpsertRequest request;
    request.set_collection(args.Get("collection"));
    for (size_t i = begin; i < std::min(documents.size(), begin + kBatch);
         ++i) {
      *request.add_documents() = documents[i];
    }
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(120));
    v1::UpsertResponse response;
    grpc::Status status = stub->Upsert(&context, request, &response);
    if (!status.ok()) {
      std::cerr << "\n";
      return FailRpc(status);
    }
    done += request.documents_size();
    double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    double rate = seconds > 0 ? done / seconds : 0;
    int width = 30;
    int filled = static_cast<int>(width * done / documents.size());
    std::cerr << absl::StrFormat(
        "\r[%s%s] %d/%d documents, %.0f docs/s, ETA %.0f s",
        std::string(filled, '#'), std::string(width - filled, ' '), done,
        documents.size(), rate,
        rate > 0 ? (documents.size() - done) / rate : 0);
  }
  std::cerr << "\n";
  std::cout << absl::StrFormat("added %d documents to \"%s\" in %.2f s\n",
                               documents.size(), args.Get("collection"),
                               absl::ToDoubleSeconds(absl::Now() - start));
  return 0;
}

int IndexSearch(const Args& args) {
  if (args.positional().size() != 2) {
    std::cerr
        << "usage: arbiter index search --collection C [--mode M] [--k N] "
           "QUERY\n";
    return 2;
  }
  auto k = args.GetInt("k", 5);
  if (!k.ok()) return Fail(k.status().message());
  v1::SearchRequest request;
  request.set_collection(args.Get("collection"));
  request.set_query(args.positional()[1]);
  request.set_k(*k);
  if (args.Has("mode")) {
    auto mode = ParseEnumName<v1::SearchMode>(args.Get("mode"));
    if (!mode.ok())
      return Fail(absl::StrCat("--mode: ", mode.status().message()));
    request.set_mode(*mode);
  }
  auto stub =
      v1::Retrieval::NewStub(Connect(args.Get("target", kDefaultTarget)));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(30));
  v1::SearchResponse response;
  grpc::Status status = stub->Search(&context, request, &response);
  if (!status.ok()) return FailRpc(status);
  int rank = 0;
  for (const v1::SearchResult& result : response.results()) {
    std::string text = result.text().substr(0, 160);
    std::replace(text.begin(), text.end(), '\n', ' ');
    std::cout << absl::StrFormat("%2d. %-32s chunk %-6d score %.4f\n    %s\n",
                                 ++rank, result.doc_id(), result.chunk_id(),
                                 result.score(), text);
  }
  if (rank == 0) std::cout << "no results\n";
  return 0;
}

int IndexStats(const Args& args) {
  v1::GetCollectionRequest request;
  request.set_name(args.Get("collection"));
  auto stub =
      v1::Retrieval::NewStub(Connect(args.Get("target", kDefaultTarget)));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  v1::CollectionInfo info;
  grpc::Status status = stub->GetCollection(&context, request, &info);
  if (!status.ok()) return FailRpc(status);
  const v1::IndexSnapshotInfo& snapshot = info.snapshot();
  std::cout << absl::StrFormat(
      "collection  %s\ndocuments   %d\nchunks      %d\nstore at    change %d\n"
      "index       %s, %d vectors, %d tombstones, %.1f MiB, %d rebuilds\n"
      "opened      %s\n",
      info.name(), info.documents(), info.chunks(), info.last_change(),
      info.index_kind(), info.index_vectors(), info.index_tombstones(),
      info.index_memory_bytes() / 1048576.0, info.index_rebuilds(),
      info.index_opened_from());
  if (info.index_growths() > 0) {
    std::cout << absl::StrFormat(
        "room        grown ahead of need %d times (the last held index "
        "updates for %.1f ms)\n",
        info.index_growths(), info.index_growth_hold_ms());
  }
  if (snapshot.path().empty()) {
    std::cout << "snapshot    off (in-memory store)\n";
  } else if (!snapshot.saved()) {
    std::cout << "snapshot    none yet at " << snapshot.path() << "\n";
  } else {
    std::cout << absl::StrFormat(
        "snapshot    %s\n            written %s, %.1f MiB (copied in %.0f "
        "ms), covers removal %d and chunk %d; %d changes since\n",
        snapshot.path(), snapshot.written_at(), snapshot.bytes() / 1048576.0,
        snapshot.copy_ms(), snapshot.position_removal(),
        snapshot.position_chunk(), snapshot.changes_since());
  }
  return 0;
}

// Ranks every query in every mode through the Retrieval service and scores
// the rankings against the judgements (BEIR or TREC files).
int IndexEval(const Args& args) {
  if (!args.Has("queries") || !args.Has("qrels")) {
    std::cerr << "usage: arbiter index eval --collection C --queries Q "
                 "--qrels R [--format beir|trec]\n";
    return 2;
  }
  auto files = MakeDiskFileSource(".");
  auto queries_text = files->Read(args.Get("queries"));
  auto qrels_text = files->Read(args.Get("qrels"));
  if (!queries_text.ok()) return Fail(queries_text.status().message());
  if (!qrels_text.ok()) return Fail(qrels_text.status().message());
  std::string format =
      args.Get("format",
               absl::EndsWith(args.Get("queries"), ".jsonl") ? "beir" : "trec");
  absl::StatusOr<std::map<std::string, std::string>> queries;
  absl::StatusOr<retrieval::Qrels> qrels;
  if (format == "beir") {
    queries = retrieval::ParseBeirQueries(*queries_text);
    qrels = retrieval::ParseBeirQrels(*qrels_text);
  } else if (format == "trec") {
    queries = retrieval::ParseTrecTopics(*queries_text);
    qrels = retrieval::ParseTrecQrels(*qrels_text);
  } else {
    return Fail(
        absl::StrCat("--format: must be beir or trec, got \"", format, "\""));
  }
  if (!queries.ok()) return Fail(queries.status().message());
  if (!qrels.ok()) return Fail(qrels.status().message());
  auto stub =
      v1::Retrieval::NewStub(Connect(args.Get("target", kDefaultTarget)));
  std::cout << absl::StrFormat("%-8s %8s %9s %9s %10s %7s\n", "mode", "queries",
                               "nDCG@10", "R@10", "R@100", "MRR");
  for (v1::SearchMode mode : {v1::SEARCH_MODE_KEYWORD, v1::SEARCH_MODE_VECTOR,
                              v1::SEARCH_MODE_HYBRID}) {
    std::map<std::string, std::vector<std::string>> runs;
    for (const auto& [id, text] : *queries) {
      if (!qrels->contains(id)) continue;
      v1::SearchRequest request;
      request.set_collection(args.Get("collection"));
      request.set_query(text);
      request.set_k(100);
      request.set_mode(mode);
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::seconds(30));
      v1::SearchResponse response;
      grpc::Status status = stub->Search(&context, request, &response);
      if (status.error_code() == grpc::INVALID_ARGUMENT) continue;  // No words.
      if (!status.ok()) return FailRpc(status);
      for (const v1::SearchResult& result : response.results()) {
        runs[id].push_back(result.doc_id());
      }
    }
    retrieval::RankingMetrics metrics = retrieval::Evaluate(*qrels, runs);
    std::cout << absl::StrFormat("%-8s %8d %9.4f %9.4f %10.4f %7.4f\n",
                                 EnumName(mode), metrics.queries,
                                 metrics.ndcg_at_10, metrics.recall_at_10,
                                 metrics.recall_at_100, metrics.mrr);
  }
  return 0;
}

}  // namespace

int RunIndex(int argc, char** argv) {
  auto args = Args::Parse(
      argc, argv,
      {"target", "collection", "mode", "k", "queries", "qrels", "format"}, {});
  if (!args.ok()) return Fail(args.status().message());
  if (args->positional().empty() || !args->Has("collection")) {
    std::cerr << "usage: arbiter index (add PATH... | search QUERY | stats | "
                 "eval --queries Q --qrels R) --collection C [--target ADDR]\n";
    return 2;
  }
  const std::string& verb = args->positional().front();
  if (verb == "add") return IndexAdd(*args);
  if (verb == "search") return IndexSearch(*args);
  if (verb == "stats") return IndexStats(*args);
  if (verb == "eval") return IndexEval(*args);
  return Fail(absl::StrCat("index: unknown command \"", verb, "\""));
}

}  // namespace arbiter::cli
