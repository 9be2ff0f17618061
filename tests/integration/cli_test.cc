// The `arbiter` binary as a user runs it: help for every command, usage
// errors, `--`, a gateway that is not there, output to a pipe rather than a
// terminal, and input files with fields of the wrong type.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/subprocess.h"

namespace arbiter {
namespace {

using ::arbiter::testing::StartServe;
using ::arbiter::testing::Subprocess;
using ::testing::HasSubstr;
using ::testing::Not;

using Result = ::arbiter::testing::CommandResult;

// Runs `arbiter ARGS...` to its end.
Result Arbiter(std::vector<std::string> args) {
  return ::arbiter::testing::RunCommand(ARBITER_BINARY, std::move(args));
}

// A loopback port nothing listens on: bound by the OS, then closed.
int ClosedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

std::string TempDir(absl::string_view name) {
  std::string dir = std::filesystem::temp_directory_path() /
                    absl::StrCat("arbiter-cli-", name, "-", getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

struct CommandFlags {
  std::vector<std::string> command;
  std::vector<std::string> flags;
};

TEST(CliTest, EveryCommandsHelpListsItsFlagsAndExitsZero) {
  const std::vector<CommandFlags> commands = {
      {{"serve"}, {"--config", "--grpc-listen", "--metrics-listen"}},
      {{"check-config"}, {"FILE"}},
      {{"sim-server"},
       {"--listen", "--config", "--backend", "--embedding-dim"}},
      {{"infer"},
       {"--target", "--task", "--route", "--unit-id", "--max-cost-usd",
        "--min-accuracy", "--max-tokens", "--timeout", "TEXT"}},
      {{"feedback"},
       {"--target", "--correct", "--incorrect", "--score", "REQUEST_ID"}},
      {{"stats"}, {"--target", "--api-key-file", "--route"}},
      {{"reload"}, {"--target", "--api-key-file"}},
      {{"keys"}, {"create"}},
      {{"keys", "create"}, {"--tenant", "--admin", "--label", "--expires-in"}},
      {{"loadgen"},
       {"--target", "--dataset", "--qps", "--duration", "--feedback", "--task",
        "--units", "--seed"}},
      {{"index"}, {"add", "search", "stats", "eval"}},
      {{"index", "add"}, {"--target", "--collection", "PATH"}},
      {{"index", "search"},
       {"--target", "--collection", "--mode", "--k", "QUERY"}},
      {{"index", "stats"}, {"--target", "--collection"}},
      {{"index", "eval"},
       {"--target", "--collection", "--queries", "--qrels", "--format"}},
      {{"experiment"}, {"show"}},
      {{"experiment", "show"}, {"--target", "NAME"}},
      {{"economics"}, {"--target", "--route", "--json"}},
      {{"replay"}, {"--log", "--config", "--seed", "--json"}},
      {{"state"}, {"export", "import", "reset"}},
      {{"state", "export"}, {"--config", "--state", "--output"}},
      {{"state", "import"}, {"--config", "--state", "FILE"}},
      {{"state", "reset"}, {"--config", "--state", "--route", "--task"}},
      {{"breakeven"},
       {"--requests-per-day",
        "--start",
        "--json",
        "--training-usd",
        "--training-tokens",
        "--training-epochs",
        "--training-usd-per-mtok",
        "--base-input-tokens",
        "--base-output-tokens",
        "--base-input-usd-per-mtok",
        "--base-output-usd-per-mtok",
        "--base-request-usd",
        "--base-hosting-usd-per-hour",
        "--base-accuracy",
        "--tuned-input-tokens",
        "--tuned-output-tokens",
        "--tuned-input-usd-per-mtok",
        "--tuned-output-usd-per-mtok",
        "--tuned-request-usd",
        "--tuned-hosting-usd-per-hour",
        "--tuned-accuracy",
        "--rag-context-tokens",
        "--rag-retrieval-usd-per-query",
        "--rag-embedding-tokens",
        "--rag-embedding-usd-per-ktok",
        "--rag-input-tokens",
        "--rag-output-tokens",
        "--rag-input-usd-per-mtok",
        "--rag-output-usd-per-mtok",
        "--rag-request-usd",
        "--rag-hosting-usd-per-hour",
        "--rag-accuracy"}},
  };
  const std::vector<std::string> gateway_clients = {
      "infer",      "feedback",   "stats",           "loadgen",
      "index",      "index add",  "index search",    "index stats",
      "index eval", "experiment", "experiment show", "economics",
      "reload"};
  for (const CommandFlags& entry : commands) {
    const std::string name = absl::StrJoin(entry.command, " ");
    std::vector<std::string> args = entry.command;
    args.push_back("--help");
    Result help = Arbiter(args);
    EXPECT_EQ(help.exit_code, 0) << name << ":\n" << help.output;
    EXPECT_THAT(help.output, HasSubstr("Usage: arbiter " + name)) << name;
    EXPECT_THAT(help.output, HasSubstr("Example:\n  arbiter " + name)) << name;
    for (const std::string& flag : entry.flags) {
      // Each on a line of its own: "  --qps N   requests per second...".
      EXPECT_THAT(help.output, HasSubstr("\n  " + flag))
          << name << ": " << flag;
    }
    const bool needs_gateway =
        std::find(gateway_clients.begin(), gateway_clients.end(), name) !=
        gateway_clients.end();
    EXPECT_EQ(absl::StrContains(help.output,
                                "Needs a running gateway (`arbiter serve`) "
                                "at --target."),
              needs_gateway)
        << name;
  }
}

TEST(CliTest, ArbiterHelpListsTheCommands) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--help"}, {"-h"}, {"help"}}) {
    Result help = Arbiter(args);
    EXPECT_EQ(help.exit_code, 0) << help.output;
    for (const char* command :
         {"serve", "check-config", "sim-server", "infer", "feedback", "stats",
          "loadgen", "index", "experiment", "economics", "replay", "breakeven",
          "state"}) {
      EXPECT_THAT(help.output, HasSubstr(absl::StrCat("\n  ", command, " ")))
          << command;
    }
  }
}

TEST(CliTest, KeysCreateNeedsATenantOrAdminAndAnExpiryItCanRead) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"keys", "create"},
        {"keys", "create", "--tenant", "acme", "--admin"},
        {"keys", "create", "--tenant", "a b"},
        {"keys", "create", "--tenant", "acme", "--expires-in", "soon"}}) {
    Result result = Arbiter(args);
    EXPECT_EQ(result.exit_code, 2) << result.output;
    EXPECT_THAT(result.output, HasSubstr("arbiter keys create: "));
  }
  Result made = Arbiter({"keys", "create", "--tenant", "acme", "--expires-in",
                         "90d", "--label", "ci"});
  ASSERT_EQ(made.exit_code, 0) << made.output;
  EXPECT_THAT(made.output,
              ::testing::ContainsRegex("\nak_[A-Za-z0-9_-]{43}\n"));
  EXPECT_THAT(made.output,
              ::testing::ContainsRegex(
                  "  - \\{sha256: [0-9a-f]{64}, label: \"ci\", expires: "
                  "20[0-9-]{8}T[0-9:]{8}Z\\}"));
}

