// index add | search | stats: the Retrieval service from the command line.

#include <unistd.h>

#include <filesystem>
#include <iostream>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "common/json.h"
#include "gateway/cli/client.h"
#include "gateway/cli/commands.h"
#include "gateway/cli/flags.h"
#include "gateway/config.h"
#include "gateway/file_source.h"
#include "retrieval/eval.h"
#include "retrieval/retriever.h"

namespace arbiter::cli {
namespace {

namespace fs = std::filesystem;

constexpr int kBatch = 32;

// One {"id", "title", "text", "metadata"} object of a JSON Lines file.
absl::StatusOr<v1::RetrievalDocument> DocumentOfJsonLine(
    absl::string_view line) {
  auto parsed = json::Parse(line);
  if (!parsed.ok()) return parsed.status();
  const json::View item(*parsed);
  if (!item.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected a JSON object, got ", json::TypeName(*parsed)));
  }
  v1::RetrievalDocument document;
  const json::View id = item["id"];
  if (id.get() != nullptr && id.get()->is_number()) {
    document.set_id(json::Dump(*id.get()));  // 17 is "17".
  } else {
    auto text_id = id.String();
    if (!text_id.ok()) return text_id.status();
    document.set_id(*text_id);
  }
  auto text = item["text"].String();
  if (!text.ok()) return text.status();
  document.set_text(*text);
  auto title = item["title"].OptionalString();
  if (!title.ok()) return title.status();
  document.set_title(title->value_or(document.id()));
  if (!item["metadata"].is_null()) {
    document.set_metadata_json(json::Dump(*item["metadata"].get()));
  }
  return document;
}

absl::Status ReadDocuments(const fs::path& path,
                           std::vector<v1::RetrievalDocument>& out) {
  auto content = MakeDiskFileSource(".")->Read(path.string());
  if (!content.ok()) return content.status();
  auto documents = DocumentsOfFile(path.string(), *content);
  if (!documents.ok()) return documents.status();
  for (v1::RetrievalDocument& document : *documents) {
    out.push_back(std::move(document));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<v1::RetrievalDocument>> DocumentsOfFile(
    const std::string& path, absl::string_view content) {
  std::vector<v1::RetrievalDocument> out;
  const std::string extension = fs::path(path).extension().string();
  if (extension == ".jsonl") {
    int line_number = 0;
    for (absl::string_view line : absl::StrSplit(content, '\n')) {
      ++line_number;
      if (absl::StripAsciiWhitespace(line).empty()) continue;
      auto document = DocumentOfJsonLine(line);
      if (!document.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": line ", line_number, ": ", document.status().message()));
      }
      document->set_source(path);
      out.push_back(*std::move(document));
    }
    return out;
  }
  if (extension != ".md" && extension != ".txt" && extension != ".markdown") {
    return out;  // Not a document: skipped.
  }
  retrieval::Document parsed = retrieval::ParseDocument(
      fs::path(path).filename().string(), std::string(content));
  v1::RetrievalDocument document;
  document.set_id(parsed.id);
  document.set_title(parsed.title);
  document.set_text(parsed.text);
  document.set_source(path);
  out.push_back(std::move(document));
  return out;
}

namespace {

// The collection every index command names, and its gateway.
void AddCollectionFlags(CLI::App& command, std::string& target,
                        std::string& api_key_file, std::string& collection) {
  AddTarget(command, target, api_key_file);
  command.add_option("--collection", collection, "the collection's name")
      ->type_name("C")
      ->required();
}

}  // namespace

IndexCommands AddIndexCommands(CLI::App& arbiter, IndexAddFlags& add,
                               IndexSearchFlags& search, IndexStatsFlags& stats,
                               IndexEvalFlags& eval) {
  CLI::App* index = arbiter.add_subcommand(
      "index",
      "Ingest, search, show and evaluate a collection of the gateway.\n"
      "Needs a running gateway (`arbiter serve`) at --target.");
  index->require_subcommand(1);
  index->footer(
      "Example:\n  arbiter index add --collection kb quickstart/corpus\n"
      "`arbiter index COMMAND --help` shows a command's flags.");
  IndexCommands commands;

  commands.add = AddCommand(
      *index, "add",
      "Ingest files and folders into a collection.\n.md, .txt and .markdown "
      "files are one document each; .jsonl files hold one\n{\"id\", "
      "\"title\", \"text\", \"metadata\"} object per line; folders are "
      "walked; other\nfiles are skipped. A progress bar shows on a "
      "terminal.",
      "arbiter index add --collection kb quickstart/corpus");
  AddCollectionFlags(*commands.add, add.target, add.api_key_file,
                     add.collection);
  commands.add->add_option("PATH", add.paths, "files and folders")->required();

  commands.search = AddCommand(
      *index, "search", "Ranked chunks of a collection for a query.",
      "arbiter index search --collection kb --mode keyword \"reset my "
      "password\"");
  AddCollectionFlags(*commands.search, search.target, search.api_key_file,
                     search.collection);
  commands.search
      ->add_option("--mode", search.mode, "hybrid, keyword or vector")
      ->type_name("M")
      ->default_str("the gateway's retrieval.search")
      ->check(OneOf({"hybrid", "keyword", "vector"}));
  commands.search->add_option("--k", search.k, "results")
      ->type_name("N")
      ->capture_default_str()
      ->check(Integer())
      ->check(AtLeast(1));
  commands.search->add_option("QUERY", search.query, "the query")->required();

  commands.stats = AddCommand(
      *index, "stats",
      "Show a collection: documents, chunks, index and snapshot.\nStore "
      "position; index kind, vectors, tombstones, memory, rebuilds and "
      "growths;\nhow the index was opened; the snapshot's path, age, size "
      "and changes since.",
      "arbiter index stats --collection kb");
  AddCollectionFlags(*commands.stats, stats.target, stats.api_key_file,
                     stats.collection);

  commands.eval = AddCommand(
      *index, "eval",
      "Score a collection's search against relevance judgements.\nnDCG@10, "
      "recall@10, recall@100 and MRR of keyword, vector and hybrid search;\n"
      "judgements as BEIR (queries.jsonl and a qrels TSV) or TREC (topics "
      "and qrels).",
      "arbiter index eval --collection kb --queries queries.jsonl --qrels "
      "qrels.tsv");
  AddCollectionFlags(*commands.eval, eval.target, eval.api_key_file,
                     eval.collection);
  commands.eval->add_option("--queries", eval.queries, "the queries")
      ->type_name("FILE")
      ->required();
  commands.eval->add_option("--qrels", eval.qrels, "the judgements")
      ->type_name("FILE")
      ->required();
  commands.eval->add_option("--format", eval.format, "beir or trec")
      ->type_name("F")
      ->default_str("beir for a .jsonl --queries, else trec")
      ->check(OneOf({"beir", "trec"}));
  return commands;
}

int RunIndexAdd(const IndexAddFlags& flags) {
  std::vector<v1::RetrievalDocument> documents;
  for (const std::string& argument : flags.paths) {
    fs::path path = argument;
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
  auto credentials = CredentialsOf(flags.api_key_file);
  if (!credentials.ok()) return Fail(credentials.status());
  GatewayChannel channel(flags.target, *credentials);
  auto stub = v1::Retrieval::NewStub(channel.get());
  // The bar redraws a line in place: only on a terminal.
  const bool progress_bar = isatty(STDERR_FILENO);
  const absl::Time start = absl::Now();
  size_t done = 0;
  for (size_t begin = 0; begin < documents.size(); begin += kBatch) {
    v1::UpsertRequest request;
    request.set_collection(flags.collection);
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
      if (progress_bar) std::cerr << "\n";
      return channel.Fail(status);
    }
    done += request.documents_size();
    if (!progress_bar) continue;
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
  if (progress_bar) std::cerr << "\n";
  std::cout << absl::StrFormat("added %d documents to \"%s\" in %.2f s\n",
                               documents.size(), flags.collection,
                               absl::ToDoubleSeconds(absl::Now() - start));
  return 0;
}

int RunIndexSearch(const IndexSearchFlags& flags) {
  v1::SearchRequest request;
  request.set_collection(flags.collection);
  request.set_query(flags.query);
  request.set_k(flags.k);
  if (!flags.mode.empty()) {
    auto mode = ParseEnumName<v1::SearchMode>(flags.mode);
    if (!mode.ok()) {
      return Fail(absl::StrCat("--mode: ", mode.status().message()));
    }
    request.set_mode(*mode);
  }
  auto credentials = CredentialsOf(flags.api_key_file);
  if (!credentials.ok()) return Fail(credentials.status());
  GatewayChannel channel(flags.target, *credentials);
  auto stub = v1::Retrieval::NewStub(channel.get());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(30));
  v1::SearchResponse response;
  grpc::Status status = stub->Search(&context, request, &response);
  if (!status.ok()) return channel.Fail(status);
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

int RunIndexStats(const IndexStatsFlags& flags) {
  v1::GetCollectionRequest request;
  request.set_name(flags.collection);
  auto credentials = CredentialsOf(flags.api_key_file);
  if (!credentials.ok()) return Fail(credentials.status());
  GatewayChannel channel(flags.target, *credentials);
  auto stub = v1::Retrieval::NewStub(channel.get());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  v1::CollectionInfo info;
  grpc::Status status = stub->GetCollection(&context, request, &info);
  if (!status.ok()) return channel.Fail(status);
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
int RunIndexEval(const IndexEvalFlags& flags) {
  auto files = MakeDiskFileSource(".");
  auto queries_text = files->Read(flags.queries);
  auto qrels_text = files->Read(flags.qrels);
  if (!queries_text.ok()) return Fail(queries_text.status().message());
  if (!qrels_text.ok()) return Fail(qrels_text.status().message());
  std::string format = !flags.format.empty()                     ? flags.format
                       : absl::EndsWith(flags.queries, ".jsonl") ? "beir"
                                                                 : "trec";
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
  if (!queries.ok()) {
    return Fail(absl::StrCat(flags.queries, ": ", queries.status().message()));
  }
  if (!qrels.ok()) {
    return Fail(absl::StrCat(flags.qrels, ": ", qrels.status().message()));
  }
  auto credentials = CredentialsOf(flags.api_key_file);
  if (!credentials.ok()) return Fail(credentials.status());
  GatewayChannel channel(flags.target, *credentials);
  auto stub = v1::Retrieval::NewStub(channel.get());
  std::cout << absl::StrFormat("%-8s %8s %9s %9s %10s %7s\n", "mode", "queries",
                               "nDCG@10", "R@10", "R@100", "MRR");
  for (v1::SearchMode mode : {v1::SEARCH_MODE_KEYWORD, v1::SEARCH_MODE_VECTOR,
                              v1::SEARCH_MODE_HYBRID}) {
    std::map<std::string, std::vector<std::string>> runs;
    for (const auto& [id, text] : *queries) {
      if (!qrels->contains(id)) continue;
      v1::SearchRequest request;
      request.set_collection(flags.collection);
      request.set_query(text);
      request.set_k(100);
      request.set_mode(mode);
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::seconds(30));
      v1::SearchResponse response;
      grpc::Status status = stub->Search(&context, request, &response);
      if (status.error_code() == grpc::INVALID_ARGUMENT) continue;  // No words.
      if (!status.ok()) return channel.Fail(status);
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

}  // namespace arbiter::cli
