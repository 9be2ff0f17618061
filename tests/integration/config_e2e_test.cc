// `arbiter check-config` and `arbiter serve` on configs that are wrong, or
// right in ways that used to be misread, as real processes.

#include <httplib.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/subprocess.h"

namespace arbiter {
namespace {

using ::arbiter::testing::Subprocess;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

// A fresh, empty folder, removed at the end of the test.
class ConfigEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat(
               "arbiter-config-e2e-", getpid(), "-",
               ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes `yaml` (with DIR and QUICKSTART replaced) next to nothing else:
  // the config lives in its own folder, apart from dir_.
  std::string WriteConfig(const std::string& yaml) {
    const std::filesystem::path folder = dir_.string() + "-config";
    std::filesystem::create_directories(folder);
    cleanups_.push_back(folder);
    const std::string path = (folder / "arbiter.yaml").string();
    std::ofstream(path) << absl::StrReplaceAll(
        yaml, {{"DIR", dir_.string()},
               {"QUICKSTART", ARBITER_SOURCE_DIR "/quickstart"}});
    return path;
  }

  // Runs check-config to its end: (exit code, output).
  static std::pair<int, std::string> CheckConfig(const std::string& path) {
    auto run = Subprocess::Start({ARBITER_BINARY, "check-config", path});
    EXPECT_TRUE(run.ok()) << run.status();
    if (!run.ok()) return {-1, ""};
    const int code = (*run)->Wait();
    return {code, (*run)->Output()};
  }

  std::vector<std::string> Contents() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
      names.push_back(entry.path().filename().string());
    }
    return names;
  }

  ~ConfigEndToEndTest() override {
    for (const auto& folder : cleanups_) std::filesystem::remove_all(folder);
  }

  std::filesystem::path dir_;
  std::vector<std::filesystem::path> cleanups_;
};

// A rag route over the quickstart's simulator, with a persistent store
// and snapshots in DIR.
constexpr char kStoreConfig[] = R"yaml(
tasks: [faq]
backends:
  - name: sim
    sim: {dataset: QUICKSTART/questions.jsonl}
routes:
  - {name: rag, kind: rag, backend: sim, model: quill-large}
policy: {pinned: {route: rag}}
retrieval:
  corpus_dir: CORPUS
  store_path: DIR/store.db
  snapshot_dir: DIR/snapshots
)yaml";

TEST_F(ConfigEndToEndTest, CheckConfigCreatesAndWritesNothing) {
  auto [code, output] = CheckConfig(WriteConfig(
      absl::StrReplaceAll(kStoreConfig, {{"CORPUS", "QUICKSTART/corpus"}})));
  EXPECT_EQ(code, 0) << output;
  EXPECT_THAT(output, HasSubstr(": ok"));
  EXPECT_THAT(Contents(), IsEmpty());
}

TEST_F(ConfigEndToEndTest, CheckConfigReportsAMissingCorpusAndCreatesNothing) {
  auto [code, output] = CheckConfig(WriteConfig(
      absl::StrReplaceAll(kStoreConfig, {{"CORPUS", "DIR/no-such-corpus"}})));
  EXPECT_EQ(code, 1) << output;
  EXPECT_THAT(output, HasSubstr("retrieval.corpus_dir: "));
  EXPECT_THAT(output, HasSubstr("no-such-corpus"));
  EXPECT_THAT(Contents(), IsEmpty());
}

