// `arbiter state export|import|reset` through the real binary, on state
// files made with the library: what export writes, import restores, reset
// deletes, and what they do while a gateway holds the file.

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "state/state_store.h"
#include "tests/integration/subprocess.h"

namespace arbiter {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;

using Result = ::arbiter::testing::CommandResult;

// Runs `arbiter ARGS...` to its end.
Result Arbiter(std::vector<std::string> args) {
  return ::arbiter::testing::RunCommand(ARBITER_BINARY, std::move(args));
}

v1::RouteTaskState RouteTask(const std::string& route, const std::string& task,
                             int64_t requests) {
  v1::RouteTaskState row;
  row.set_route(route);
  row.set_task(task);
  row.set_requests(requests);
  row.set_cost_usd(0.001 * requests);
  row.mutable_recent()->set_score(0.75);
  (*row.mutable_latency()->mutable_buckets())[12] = requests;
  return row;
}

v1::ContextEntry Entry(const std::string& route, double score) {
  v1::ContextEntry entry;
  entry.mutable_key()->set_strategy("policy");
  entry.set_route(route);
  entry.set_score(score);
  entry.add_embedding(0.25f);
  entry.add_embedding(-1.5f);
  return entry;
}

// A store with a row of every kind, written through the library.
state::StateBatch KnownContent() {
  const absl::Time now = absl::Now();
  state::StateBatch batch;
  batch.route_tasks = {RouteTask("rag", "faq", 10), RouteTask("rag", "chat", 4),
                       RouteTask("tuned", "faq", 6)};
  v1::RouteIdentity identity;
  identity.set_route("tuned");
  identity.set_backend("local");
  identity.set_model("ft-v2");
  batch.routes = {identity};
  v1::BudgetState budget;
  budget.mutable_key()->set_strategy("policy");
  budget.set_cost_weight(3.5);
  batch.budgets = {budget};
  v1::ExperimentArmState arm;
  arm.set_experiment("prompt-vs-rag");
  arm.set_arm("rag");
  arm.set_requests(9);
  batch.experiment_arms = {arm};
  v1::EconomicsState economics;
  economics.set_start_unix_micros(absl::ToUnixMicros(now - absl::Hours(1)));
  v1::EconomicsCellState* cell = economics.add_cells();
  cell->set_route("rag");
  cell->set_task("faq");
  cell->set_requests(10);
  batch.economics = economics;
  batch.context_entries = {Entry("rag", 1), Entry("tuned", 0), Entry("rag", 0)};
  v1::JudgedRequest judged;
  judged.set_mac(std::string("\x01\x02mac", 5));
  judged.set_issued_unix_micros(absl::ToUnixMicros(now));
  batch.judged = {judged};
  return batch;
}

class StateCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat(
               "arbiter-state-cli-", getpid(), "-",
               ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "state.db").string();
    auto store = state::StateStore::Open({.path = path_});
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Write(KnownContent()).ok());
    ASSERT_TRUE(
        (*store)->GetOrCreateSecret(state::kRequestIdKeySecret, 32).ok());
    auto loaded = (*store)->Load();
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    original_ = *loaded;
    ASSERT_TRUE((*store)->Close().ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }

  static v1::GatewayState Parse(const std::string& json) {
    v1::GatewayState state;
    auto status = google::protobuf::util::JsonStringToMessage(json, &state);
    EXPECT_TRUE(status.ok()) << status.message() << "\n" << json;
    return state;
  }

  static void ExpectEquals(const v1::GatewayState& actual,
                           const v1::GatewayState& expected) {
    std::string differences;
    MessageDifferencer differencer;
    differencer.ReportDifferencesToString(&differences);
    EXPECT_TRUE(differencer.Compare(actual, expected)) << differences;
  }

  std::filesystem::path dir_;
  std::string path_;
  v1::GatewayState original_;
};

