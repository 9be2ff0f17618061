// The request pipeline against a real `arbiter serve`: blocking retrieval
// work stays off gRPC's threads (worker pools, RESOURCE_EXHAUSTED when
// full), and every refusal says exactly what is wrong, briefly.

#include <httplib.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/integration/subprocess.h"

namespace arbiter {
namespace {

using ::arbiter::testing::MetricSample;
using ::arbiter::testing::PortOf;
using ::arbiter::testing::StartServe;
using ::arbiter::testing::Subprocess;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kQuestion[] = "How do I reset my password?";

// sim-server's OpenAI API, shared by every gateway of this file.
class PipelineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // The quickstart's simulated LLM, answering at once: latencies measured
    // here are the gateway's own.
    std::ifstream in(ARBITER_SOURCE_DIR "/quickstart/arbiter.yaml");
    std::stringstream quickstart;
    quickstart << in.rdbuf();
    sim_config_ = new std::string(
        (std::filesystem::temp_directory_path() /
         absl::StrCat("arbiter-pipeline-sim-", getpid(), ".yaml"))
            .string());
    std::ofstream(*sim_config_) << absl::StrReplaceAll(
        quickstart.str(),
        {{"time_to_first_token_seconds: 0.05",
          "time_to_first_token_seconds: 0"},
         {"seconds_per_token: 0.002", "seconds_per_token: 0"},
         {"dataset: questions.jsonl",
          "dataset: " ARBITER_SOURCE_DIR "/quickstart/questions.jsonl"},
         {"corpus_dir: corpus",
          "corpus_dir: " ARBITER_SOURCE_DIR "/quickstart/corpus"}});
    auto sim = Subprocess::Start({ARBITER_BINARY, "sim-server", "--listen",
                                  "127.0.0.1:0", "--config", *sim_config_});
    if (!sim.ok()) return ::arbiter::testing::SuiteSetupFailed(sim.status());
    sim_ = sim->release();
    auto line =
        sim_->WaitForLine("sim-server listening on ", absl::Seconds(30));
    if (!line.ok()) return ::arbiter::testing::SuiteSetupFailed(line.status());
    sim_port_ = PortOf(*line);
  }
  void SetUp() override {
    ASSERT_TRUE(::arbiter::testing::SuiteSetupStatus().ok())
        << ::arbiter::testing::SuiteSetupStatus();
    ASSERT_NE(sim_, nullptr) << "the sim-server did not start";
  }

  static void TearDownTestSuite() {
    delete sim_;
    sim_ = nullptr;
    if (sim_config_ != nullptr) std::filesystem::remove(*sim_config_);
    delete sim_config_;
  }

  void TearDown() override {
    gateway_.reset();
    std::error_code ignored;
    for (const auto& path : cleanup_)
      std::filesystem::remove_all(path, ignored);
  }