TEST(CliTest, UnknownFlagExitsTwoNamingTheValidFlags) {
  Result result = Arbiter({"stats", "--rout", "rag"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_EQ(result.output,
            "arbiter stats: unknown flag --rout (did you mean --route?); its "
            "flags: --target, --api-key-file, --route (see arbiter stats "
            "--help)");
}

TEST(CliTest, UsageErrorsExitTwoWithOneLine) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{},
        {"index"},
        {"frobnicate"},
        {"infer"},
        {"loadgen", "--qps", "0"},
        {"feedback", "id"},
        {"breakeven", "--requests-per-day", "10"}}) {
    Result result = Arbiter(args);
    EXPECT_EQ(result.exit_code, 2) << absl::StrJoin(args, " ");
    EXPECT_THAT(result.output, Not(HasSubstr("\n"))) << result.output;
    EXPECT_THAT(result.output, HasSubstr("--help)")) << result.output;
  }
}

TEST(CliTest, ServeDashHPrintsHelpWithoutServing) {
  auto serve =
      Subprocess::Start({ARBITER_BINARY, "serve", "-h", "--grpc-listen",
                         "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"});
  ASSERT_TRUE(serve.ok());
  auto usage = (*serve)->WaitForLine("Usage: arbiter serve", absl::Seconds(20));
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_EQ((*serve)->Wait(), 0);
  EXPECT_THAT((*serve)->Output(), Not(HasSubstr("serving")));
}

