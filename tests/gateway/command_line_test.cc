#include "gateway/cli/command_line.h"

#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "gateway/cli/commands.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbiter::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// `arbiter WORDS...`, parsed: each test gets a fresh command line, as a
// process does.
struct Parse {
  explicit Parse(std::vector<std::string> words) {
    words.insert(words.begin(), "arbiter");
    parsed = command_line.Parse(words);
  }
  bool Runs() const { return parsed.outcome == CommandLine::Outcome::kRun; }
  bool Helps() const { return parsed.outcome == CommandLine::Outcome::kHelp; }
  bool Fails() const {
    return parsed.outcome == CommandLine::Outcome::kUsageError;
  }
  const Flags& flags() const { return command_line.flags(); }

  CommandLine command_line;
  CommandLine::Parsed parsed;
};

TEST(CommandLineTest, DoubleDashEndsTheFlags) {
  Parse infer({"infer", "--task", "faq", "--", "-h"});
  ASSERT_TRUE(infer.Runs()) << infer.parsed.text;
  EXPECT_EQ(infer.command_line.command(), "infer");
  EXPECT_EQ(infer.flags().infer.text, "-h");
  EXPECT_EQ(infer.flags().infer.task, "faq");

  Parse search({"index", "search", "--collection", "kb", "--", "--k"});
  ASSERT_TRUE(search.Runs()) << search.parsed.text;
  EXPECT_EQ(search.flags().index_search.query, "--k");
}

TEST(CommandLineTest, DashHIsHelpForEveryCommand) {
  Parse serve({"serve", "-h"});
  ASSERT_TRUE(serve.Helps());
  EXPECT_THAT(serve.parsed.text, HasSubstr("Usage: arbiter serve"));
  EXPECT_THAT(serve.parsed.text, HasSubstr("--grpc-listen ADDR"));

  Parse infer({"infer", "-h"});
  ASSERT_TRUE(infer.Helps());
  EXPECT_THAT(infer.parsed.text, HasSubstr("Usage: arbiter infer"));
}

TEST(CommandLineTest, EveryCommandHasHelpWithAnExample) {
  for (const std::vector<std::string>& command :
       std::vector<std::vector<std::string>>{{"serve"},
                                             {"check-config"},
                                             {"sim-server"},
                                             {"infer"},
                                             {"feedback"},
                                             {"stats"},
                                             {"loadgen"},
                                             {"index"},
                                             {"index", "add"},
                                             {"index", "search"},
                                             {"index", "stats"},
                                             {"index", "eval"},
                                             {"experiment"},
                                             {"experiment", "show"},
                                             {"economics"},
                                             {"replay"},
                                             {"breakeven"}}) {
    std::vector<std::string> words = command;
    words.push_back("--help");
    Parse help(words);
    const std::string name = absl::StrJoin(command, " ");
    ASSERT_TRUE(help.Helps()) << name << ": " << help.parsed.text;
    EXPECT_THAT(help.parsed.text, HasSubstr("Usage: arbiter " + name)) << name;
    EXPECT_THAT(help.parsed.text, HasSubstr("Example:\n  arbiter " + name))
        << name;
  }
}

TEST(CommandLineTest, HelpCommandIsTheHelpFlag) {
  Parse help({"help", "index", "add"});
  ASSERT_TRUE(help.Helps());
  EXPECT_THAT(help.parsed.text, HasSubstr("Usage: arbiter index add"));
  EXPECT_THAT(help.parsed.text, HasSubstr("--collection C"));
}

TEST(CommandLineTest, RootHelpGroupsCommandsByWhatTheyNeed) {
  Parse help({"--help"});
  ASSERT_TRUE(help.Helps());
  EXPECT_THAT(help.parsed.text,
              HasSubstr("Clients of a running gateway (`arbiter serve`"));
  EXPECT_THAT(help.parsed.text, HasSubstr("Offline (no gateway needed)"));
}

TEST(CommandLineTest, UnknownFlagNamesTheValidOnes) {
  Parse infer({"infer", "--tsk", "faq", "hello"});
  ASSERT_TRUE(infer.Fails());
  EXPECT_EQ(infer.parsed.text,
            "arbiter infer: unknown flag --tsk (did you mean --task?); its "
            "flags: --target, --api-key-file, --task, --route, --unit-id, "
            "--max-cost-usd, --min-accuracy, --max-tokens, --timeout (see "
            "arbiter infer --help)");

  Parse breakeven({"breakeven", "--epochs", "3"});
  ASSERT_TRUE(breakeven.Fails());
  EXPECT_THAT(breakeven.parsed.text,
              HasSubstr("unknown flag --epochs (did you mean "
                        "--training-epochs?)"));
}

TEST(CommandLineTest, UnknownCommandListsTheCommands) {
  Parse top({"infr", "hello"});
  ASSERT_TRUE(top.Fails());
  EXPECT_THAT(top.parsed.text,
              HasSubstr("arbiter: unknown command \"infr\" (did you mean "
                        "infer?); the commands: serve, check-config,"));
  Parse index({"index", "find", "x"});
  ASSERT_TRUE(index.Fails());
  EXPECT_THAT(index.parsed.text,
              HasSubstr("unknown command \"find\"; the commands: add, "
                        "search, stats, eval"));
}