  // A config with a prompted and a fine-tuned route over sim-server (and a
  // rag route when `corpus` is set); `server` and `extra` are appended
  // under `server:` and at the top level.
  std::string Config(const std::string& server, const std::string& extra,
                     const std::string& corpus = "") {
    std::string yaml = absl::StrReplaceAll(
        R"yaml(
tasks: [faq, policy]
backends:
  - name: sim-http
    openai: {base_url: "http://127.0.0.1:SIM_PORT/v1", timeout_seconds: 10}
policy:
  weighted: {weights: {prompted: 1, fine-tuned: 1}}
routes:
  - name: prompted
    kind: prompted
    backend: sim-http
    model: quill-large
  - name: fine-tuned
    kind: fine_tuned
    backend: sim-http
    model: quill-small-ft
)yaml",
        {{"SIM_PORT", std::to_string(sim_port_)}});
    if (!corpus.empty()) {
      absl::StrAppend(&yaml,
                      "  - {name: rag, kind: rag, backend: sim-http, model: "
                      "quill-large}\nretrieval:\n  corpus_dir: ",
                      corpus, "\n");
    }
    if (!server.empty()) absl::StrAppend(&yaml, "server:\n", server);
    return absl::StrCat(yaml, extra);
  }

  void StartGateway(const std::string& yaml) {
    const std::string path =
        (std::filesystem::temp_directory_path() /
         absl::StrCat("arbiter-pipeline-", getpid(), "-", configs_++, ".yaml"))
            .string();
    cleanup_.push_back(path);
    std::ofstream(path) << yaml;
    auto gateway = StartServe(ARBITER_BINARY, {"--config", path});
    ASSERT_TRUE(gateway.ok()) << gateway.status();
    gateway_ = std::move(gateway->process);
    metrics_port_ = gateway->metrics_port;
    channel_target_ = gateway->target();
    channel_ = grpc::CreateChannel(channel_target_,
                                   grpc::InsecureChannelCredentials());
  }

  std::string CorpusDir(const std::map<std::string, std::string>& files) {
    const std::filesystem::path dir =
        std::filesystem::temp_directory_path() /
        absl::StrCat("arbiter-pipeline-corpus-", getpid(), "-", configs_++);
    std::filesystem::create_directories(dir);
    cleanup_.push_back(dir.string());
    for (const auto& [name, content] : files) {
      std::ofstream(dir / name, std::ios::binary) << content;
    }
    return dir.string();
  }

  static std::unique_ptr<grpc::ClientContext> Context(
      absl::Duration timeout = absl::Seconds(60)) {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return context;
  }

  grpc::Status Infer(const v1::InferRequest& request,
                     v1::InferResponse* response) {
    return v1::Gateway::NewStub(channel_)->Infer(Context().get(), request,
                                                 response);
  }

  static v1::InferRequest Ask(const std::string& text,
                              const std::string& route = "",
                              const std::string& task = "faq") {
    v1::InferRequest request;
    v1::ChatMessage* message = request.add_messages();
    message->set_role(v1::ROLE_USER);
    message->set_content(text);
    request.set_route(route);
    request.set_task(task);
    return request;
  }

  grpc::Status Upsert(const v1::UpsertRequest& request) {
    v1::UpsertResponse response;
    return v1::Retrieval::NewStub(channel_)->Upsert(Context().get(), request,
                                                    &response);
  }

  // Bulk loads come over a connection of their own, as from another client:
  // on one shared connection, the megabytes still in flight would delay
  // the calls measured beside them in the transport, before the gateway.
  grpc::Status UpsertFromAnotherClient(const v1::UpsertRequest& request) {
    grpc::ChannelArguments arguments;
    arguments.SetInt("arbiter.test.bulk_client", 1);
    auto channel = grpc::CreateCustomChannel(
        channel_target_, grpc::InsecureChannelCredentials(), arguments);
    v1::UpsertResponse response;
    return v1::Retrieval::NewStub(channel)->Upsert(Context().get(), request,
                                                   &response);
  }

  grpc::Status Search(const v1::SearchRequest& request,
                      v1::SearchResponse* response = nullptr) {
    v1::SearchResponse ignored;
    return v1::Retrieval::NewStub(channel_)->Search(
        Context().get(), request, response != nullptr ? response : &ignored);
  }

  // Sends `bytes` as the serialized request of `method` (as a client with
  // its own idea of the schema would).
  grpc::Status CallRaw(const std::string& method, const std::string& bytes) {
    grpc::GenericStub stub(channel_);
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    auto context = Context();
    std::promise<grpc::Status> done;
    stub.UnaryCall(
        context.get(), method, grpc::StubOptions(), &request, &response,
        [&](grpc::Status status) { done.set_value(std::move(status)); });
    return done.get_future().get();
  }

  grpc::Status HealthCheck() {
    return CallRaw("/grpc.health.v1.Health/Check", "");
  }

  std::string Metrics() {
    httplib::Client client("127.0.0.1", metrics_port_);
    auto result = client.Get("/metrics");
    return result ? result->body : "";
  }

  // A document of about `bytes` bytes of varied words.
  static v1::UpsertRequest LargeUpsert(const std::string& collection,
                                       const std::string& id, size_t bytes) {
    v1::UpsertRequest request;
    request.set_collection(collection);
    v1::RetrievalDocument* document = request.add_documents();
    document->set_id(id);
    std::string text;
    text.reserve(bytes + 64);
    for (uint64_t i = 0; text.size() < bytes; ++i) {
      absl::StrAppend(&text, "term", (i * 2654435761u) % 50'000,
                      i % 12 == 11 ? ".\n\n" : " ");
    }
    document->set_text(std::move(text));
    return request;
  }

  static inline Subprocess* sim_ = nullptr;
  static inline std::string* sim_config_ = nullptr;
  static inline int sim_port_ = 0;
  std::unique_ptr<Subprocess> gateway_;
  std::string channel_target_;
  std::shared_ptr<grpc::Channel> channel_;
  int metrics_port_ = 0;
  int configs_ = 0;
  std::vector<std::string> cleanup_;
};