TEST(CliTest, ConnectionRefusedNamesTheAddressAndServe) {
  const std::string target = absl::StrCat("127.0.0.1:", ClosedPort());
  const std::string dir = TempDir("refused");
  std::ofstream(dir + "/queries.jsonl") << R"({"_id": "q1", "text": "reset"})"
                                        << "\n";
  std::ofstream(dir + "/qrels.tsv") << "q1\treset-your-password\t1\n";
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{
           {"infer", "hello"},
           {"feedback", "id", "--correct"},
           {"stats"},
           {"loadgen", "--duration", "1s"},
           {"index", "add", "--collection", "kb",
            ARBITER_SOURCE_DIR "/quickstart/corpus"},
           {"index", "search", "--collection", "kb", "reset"},
           {"index", "stats", "--collection", "kb"},
           {"index", "eval", "--collection", "kb", "--queries",
            dir + "/queries.jsonl", "--qrels", dir + "/qrels.tsv"},
           {"experiment", "show", "prompt-vs-rag"},
           {"economics"},
       }) {
    std::vector<std::string> with_target = args;
    with_target.push_back("--target=" + target);
    Result result = Arbiter(with_target);
    const std::string name = absl::StrJoin(args, " ");
    EXPECT_EQ(result.exit_code, 1) << name << ":\n" << result.output;
    EXPECT_THAT(result.output,
                HasSubstr(absl::StrCat("arbiter: cannot reach a gateway at ",
                                       target, " (")))
        << name;
    EXPECT_THAT(result.output,
                HasSubstr("`arbiter serve` must be running there"))
        << name;
  }
  std::filesystem::remove_all(dir);
}

TEST(CliTest, ReplayNamesTheLineAndFieldOfABadLog) {
  const std::string dir = TempDir("replay");
  std::ofstream(dir + "/policy.yaml") << R"yaml(
tasks: [easy]
backends: [{name: sim, sim: {dataset: none.jsonl}}]
routes:
  - {name: small, kind: fine_tuned, backend: sim, model: s,
     pricing: {input_usd_per_mtok: 1, output_usd_per_mtok: 2}}
policy: {best_utility: {cost_weight: 10}}
)yaml";
  const std::string good =
      R"({"id": "r1", "task": "easy", "outcomes": {"small": {"correct": true}}})";
  for (
      const auto& [line, message] :
      std::vector<std::pair<std::string, std::string>>{
          {R"({"id": "r2", "task": "easy", "outcomes": [true]})",
           "outcomes.jsonl: line 2: outcomes: expected an object, got an "
           "array"},
          {R"({"id": "r2", "task": "easy", "outcomes": {"small": {"correct": true, "input_tokens": "12"}}})",
           "outcomes.jsonl: line 2: outcomes.small.input_tokens: expected an "
           "integer, got a string"},
      }) {
    std::ofstream(dir + "/outcomes.jsonl") << good << "\n" << line << "\n";
    Result result = Arbiter({"replay", "--log", dir + "/outcomes.jsonl",
                             "--config", dir + "/policy.yaml"});
    EXPECT_EQ(result.exit_code, 1) << result.output;
    EXPECT_THAT(result.output, HasSubstr(message));
  }
  std::filesystem::remove_all(dir);
}