TEST_F(StateCliTest, ExportWritesTheWholeStateAsJson) {
  ASSERT_THAT(original_.route_tasks(), SizeIs(3));
  ASSERT_THAT(original_.request_id_key(), SizeIs(32));
  Result exported = Arbiter({"state", "export", "--state", path_});
  ASSERT_EQ(exported.exit_code, 0) << exported.output;
  EXPECT_THAT(exported.output, HasSubstr("\"format_version\": 1"));
  EXPECT_THAT(exported.output, HasSubstr("\"route_tasks\""));
  ExpectEquals(Parse(exported.output), original_);

  const std::string output = (dir_ / "backup.json").string();
  Result to_file =
      Arbiter({"state", "export", "--state", path_, "--output", output});
  ASSERT_EQ(to_file.exit_code, 0) << to_file.output;
  EXPECT_THAT(to_file.output, HasSubstr("3 route/task rows"));
  struct stat st;
  ASSERT_EQ(stat(output.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);  // It holds the request-id key.
  std::ifstream in(output);
  ExpectEquals(Parse(std::string(std::istreambuf_iterator<char>(in), {})),
               original_);
}

TEST_F(StateCliTest, ImportIntoAFreshFileRestoresTheExport) {
  const std::string backup = (dir_ / "backup.json").string();
  ASSERT_EQ(Arbiter({"state", "export", "--state", path_, "--output", backup})
                .exit_code,
            0);
  const std::string fresh = (dir_ / "moved" / "state.db").string();
  Result imported = Arbiter({"state", "import", "--state", fresh, backup});
  ASSERT_EQ(imported.exit_code, 0) << imported.output;
  EXPECT_THAT(imported.output, HasSubstr(fresh));
  auto store = state::StateStore::Open({.path = fresh});
  ASSERT_TRUE(store.ok()) << store.status();
  auto loaded = (*store)->Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectEquals(*loaded, original_);
  EXPECT_EQ(*(*store)->GetOrCreateSecret(state::kRequestIdKeySecret, 32),
            original_.request_id_key());
}

TEST_F(StateCliTest, ImportReplacesWhatTheFileHeld) {
  const std::string backup = Write("small.json", R"json({
    "format_version": 1,
    "route_tasks": [{"route": "other", "task": "faq", "requests": "2"}]
  })json");
  Result imported = Arbiter({"state", "import", "--state", path_, backup});
  ASSERT_EQ(imported.exit_code, 0) << imported.output;
  auto state = state::StateStore::ReadFile(path_);
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_THAT(state->route_tasks(), SizeIs(1));
  EXPECT_EQ(state->route_tasks(0).route(), "other");
  EXPECT_THAT(state->context_entries(), SizeIs(0));
  EXPECT_THAT(state->judged(), SizeIs(0));
  EXPECT_FALSE(state->has_economics());
  EXPECT_EQ(state->request_id_key(), "");
}

TEST_F(StateCliTest, ResetOfARouteDeletesOnlyItsStatistics) {
  Result reset =
      Arbiter({"state", "reset", "--state", path_, "--route", "rag"});
  ASSERT_EQ(reset.exit_code, 0) << reset.output;
  EXPECT_THAT(reset.output,
              HasSubstr("deleted 2 route/task rows, 2 context entries"));
  auto state = state::StateStore::ReadFile(path_);
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_THAT(state->route_tasks(), SizeIs(1));
  EXPECT_EQ(state->route_tasks(0).route(), "tuned");
  ASSERT_THAT(state->context_entries(), SizeIs(1));
  EXPECT_EQ(state->context_entries(0).route(), "tuned");
  // The rest stays as it was.
  v1::GatewayState rest = *state;
  v1::GatewayState expected = original_;
  rest.clear_route_tasks();
  rest.clear_context_entries();
  expected.clear_route_tasks();
  expected.clear_context_entries();
  ExpectEquals(rest, expected);
}

TEST_F(StateCliTest, ResetOfARouteAndTaskSaysTheTaskDoesNotNarrowContext) {
  Result reset = Arbiter(
      {"state", "reset", "--state", path_, "--route", "rag", "--task", "faq"});
  ASSERT_EQ(reset.exit_code, 0) << reset.output;
  EXPECT_THAT(reset.output,
              HasSubstr("deleted 1 route/task row, 2 context entries (context "
                        "entries are kept per route, not per task"));
  auto state = state::StateStore::ReadFile(path_);
  ASSERT_THAT(state->route_tasks(), SizeIs(2));
  EXPECT_EQ(state->route_tasks(0).task(), "chat");
}