TEST(CommandLineTest, FlagBeforeItsCommandSaysWhereItGoes) {
  Parse add({"index", "--collection", "kb", "add", "docs"});
  ASSERT_TRUE(add.Fails());
  EXPECT_THAT(add.parsed.text,
              HasSubstr("arbiter index: --collection belongs after \"add\""));
}

TEST(CommandLineTest, UsageErrorsAreOneLineNamingTheCommand) {
  for (const auto& [words, message] :
       std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{}, "arbiter: a command is required: serve, "},
           {{"index"}, "arbiter index: a command is required: add, search"},
           {{"infer"}, "arbiter infer: TEXT is required"},
           {{"infer", "--task"}, "arbiter infer: --task needs a value"},
           {{"infer", "hello", "world"},
            "arbiter infer: unexpected argument \"world\""},
           {{"loadgen", "--qps", "0"},
            "arbiter loadgen: --qps: must be > 0, got 0"},
           {{"loadgen", "--qps", "fast"},
            "arbiter loadgen: --qps: not a number: \"fast\""},
           {{"loadgen", "--duration", "60"},
            "arbiter loadgen: --duration: not a duration above zero"},
           {{"loadgen", "--units", "2.5"},
            "arbiter loadgen: --units: not an integer: \"2.5\""},
           {{"feedback", "id", "--score", "-0.5"},
            "arbiter feedback: --score: must be in [0, 1], got -0.5"},
           {{"index", "search", "--collection", "kb", "--mode", "fuzzy", "q"},
            "--mode: must be one of hybrid, keyword, vector; got \"fuzzy\""},
           {{"index", "add", "docs"},
            "arbiter index add: --collection is required"},
           {{"sim-server", "--listen", "8000"},
            "--listen: not host:port: \"8000\""},
           {{"sim-server", "--embedding-dim", "0"},
            "--embedding-dim: must be in [1, 8192], got 0"},
           {{"replay", "--log", "x.jsonl"},
            "arbiter replay: --config is required"},
       }) {
    Parse parse(words);
    ASSERT_TRUE(parse.Fails()) << absl::StrJoin(words, " ");
    EXPECT_THAT(parse.parsed.text, HasSubstr(message));
    EXPECT_THAT(parse.parsed.text, HasSubstr("--help)"));
    EXPECT_THAT(parse.parsed.text, Not(HasSubstr("\n")));
  }
}

TEST(CommandLineTest, DefaultsAreThoseTheHelpShows) {
  Parse infer({"infer", "hello"});
  ASSERT_TRUE(infer.Runs());
  EXPECT_EQ(infer.flags().infer.target, "127.0.0.1:50051");
  EXPECT_EQ(infer.flags().infer.timeout_seconds, 60);
  Parse loadgen({"loadgen"});
  ASSERT_TRUE(loadgen.Runs());
  EXPECT_EQ(loadgen.flags().loadgen.qps, 50);
  EXPECT_EQ(loadgen.flags().loadgen.duration, "60s");
  EXPECT_EQ(loadgen.flags().loadgen.units, 1000);
  Parse help({"loadgen", "--help"});
  EXPECT_THAT(help.parsed.text, HasSubstr("--qps N"));
  EXPECT_THAT(help.parsed.text, HasSubstr("(default: 50)"));
  EXPECT_THAT(help.parsed.text, HasSubstr("(default: 60s)"));
}

TEST(CommandLineTest, ValuesMayBeJoinedNegativeOrGivenTwice) {
  Parse infer({"infer", "--task=faq", "--timeout", "5", "--timeout", "7",
               "-5 degrees?"});
  ASSERT_TRUE(infer.Runs()) << infer.parsed.text;
  EXPECT_EQ(infer.flags().infer.task, "faq");
  EXPECT_EQ(infer.flags().infer.timeout_seconds, 7);  // The last one.
  EXPECT_EQ(infer.flags().infer.text, "-5 degrees?");
}

TEST(CommandLineTest, ATextNamingACommandIsText) {
  Parse infer({"infer", "stats"});
  ASSERT_TRUE(infer.Runs()) << infer.parsed.text;
  EXPECT_EQ(infer.flags().infer.text, "stats");
}

TEST(CommandLineTest, FeedbackTakesOneOutcome) {
  Parse score({"feedback", "id-1", "--score", "0.4"});
  ASSERT_TRUE(score.Runs());
  EXPECT_EQ(score.flags().feedback.request_id, "id-1");
  ASSERT_TRUE(score.flags().feedback.score.has_value());
  EXPECT_EQ(*score.flags().feedback.score, 0.4);
  Parse correct({"feedback", "--correct", "id-1"});
  ASSERT_TRUE(correct.Runs());
  EXPECT_TRUE(correct.flags().feedback.correct);
  EXPECT_FALSE(correct.flags().feedback.score.has_value());
}

TEST(CommandLineTest, IndexAddTakesManyPaths) {
  Parse add({"index", "add", "--collection", "kb", "a.md", "docs/"});
  ASSERT_TRUE(add.Runs()) << add.parsed.text;
  EXPECT_EQ(add.command_line.command(), "index add");
  EXPECT_THAT(add.flags().index_add.paths,
              ::testing::ElementsAre("a.md", "docs/"));
}

}  // namespace
}  // namespace arbiter::cli