TEST(CliTest, IndexAddNamesTheLineAndFieldOfABadDocument) {
  const std::string dir = TempDir("jsonl");
  const std::string target = absl::StrCat("127.0.0.1:", ClosedPort());
  for (const auto& [line, message] :
       std::vector<std::pair<std::string, std::string>>{
           {R"({"id": "b", "text": 42})",
            "docs.jsonl: line 2: text: expected a string, got a number"},
           {R"({"id": "b", "text": "ok", "title": 7})",
            "docs.jsonl: line 2: title: expected a string, got a number"},
       }) {
    std::ofstream(dir + "/docs.jsonl") << R"({"id": "a", "text": "alpha"})"
                                       << "\n"
                                       << line << "\n";
    // The documents are read before the gateway is called.
    Result result = Arbiter({"index", "add", "--collection", "kb", "--target",
                             target, dir + "/docs.jsonl"});
    EXPECT_EQ(result.exit_code, 1) << result.output;
    EXPECT_THAT(result.output, HasSubstr(message));
  }
  std::filesystem::remove_all(dir);
}

TEST(CliTest, IndexEvalNamesTheLineAndFieldOfABadQuery) {
  const std::string dir = TempDir("beir");
  std::ofstream(dir + "/queries.jsonl") << R"({"_id": "q1", "text": "reset"})"
                                        << "\n"
                                        << R"({"_id": "q2", "text": ["reset"]})"
                                        << "\n";
  std::ofstream(dir + "/qrels.tsv") << "q1\treset-your-password\t1\n";
  Result result =
      Arbiter({"index", "eval", "--collection", "kb", "--target",
               absl::StrCat("127.0.0.1:", ClosedPort()), "--queries",
               dir + "/queries.jsonl", "--qrels", dir + "/qrels.tsv"});
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_THAT(result.output,
              HasSubstr("queries.jsonl: queries line 2: text: expected a "
                        "string, got an array"));
  std::filesystem::remove_all(dir);
}

// Commands against a real gateway (the embedded quickstart), their output
// going to a pipe as under a script or CI.
class CliGatewayTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto gateway = StartServe(ARBITER_BINARY, {"--no-state"});
    if (!gateway.ok())
      return ::arbiter::testing::SuiteSetupFailed(gateway.status());
    gateway_ = gateway->process.release();
    target_ = new std::string(gateway->target());
  }
  static void TearDownTestSuite() {
    delete gateway_;
    gateway_ = nullptr;
    delete target_;
    target_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(::arbiter::testing::SuiteSetupStatus().ok())
        << ::arbiter::testing::SuiteSetupStatus();
    ASSERT_NE(target_, nullptr);
  }

  static Subprocess* gateway_;
  static std::string* target_;
};
Subprocess* CliGatewayTest::gateway_ = nullptr;
std::string* CliGatewayTest::target_ = nullptr;

TEST_F(CliGatewayTest, DoubleDashSendsDashHAsTheText) {
  Result result = Arbiter({"infer", "--target", *target_, "--", "-h"});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_THAT(result.output, HasSubstr("request id  "));
  EXPECT_THAT(result.output, Not(HasSubstr("Usage:")));
}

TEST_F(CliGatewayTest, LoadgenPrintsPlainLinesWhenNotATerminal) {
  Result result = Arbiter(
      {"loadgen", "--target", *target_, "--qps", "20", "--duration", "3s"});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_THAT(result.output, Not(HasSubstr("\033[")));
  // A line of counts each second, one table at the end.
  const std::vector<std::string> lines = absl::StrSplit(result.output, '\n');
  const auto count = [&](absl::string_view prefix) {
    return std::count_if(lines.begin(), lines.end(), [&](const auto& line) {
      return absl::StartsWith(line, prefix);
    });
  };
  EXPECT_GE(count("t="), 3) << result.output;
  EXPECT_EQ(count("route "), 1) << result.output;
  EXPECT_EQ(count("TOTAL "), 1) << result.output;
  EXPECT_THAT(result.output, HasSubstr("final:"));
}

TEST_F(CliGatewayTest, IndexAddDrawsNoProgressBarWhenNotATerminal) {
  Result result = Arbiter({"index", "add", "--collection", "cli-kb", "--target",
                           *target_, ARBITER_SOURCE_DIR "/quickstart/corpus"});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_THAT(result.output, HasSubstr("added 48 documents to \"cli-kb\""));
  EXPECT_THAT(result.output, Not(HasSubstr("\r")));
  EXPECT_THAT(result.output, Not(HasSubstr("docs/s")));
}

}  // namespace
}  // namespace arbiter