TEST_F(StateCliTest, ImportAndResetRefuseWhileAGatewayHoldsTheFile) {
  auto holder = state::StateStore::Open({.path = path_});
  ASSERT_TRUE(holder.ok()) << holder.status();
  const std::string in_use =
      absl::StrCat("state file ", path_,
                   " is in use by another arbiter process (stop it first)");
  const std::string backup = Write("small.json", R"({"format_version": 1})");
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"state", "import", "--state", path_, backup},
        {"state", "reset", "--state", path_},
        {"state", "reset", "--state", path_, "--route", "rag"}}) {
    Result refused = Arbiter(args);
    EXPECT_EQ(refused.exit_code, 1) << refused.output;
    EXPECT_EQ(refused.output, absl::StrCat("arbiter: ", in_use));
  }
  // Nothing changed, and export reads it all the same.
  Result exported = Arbiter({"state", "export", "--state", path_});
  ASSERT_EQ(exported.exit_code, 0) << exported.output;
  ExpectEquals(Parse(exported.output), original_);
  auto loaded = (*holder)->Load();
  ASSERT_TRUE(loaded.ok());
  ExpectEquals(*loaded, original_);
}

TEST_F(StateCliTest, ImportRefusesJsonThatIsNotAnExportNamingTheProblem) {
  const std::string fresh = (dir_ / "fresh.db").string();
  struct Case {
    std::string json;
    std::string why;
  };
  for (const Case& c : {
           Case{R"({"format_version": 1, "route_tasks": [{"rout": "a"}]})",
                "rout"},
           Case{R"({"format_version": 2})",
                "format_version: expected 1, got 2"},
           Case{R"({"route_tasks": []})",
                "format_version: expected 1, got 0 (missing)"},
           Case{R"({"format_version": 1, "route_tasks": [{"requests": "x"}]})",
                "route_tasks[0].requests"},
           Case{R"({"format_version": 1, )", "not a state export"},
       }) {
    const std::string input = Write("bad.json", c.json);
    Result refused = Arbiter({"state", "import", "--state", fresh, input});
    EXPECT_EQ(refused.exit_code, 1) << c.json;
    EXPECT_THAT(refused.output, HasSubstr(input)) << c.json;
    EXPECT_THAT(refused.output, HasSubstr(c.why)) << refused.output;
    EXPECT_FALSE(std::filesystem::exists(fresh)) << c.json;
  }
  Result missing = Arbiter(
      {"state", "import", "--state", fresh, (dir_ / "none.json").string()});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.output, HasSubstr("none.json"));
}

TEST_F(StateCliTest, TheConfigsStatePathNamesTheFile) {
  const std::string config =
      Write("arbiter.yaml", absl::StrCat(R"yaml(
tasks: [faq]
backends:
  - name: sim
    sim: {dataset: )yaml",
                                         ARBITER_SOURCE_DIR,
                                         R"yaml(/quickstart/questions.jsonl}
routes:
  - {name: rag, kind: prompted, backend: sim, model: quill-large}
policy: {pinned: {route: rag}}
state: {path: )yaml",
                                         path_, "}\n"));
  Result exported = Arbiter({"state", "export", "--config", config});
  ASSERT_EQ(exported.exit_code, 0) << exported.output;
  ExpectEquals(Parse(exported.output), original_);

  const std::string memory_only = Write("memory.yaml", R"yaml(
tasks: [faq]
backends:
  - {name: sim, sim: {dataset: q.jsonl}}
routes:
  - {name: rag, kind: prompted, backend: sim, model: quill-large}
policy: {pinned: {route: rag}}
)yaml");
  Result none = Arbiter({"state", "export", "--config", memory_only});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_THAT(none.output, HasSubstr(memory_only));
  EXPECT_THAT(none.output, HasSubstr("has no state.path"));
}

TEST_F(StateCliTest, EveryStateCommandNeedsTheFile) {
  for (const char* command : {"export", "import", "reset"}) {
    std::vector<std::string> args = {"state", command};
    if (std::string(command) == "import") args.push_back("backup.json");
    Result result = Arbiter(args);
    EXPECT_EQ(result.exit_code, 2) << command;
    EXPECT_THAT(result.output, HasSubstr("--state PATH")) << result.output;
    EXPECT_THAT(result.output, Not(HasSubstr("\n"))) << result.output;
  }
  Result missing =
      Arbiter({"state", "export", "--state", (dir_ / "none.db").string()});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.output, HasSubstr("none.db does not exist"));
  Result reset_missing =
      Arbiter({"state", "reset", "--state", (dir_ / "none.db").string()});
  EXPECT_EQ(reset_missing.exit_code, 1);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "none.db"));
}

}  // namespace
}  // namespace arbiter