TEST_F(ConfigEndToEndTest, CheckConfigListsEveryParseErrorWithItsLine) {
  auto [code, output] = CheckConfig(WriteConfig(R"yaml(tasks: [faq]
backends:
  - {name: sim, sim: {dataset: QUICKSTART/questions.jsonl}}
routes:
  - {name: a, knd: prompted, backend: sim, model: m}
  - {name: b, kind: rgs, backend: sim, model: m,
     pricing: {input_usd_per_mtok: .inf}}
policy: {pinned: {route: a}}
policy: {pinned: {route: b}}
)yaml"));
  EXPECT_EQ(code, 1) << output;
  EXPECT_THAT(output, HasSubstr("is invalid (4 errors)"));
  EXPECT_THAT(output, HasSubstr("line 5: routes[0].knd: unknown field (did "
                                "you mean kind?)"));
  EXPECT_THAT(output, HasSubstr("line 6: routes[1].kind: unknown value "
                                "\"rgs\"; expected prompted, fine_tuned or "
                                "rag"));
  EXPECT_THAT(output, HasSubstr("line 7: routes[1].pricing."
                                "input_usd_per_mtok: must be a finite number, "
                                "got \".inf\""));
  EXPECT_THAT(output,
              HasSubstr("line 9: policy: duplicate key (first at line 8)"));
}

TEST_F(ConfigEndToEndTest, CheckConfigNamesInvalidUtf8InsteadOfAborting) {
  auto [code, output] = CheckConfig(WriteConfig(
      "tasks: [faq]\nbackends:\n  - {name: caf\xe9, sim: {dataset: q}}\n"));
  EXPECT_EQ(code, 1) << output;
  EXPECT_THAT(output, HasSubstr("line 3: invalid UTF-8 at byte 37 of the file "
                                "(byte 15 of the line)"));
}

TEST_F(ConfigEndToEndTest, CheckConfigNamesAnUnsetApiKeyVariable) {
  unsetenv("ARBITER_CONFIG_E2E_KEY");
  auto [code, output] = CheckConfig(WriteConfig(R"yaml(tasks: [faq]
backends:
  - name: vllm
    openai: {base_url: "http://127.0.0.1:1/v1", api_key_env: ARBITER_CONFIG_E2E_KEY}
routes:
  - {name: a, kind: fine_tuned, backend: vllm, model: m}
policy: {pinned: {route: a}}
)yaml"));
  EXPECT_EQ(code, 1) << output;
  EXPECT_THAT(output, HasSubstr("backends[0].openai.api_key_env: environment "
                                "variable ARBITER_CONFIG_E2E_KEY is not set"));
}

// An embedding server that always answers 503 (retry at once), counting
// the attempts it is sent.
class FailingEmbeddingServer final {
 public:
  FailingEmbeddingServer() {
    server_.Post("/v1/embeddings", [this](const httplib::Request&,
                                          httplib::Response& response) {
      ++attempts_;
      response.status = 503;
      response.set_header("Retry-After", "0");
      response.set_content(R"({"error": "down"})", "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~FailingEmbeddingServer() {
    server_.stop();
    thread_.join();
  }
  FailingEmbeddingServer(const FailingEmbeddingServer&) = delete;
  FailingEmbeddingServer& operator=(const FailingEmbeddingServer&) = delete;

  int port() const { return port_; }
  int attempts() const { return attempts_; }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::atomic<int> attempts_{0};
  std::thread thread_;
};

// The corpus is embedded at start; a server that is down makes `serve` fail
// after exactly 1 + max_retries attempts, 0 included.
TEST_F(ConfigEndToEndTest, EmbeddingServerMaxRetriesZeroMeansOneAttempt) {
  for (int retries : {0, 2}) {
    SCOPED_TRACE(retries);
    FailingEmbeddingServer embeddings;
    ASSERT_GT(embeddings.port(), 0);
    const std::string path = WriteConfig(absl::StrCat(
        absl::StrReplaceAll(kStoreConfig,
                            {{"CORPUS", "QUICKSTART/corpus"},
                             {"  store_path: DIR/store.db\n", ""},
                             {"  snapshot_dir: DIR/snapshots\n", ""}}),
        "  embedding_dim: 384\n  embedding_server: {url: "
        "\"http://127.0.0.1:",
        embeddings.port(), "/v1\", model: e, max_retries: ", retries, "}\n"));
    auto serve = Subprocess::Start({ARBITER_BINARY, "serve", "--config", path,
                                    "--grpc-listen", "127.0.0.1:0",
                                    "--metrics-listen", "127.0.0.1:0"});
    ASSERT_TRUE(serve.ok()) << serve.status();
    EXPECT_EQ((*serve)->Wait(), 1) << (*serve)->Output();
    EXPECT_THAT((*serve)->Output(), Not(HasSubstr("grpc listening")));
    EXPECT_EQ(embeddings.attempts(), 1 + retries) << (*serve)->Output();
  }
}

}  // namespace
}  // namespace arbiter
