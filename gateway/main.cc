// arbiter: an inference gateway that picks, per request, a prompted,
// fine-tuned or RAG route from live cost and accuracy figures.

#include <cstdio>
#include <cstring>
#include <string_view>

#include "gateway/cli/commands.h"

namespace {

constexpr char kUsage[] = R"(usage: arbiter COMMAND [ARGS]

Commands:
  serve         [--config FILE] [--grpc-listen ADDR] [--metrics-listen ADDR]
                Start the gateway (default: the embedded quickstart config).
  check-config  FILE     Validate a config without serving.
  sim-server    --listen ADDR [--config FILE] [--backend NAME] [--embedding-dim N]
                Serve the simulated LLM over OpenAI-compatible HTTP.
  infer         [--target ADDR] [--task T] [--route R] [--unit-id U]
                [--max-cost-usd X] [--min-accuracy X] [--max-tokens N] TEXT
  feedback      [--target ADDR] REQUEST_ID (--correct | --incorrect | --score X)
  stats         [--target ADDR] [--route R]
  loadgen       [--target ADDR] [--dataset FILE] [--qps N] [--duration 60s]
                [--feedback] [--task T] [--units N]
                Drive labeled traffic and print a live per-route table.
  index         add PATH... | search QUERY | stats |
                eval --queries Q --qrels R [--format beir|trec]  --collection C
                [--mode hybrid|keyword|vector] [--k N] [--target ADDR]
                Ingest files (.md, .txt, .jsonl) and search a collection.
  experiment    show NAME [--target ADDR]
                Per-arm analysis of an experiment with a verdict.
  economics     [--target ADDR] [--route R] [--json]
                Live cost per request and per correct answer, break-even.
  replay        --log outcomes.jsonl --config FILE [--seed N] [--json]
                Run the config's policy over logged outcomes, offline.
  breakeven     --requests-per-day N --training-usd X --base-... --tuned-...
                [--rag-...] [--start YYYY-MM-DD] [--json]
                Plan, offline, when a fine-tune repays its training (--help).

ADDR defaults to 127.0.0.1:50051.
)";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 ||
      std::strcmp(argv[1], "-h") == 0 || std::strcmp(argv[1], "help") == 0) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  std::string_view command = argv[1];
  int rest_argc = argc - 2;
  char** rest_argv = argv + 2;
  using namespace arbiter::cli;
  if (command == "serve") return RunServe(rest_argc, rest_argv);
  if (command == "check-config") return RunCheckConfig(rest_argc, rest_argv);
  if (command == "sim-server") return RunSimServer(rest_argc, rest_argv);
  if (command == "infer") return RunInfer(rest_argc, rest_argv);
  if (command == "feedback") return RunFeedback(rest_argc, rest_argv);
  if (command == "stats") return RunStats(rest_argc, rest_argv);
  if (command == "loadgen") return RunLoadgen(rest_argc, rest_argv);
  if (command == "replay") return RunReplay(rest_argc, rest_argv);
  if (command == "economics") return RunEconomics(rest_argc, rest_argv);
  if (command == "breakeven") return RunBreakeven(rest_argc, rest_argv);
  if (command == "experiment") return RunExperiment(rest_argc, rest_argv);
  if (command == "index") return RunIndex(rest_argc, rest_argv);
  std::fprintf(stderr, "arbiter: unknown command \"%s\"\n\n%s", argv[1],
               kUsage);
  return 2;
}