// Sanitized builds ingest about ten times slower: smaller upserts still
// keep both ingest threads busy while the samples are taken, and end
// within the client's deadline.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr size_t kLargeUpsertBytes = 600'000;
#else
constexpr size_t kLargeUpsertBytes = 3'400'000;
#endif

// Waits until the ingest pool has `busy` threads at work and `queued` tasks
// waiting: those upserts have arrived whole and are being ingested.
bool WaitForIngest(double busy, double queued,
                   const std::function<std::string()>& metrics) {
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (absl::Now() < give_up) {
    const std::string now = metrics();
    if (MetricSample(now, "arbiter_worker_pool_busy_threads",
                     {{"pool", "ingest"}}) >= busy &&
        MetricSample(now, "arbiter_worker_pool_queued_tasks",
                     {{"pool", "ingest"}}) >= queued) {
      return true;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return false;
}

TEST_F(PipelineTest, InferAndHealthAnswerWithin50msWhileLargeUpsertsRun) {
  StartGateway(Config("", ""));
  // Warm the channel and the route.
  v1::InferResponse warm;
  ASSERT_TRUE(Infer(Ask(kQuestion, "prompted"), &warm).ok());
  ASSERT_TRUE(HealthCheck().ok());

  std::atomic<int> upserts_done{0};
  std::vector<std::thread> upserts;
  for (int i = 0; i < 4; ++i) {
    upserts.emplace_back([&, i] {
      grpc::Status status = UpsertFromAnotherClient(
          LargeUpsert("bulk", absl::StrCat("big-", i), kLargeUpsertBytes));
      EXPECT_TRUE(status.ok()) << status.error_message();
      ++upserts_done;
    });
  }
  // Both ingest threads at work, two upserts waiting.
  ASSERT_TRUE(WaitForIngest(2, 2, [this] { return Metrics(); }));
  absl::Duration slowest_infer;
  absl::Duration slowest_health;
  for (int i = 0; i < 5; ++i) {
    absl::Time start = absl::Now();
    v1::InferResponse response;
    grpc::Status status = Infer(Ask(kQuestion, "prompted"), &response);
    slowest_infer = std::max(slowest_infer, absl::Now() - start);
    EXPECT_TRUE(status.ok()) << status.error_message();
    start = absl::Now();
    EXPECT_TRUE(HealthCheck().ok());
    slowest_health = std::max(slowest_health, absl::Now() - start);
  }
  const int done_while_sampling = upserts_done;
  for (std::thread& upsert : upserts) upsert.join();
  ASSERT_LT(done_while_sampling, 4)
      << "the upserts ended before the samples: the test measured nothing";
  EXPECT_LT(slowest_infer, absl::Milliseconds(50));
  EXPECT_LT(slowest_health, absl::Milliseconds(50));
}

TEST_F(PipelineTest, FullPoolAnswersResourceExhaustedAtOnce) {
  StartGateway(
      Config("  ingest_threads: 1\n  ingest_queue: 0\n"
             "  retrieval_threads: 1\n  retrieval_queue: 0\n",
             ""));
  std::promise<grpc::Status> first;
  std::thread slow([&] {
    first.set_value(
        UpsertFromAnotherClient(LargeUpsert("bulk", "big", kLargeUpsertBytes)));
  });
  // The one ingest thread is busy.
  ASSERT_TRUE(WaitForIngest(1, 0, [this] { return Metrics(); }));
  const absl::Time start = absl::Now();
  grpc::Status refused = Upsert(LargeUpsert("bulk", "small", 100));
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << refused.error_message();
  EXPECT_THAT(refused.error_message(), HasSubstr("ingest pool is busy"));
  EXPECT_LT(took, absl::Milliseconds(50));
  // Reads have a pool of their own.
  v1::SearchRequest search;
  search.set_collection("no-such-collection");
  search.set_query("term1");
  EXPECT_EQ(Search(search).error_code(), grpc::StatusCode::NOT_FOUND);
  auto first_status = first.get_future();
  slow.join();
  EXPECT_TRUE(first_status.get().ok());
  const std::string metrics = Metrics();
  EXPECT_EQ(MetricSample(metrics, "arbiter_worker_pool_rejected_total",
                         {{"pool", "ingest"}}),
            1);
  EXPECT_EQ(MetricSample(metrics, "arbiter_worker_pool_threads",
                         {{"pool", "ingest"}}),
            1);
  EXPECT_EQ(MetricSample(metrics, "arbiter_worker_pool_queued_tasks",
                         {{"pool", "ingest"}}),
            0);
}

TEST_F(PipelineTest, HugeCallerInputIsQuotedBriefly) {
  StartGateway(Config("",
                      "experiments:\n  - name: e\n    tasks: [policy]\n"
                      "    arms:\n      - {name: A, weight: 1, route: "
                      "prompted}\n      - {name: B, weight: 1, route: "
                      "fine-tuned}\n"));
  const std::string huge(100'000, 'x');
  auto expect_brief = [](const grpc::Status& status, grpc::StatusCode code,
                         const std::string& what) {
    EXPECT_EQ(status.error_code(), code)
        << what << ": " << status.error_message().substr(0, 300);
    EXPECT_LT(status.error_message().size(), 400u) << what;
    EXPECT_THAT(status.error_message(), HasSubstr("(100000 bytes)")) << what;
  };
  {
    v1::FeedbackRequest feedback;
    feedback.set_request_id(huge);
    feedback.set_correct(true);
    v1::FeedbackResponse response;
    expect_brief(v1::Gateway::NewStub(channel_)->Feedback(Context().get(),
                                                          feedback, &response),
                 grpc::StatusCode::NOT_FOUND, "request_id");
  }
  v1::InferResponse response;
  expect_brief(Infer(Ask(kQuestion, "", huge), &response),
               grpc::StatusCode::INVALID_ARGUMENT, "task");
  expect_brief(Infer(Ask(kQuestion, huge), &response),
               grpc::StatusCode::INVALID_ARGUMENT, "route");
  {
    // Roles are a closed set: an unknown value is named, not echoed.
    v1::InferRequest request = Ask(kQuestion);
    request.mutable_messages(0)->set_role(static_cast<v1::Role>(77));
    const grpc::Status status = Infer(request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("messages[0].role: must be"));
  }
  {
    v1::SearchRequest search;
    search.set_collection(huge);
    search.set_query("term");
    expect_brief(Search(search), grpc::StatusCode::NOT_FOUND, "collection");
    search.set_collection("bulk");
    search.set_mode(static_cast<v1::SearchMode>(77));
    const grpc::Status status = Search(search);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("mode: must be"));
  }
  expect_brief(Upsert(LargeUpsert(huge, "doc", 100)),
               grpc::StatusCode::INVALID_ARGUMENT, "upsert collection");
  {
    v1::GetCollectionRequest request;
    request.set_name(huge);
    v1::CollectionInfo info;
    expect_brief(v1::Retrieval::NewStub(channel_)->GetCollection(
                     Context().get(), request, &info),
                 grpc::StatusCode::NOT_FOUND, "get collection");
  }
  {
    v1::DeleteRequest request;
    request.set_collection(huge);
    request.set_id("x");
    v1::DeleteResponse deleted;
    expect_brief(v1::Retrieval::NewStub(channel_)->Delete(Context().get(),
                                                          request, &deleted),
                 grpc::StatusCode::NOT_FOUND, "delete collection");
  }
  {
    v1::GetExperimentRequest request;
    request.set_name(huge);
    v1::ExperimentAnalysis analysis;
    expect_brief(v1::Admin::NewStub(channel_)->GetExperiment(
                     Context().get(), request, &analysis),
                 grpc::StatusCode::NOT_FOUND, "experiment");
  }
  {
    v1::GetRouteStatsRequest request;
    request.set_route(huge);
    v1::GetRouteStatsResponse stats;
    expect_brief(v1::Admin::NewStub(channel_)->GetRouteStats(Context().get(),
                                                             request, &stats),
                 grpc::StatusCode::NOT_FOUND, "stats route");
  }
  // A document id and a metadata key echoed by the store.
  ASSERT_TRUE(Upsert(LargeUpsert("bulk", "doc", 100)).ok());
  {
    v1::DeleteRequest request;
    request.set_collection("bulk");
    request.set_id(huge);
    v1::DeleteResponse deleted;
    expect_brief(v1::Retrieval::NewStub(channel_)->Delete(Context().get(),
                                                          request, &deleted),
                 grpc::StatusCode::NOT_FOUND, "delete id");
    request.clear_id();
    request.set_metadata_key(huge);
    request.set_metadata_value_json("1");
    expect_brief(v1::Retrieval::NewStub(channel_)->Delete(Context().get(),
                                                          request, &deleted),
                 grpc::StatusCode::INVALID_ARGUMENT, "delete key");
  }
  // Still serving.
  EXPECT_TRUE(Infer(Ask(kQuestion, "prompted"), &response).ok());
}

TEST_F(PipelineTest, TooManyFiltersAreRefusedNamingTheLimit) {
  StartGateway(Config("", ""));
  ASSERT_TRUE(Upsert(LargeUpsert("bulk", "doc", 1000)).ok());
  v1::SearchRequest search;
  search.set_collection("bulk");
  search.set_query("term1");
  for (int i = 0; i < 1000; ++i) {
    v1::MetadataFilter* filter = search.add_filters();
    filter->set_key(absl::StrCat("k", i));
    filter->add_values_json("1");
  }
  grpc::Status status = Search(search);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << status.error_message();
  EXPECT_THAT(status.error_message(),
              HasSubstr("filters: 1000 filters exceed the limit of 64"));
  search.clear_filters();
  v1::MetadataFilter* filter = search.add_filters();
  filter->set_key("lang");
  for (int i = 0; i < 1000; ++i) filter->add_values_json(absl::StrCat(i));
  status = Search(search);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << status.error_message();
  EXPECT_THAT(status.error_message(),
              HasSubstr("filters[0].values: 1000 values exceed the limit of "
                        "256"));
}

TEST_F(PipelineTest, EmbeddingServerErrorsDoNotNameItsUrl) {
  StartGateway(
      Config("",
             "retrieval:\n  embedding_server: {url: \"http://127.0.0.1:1/v1\", "
             "model: m, timeout_ms: 200}\n  embedding_dim: 16\n"));
  grpc::Status status = Upsert(LargeUpsert("kb", "doc", 200));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("embedding server"));
  EXPECT_THAT(status.error_message(), Not(HasSubstr("127.0.0.1")));
  EXPECT_THAT(status.error_message(), Not(HasSubstr("http")));
  // The log has what the caller is not told (read from the pipe a moment
  // after the answer).
  const absl::Time logged = absl::Now() + absl::Seconds(10);
  while (gateway_->Output().find("http://127.0.0.1:1/v1") ==
             std::string::npos &&
         absl::Now() < logged) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_THAT(gateway_->Output(), HasSubstr("http://127.0.0.1:1/v1"));
  v1::SearchRequest search;
  search.set_collection("kb");
  search.set_query("anything at all");
  search.set_mode(v1::SEARCH_MODE_VECTOR);
  status = Search(search);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.error_message(), Not(HasSubstr("127.0.0.1")));
}

TEST_F(PipelineTest, ExperimentRouteArmSaysSoInTheReason) {
  StartGateway(Config("",
                      "experiments:\n  - name: prompt-vs-tuned\n"
                      "    tasks: [policy]\n    arms:\n"
                      "      - {name: A, weight: 1, route: prompted}\n"
                      "      - {name: B, weight: 1, route: fine-tuned}\n"));
  for (int i = 0; i < 4; ++i) {
    v1::InferResponse response;
    grpc::Status status = Infer(Ask(kQuestion, "", "policy"), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(
        response.decision().reason(),
        absl::StrCat("experiment prompt-vs-tuned arm ",
                     response.decision().arm(), ": route ", response.route()));
  }
}

TEST_F(PipelineTest, MinAccuracyWithoutEvidenceFailsSayingWhyPerRoute) {
  StartGateway(Config("", ""));
  v1::InferRequest request = Ask(kQuestion);
  request.mutable_constraints()->set_min_accuracy(1.0);
  v1::InferResponse response;
  grpc::Status status = Infer(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << "answered by " << response.route();
  EXPECT_THAT(
      status.error_message(),
      HasSubstr("prompted: 0 judged answers, fewer than the 20 needed"));
  EXPECT_THAT(status.error_message(),
              HasSubstr("fine-tuned: 0 judged answers"));
}

TEST_F(PipelineTest, CorpusWithALatin1ByteIsRepairedAndRagAnswers) {
  const std::string corpus = CorpusDir(
      {{"cafe.md", "# Caf\xE9 hours\n\nThe caf\xE9 opens at nine.\n"},
       {"password.md",
        "# Reset your password\n\nOpen Settings > Account > Password.\n"}});
  StartGateway(Config("", "", corpus));
  EXPECT_THAT(
      gateway_->Output(),
      HasSubstr("\"cafe.md\" (document \"cafe\"): invalid UTF-8 at byte 5; 2 "
                "sequence(s) "
                "replaced with U+FFFD"));
  for (const char* question : {"When does the cafe open?", kQuestion}) {
    v1::InferResponse response;
    grpc::Status status = Infer(Ask(question, "rag"), &response);
    ASSERT_TRUE(status.ok())
        << status.error_code() << " " << status.error_message();
    EXPECT_FALSE(response.citations().empty());
  }
}

TEST_F(PipelineTest, InvalidUtf8InARequestGetsInvalidArgumentNamingTheField) {
  StartGateway(Config("", ""));
  // Serialized with a placeholder byte, then made invalid: no protobuf
  // library would build it.
  v1::InferRequest infer = Ask("caf?");
  std::string bytes = infer.SerializeAsString();
  bytes[bytes.find("caf?") + 3] = '\xE9';
  grpc::Status status = CallRaw("/arbiter.v1.Gateway/Infer", bytes);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << status.error_code() << " " << status.error_message();
  EXPECT_THAT(status.error_message(),
              HasSubstr("messages[0].content: invalid UTF-8 at byte 3"));

  v1::UpsertRequest upsert = LargeUpsert("kb", "doc-1", 40);
  upsert.mutable_documents(0)->set_text("good words then ?");
  bytes = upsert.SerializeAsString();
  bytes[bytes.find("then ?") + 5] = '\xFF';
  status = CallRaw("/arbiter.v1.Retrieval/Upsert", bytes);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << status.error_message();
  EXPECT_THAT(status.error_message(),
              HasSubstr("documents[0].text (id \"doc-1\"): invalid UTF-8 at "
                        "byte 16"));

  status = CallRaw("/arbiter.v1.Gateway/Infer", "\xFF\xFF\xFF");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              HasSubstr("not a valid arbiter.v1.InferRequest"));
  // The process lives on.
  v1::InferResponse response;
  EXPECT_TRUE(Infer(Ask(kQuestion, "prompted"), &response).ok());
  EXPECT_TRUE(HealthCheck().ok());
}

}  // namespace
}  // namespace arbiter
