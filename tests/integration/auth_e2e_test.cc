// API keys against a real `arbiter serve`, over gRPC and HTTP: keys made
// with `arbiter keys create`, unknown and expired keys refused, a tenant
// held to its routes, tasks, collections and own requests, admin-only
// methods, keys rotated by a reload, the CLI sending its key, and the
// refusal to listen beyond loopback without auth.

#include <httplib.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/subprocess.h"

namespace arbiter {
namespace {

using ::arbiter::testing::MetricSample;
using ::arbiter::testing::RunCommand;
using ::arbiter::testing::ServingGateway;
using ::arbiter::testing::StartServe;
using ::testing::HasSubstr;
using ::testing::Not;

// What `arbiter keys create` printed: the key and its config entry.
struct MadeKey {
  std::string key;
  std::string entry;  // "{sha256: ..., label: ...}"
};

MadeKey CreateKey(const std::vector<std::string>& flags) {
  std::vector<std::string> args = {"keys", "create"};
  args.insert(args.end(), flags.begin(), flags.end());
  const auto result = RunCommand(ARBITER_BINARY, args);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  MadeKey made;
  for (absl::string_view line : absl::StrSplit(result.output, '\n')) {
    if (absl::StartsWith(line, "ak_")) made.key = std::string(line);
    if (absl::StartsWith(line, "  - {sha256: ")) {
      made.entry = std::string(line.substr(4));
    }
  }
  EXPECT_FALSE(made.key.empty()) << result.output;
  EXPECT_FALSE(made.entry.empty()) << result.output;
  return made;
}

struct HttpAnswer {
  int status = 0;
  nlohmann::json body;
  std::string www_authenticate;
};

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat(
               "arbiter-auth-", getpid(), "-",
               ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    config_path_ = (dir_ / "arbiter.yaml").string();
    acme_ = CreateKey({"--tenant", "acme", "--label", "acme laptop"});
    beta_ = CreateKey({"--tenant", "beta", "--expires-in", "30d"});
    admin_ = CreateKey({"--admin", "--label", "ops"});
  }
  void TearDown() override {
    channel_.reset();
    gateway_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Two routes, two tasks; acme may use prompted, faq and collection docs,
  // beta everything. `auth` replaces the whole auth section.
  std::string Config(const std::string& auth) const {
    return absl::StrReplaceAll(
        R"yaml(
tasks: [faq, billing]
backends:
  - name: sim
    sim:
      seed: 7
      time_to_first_token_seconds: 0
      seconds_per_token: 0
      output_tokens: 4
      dataset: DATASET
      models: [{name: m, accuracy: 0.7}]
routes:
  - {name: prompted, kind: prompted, backend: sim, model: m}
  - {name: fine-tuned, kind: fine_tuned, backend: sim, model: m}
policy:
  weighted: {weights: {prompted: 1, fine-tuned: 1}}
AUTH
)yaml",
        {{"DATASET", ARBITER_SOURCE_DIR "/quickstart/questions.jsonl"},
         {"AUTH", auth}});
  }

  std::string Auth(const std::string& acme_entry) const {
    return absl::StrCat(R"yaml(auth:
  mode: keys
  tenants:
    - name: acme
      keys: [)yaml",
                        acme_entry, R"yaml(]
      allowed_routes: [prompted]
      allowed_tasks: [faq]
      allowed_collections: [docs]
    - name: beta
      keys: [)yaml",
                        beta_.entry, R"yaml(]
  admin_keys: [)yaml",
                        admin_.entry, "]\n");
  }

  void Write(const std::string& text) const {
    std::ofstream(config_path_ + ".tmp") << text;
    std::filesystem::rename(config_path_ + ".tmp", config_path_);
  }

  void Start(const std::string& text, std::vector<std::string> flags = {}) {
    Write(text);
    flags.insert(flags.begin(), {"--config", config_path_, "--no-state"});
    auto gateway = StartServe(ARBITER_BINARY, flags);
    ASSERT_TRUE(gateway.ok()) << gateway.status();
    gateway_ = std::make_unique<ServingGateway>(*std::move(gateway));
    channel_ = grpc::CreateChannel(gateway_->target(),
                                   grpc::InsecureChannelCredentials());
  }

  static void WithKey(grpc::ClientContext& context, const std::string& key) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(20));
    if (!key.empty()) context.AddMetadata("authorization", "Bearer " + key);
  }

  grpc::Status Infer(const std::string& key, const std::string& route,
                     const std::string& task,
                     v1::InferResponse* response) const {
    grpc::ClientContext context;
    WithKey(context, key);
    v1::InferRequest request;
    v1::ChatMessage* message = request.add_messages();
    message->set_role(v1::ROLE_USER);
    message->set_content("How do I reset my password?");
    request.set_route(route);
    request.set_task(task);
    return v1::Gateway::NewStub(channel_)->Infer(&context, request, response);
  }

  grpc::Status Feedback(const std::string& key,
                        const std::string& request_id) const {
    grpc::ClientContext context;
    WithKey(context, key);
    v1::FeedbackRequest request;
    request.set_request_id(request_id);
    request.set_correct(true);
    v1::FeedbackResponse response;
    return v1::Gateway::NewStub(channel_)->Feedback(&context, request,
                                                    &response);
  }

  grpc::Status RouteStats(const std::string& key) const {
    grpc::ClientContext context;
    WithKey(context, key);
    v1::GetRouteStatsResponse response;
    return v1::Admin::NewStub(channel_)->GetRouteStats(
        &context, v1::GetRouteStatsRequest(), &response);
  }

  grpc::Status Search(const std::string& key,
                      const std::string& collection) const {
    grpc::ClientContext context;
    WithKey(context, key);
    v1::SearchRequest request;
    request.set_collection(collection);
    request.set_query("password");
    v1::SearchResponse response;
    return v1::Retrieval::NewStub(channel_)->Search(&context, request,
                                                    &response);
  }

  grpc::Status Upsert(const std::string& key,
                      const std::string& collection) const {
    grpc::ClientContext context;
    WithKey(context, key);
    v1::UpsertRequest request;
    request.set_collection(collection);
    v1::RetrievalDocument* document = request.add_documents();
    document->set_id("reset");
    document->set_text("To reset your password open the settings page.");
    v1::UpsertResponse response;
    return v1::Retrieval::NewStub(channel_)->Upsert(&context, request,
                                                    &response);
  }

  HttpAnswer Http(const std::string& method, const std::string& path,
                  const std::string& key, const nlohmann::json& body = {},
                  int port = 0) const {
    httplib::Client client("127.0.0.1", port != 0 ? port : gateway_->http_port);
    client.set_read_timeout(20, 0);
    httplib::Headers headers;
    if (!key.empty()) headers.emplace("Authorization", "Bearer " + key);
    auto result = method == "GET" ? client.Get(path, headers)
                                  : client.Post(path, headers, body.dump(),
                                                "application/json");
    HttpAnswer answer;
    if (!result) return answer;
    answer.status = result->status;
    answer.body = nlohmann::json::parse(result->body, nullptr, false);
    answer.www_authenticate = result->get_header_value("WWW-Authenticate");
    return answer;
  }

  HttpAnswer Chat(const std::string& key, const std::string& model) const {
    return Http("POST", "/v1/chat/completions", key,
                {{"model", model},
                 {"messages",
                  {{{"role", "user"}, {"content", "How do I reset it?"}}}}});
  }

  std::string KeyFile(const MadeKey& key, const std::string& name) const {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << key.key << "\n";
    return path;
  }

  std::filesystem::path dir_;
  std::string config_path_;
  MadeKey acme_, beta_, admin_;
  std::unique_ptr<ServingGateway> gateway_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(AuthTest, KeysCreateOutputRoundTripsIntoAConfigThatAcceptsTheKey) {
  EXPECT_THAT(acme_.entry, HasSubstr("label: \"acme laptop\""));
  EXPECT_THAT(beta_.entry, HasSubstr("expires: 20"));
  EXPECT_NE(acme_.key, beta_.key);
  const auto checked = [&] {
    Write(Config(Auth(acme_.entry)));
    return RunCommand(ARBITER_BINARY, {"check-config", config_path_});
  }();
  EXPECT_EQ(checked.exit_code, 0) << checked.output;
  EXPECT_THAT(checked.output, HasSubstr("auth: keys, tenants acme, beta"));
  // The key itself is never written anywhere the gateway reads.
  EXPECT_THAT(checked.output, Not(HasSubstr(acme_.key)));

  ASSERT_NO_FATAL_FAILURE(Start(Config(Auth(acme_.entry))));
  v1::InferResponse response;
  const grpc::Status status = Infer(acme_.key, "", "", &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.route(), "prompted");
}

TEST_F(AuthTest, MissingUnknownAndExpiredKeysAreUnauthenticatedOverGrpc) {
  const MadeKey old = CreateKey({"--tenant", "acme"});
  std::string expired = old.entry;
  expired.back() = ' ';
  absl::StrAppend(&expired, ", expires: 2020-01-01T00:00:00Z}");
  ASSERT_NO_FATAL_FAILURE(
      Start(Config(Auth(absl::StrCat(acme_.entry, ", ", expired)))));
  v1::InferResponse response;
  grpc::Status status = Infer("", "", "", &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(status.error_message(), HasSubstr("Bearer"));
  const std::string unknown = "ak_not-a-key-this-gateway-knows";
  status = Infer(unknown, "", "", &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(status.error_message(), "unknown API key");
  status = Infer(old.key, "", "", &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(status.error_message(), HasSubstr("expired at 2020-01-01"));
  EXPECT_THAT(status.error_message(), Not(HasSubstr(old.key)));
  // InferStream is held to the same.
  grpc::ClientContext context;
  WithKey(context, unknown);
  v1::InferRequest request;
  request.add_messages()->set_content("Hi");
  auto reader = v1::Gateway::NewStub(channel_)->InferStream(&context, request);
  v1::InferChunk chunk;
  EXPECT_FALSE(reader->Read(&chunk));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // The gateway never logs a key it was shown.
  EXPECT_THAT(gateway_->process->Output(), Not(HasSubstr(unknown)));
  httplib::Client metrics("127.0.0.1", gateway_->metrics_port);
  auto scraped = metrics.Get("/metrics");
  ASSERT_TRUE(scraped);
  auto failures = [&](const std::string& reason) {
    return MetricSample(scraped->body, "arbiter_auth_failures_total",
                        {{"reason", reason}});
  };
  EXPECT_EQ(failures("missing"), 1);
  EXPECT_EQ(failures("unknown"), 2);
  EXPECT_EQ(failures("expired"), 1);
  EXPECT_EQ(failures("malformed"), 0);
}

TEST_F(AuthTest, HttpAnswers401WithWwwAuthenticateAndLeavesProbesOpen) {
  ASSERT_NO_FATAL_FAILURE(Start(Config(Auth(acme_.entry))));
  for (const std::string& key : {std::string(), std::string("ak_wrong")}) {
    const HttpAnswer chat = Chat(key, "arbiter/auto");
    EXPECT_EQ(chat.status, 401) << chat.body;
    EXPECT_EQ(chat.www_authenticate, "Bearer");
    EXPECT_EQ(chat.body["error"]["type"], "authentication_error");
    EXPECT_EQ(chat.body["error"]["code"], "invalid_api_key");
    EXPECT_EQ(Http("GET", "/v1/models", key).status, 401);
    EXPECT_EQ(Http("POST", "/v1/embeddings", key,
                   {{"model", "arbiter-embed"}, {"input", "hi"}})
                  .status,
              401);
    EXPECT_EQ(Http("POST", "/v1/feedback", key,
                   {{"request_id", "arb2_x"}, {"correct", true}})
                  .status,
              401);
  }
  EXPECT_EQ(Http("GET", "/healthz", "").status, 200);
  EXPECT_EQ(Http("GET", "/readyz", "").status, 200);
  httplib::Client metrics("127.0.0.1", gateway_->metrics_port);
  auto scraped = metrics.Get("/metrics");
  ASSERT_TRUE(scraped);
  EXPECT_EQ(scraped->status, 200);
  EXPECT_EQ(Chat(acme_.key, "arbiter/auto").status, 200);
  EXPECT_EQ(Http("POST", "/v1/embeddings", acme_.key,
                 {{"model", "arbiter-embed"}, {"input", "hi"}})
                .status,
            200);
}

TEST_F(AuthTest, ATenantIsHeldToItsRoutesAndTasksOnEveryFront) {
  ASSERT_NO_FATAL_FAILURE(Start(Config(Auth(acme_.entry))));
  // The policy weighs both routes; for acme it chooses among its one.
  for (int i = 0; i < 8; ++i) {
    v1::InferResponse response;
    const grpc::Status status = Infer(acme_.key, "", "faq", &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.route(), "prompted");
    const HttpAnswer chat = Chat(acme_.key, "arbiter/auto");
    ASSERT_EQ(chat.status, 200) << chat.body;
    EXPECT_EQ(chat.body["arbiter"]["route"], "prompted");
  }
  v1::InferResponse response;
  grpc::Status status = Infer(acme_.key, "fine-tuned", "", &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(status.error_message(), "tenant acme may not use route fine-tuned");
  status = Infer(acme_.key, "", "billing", &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(status.error_message(), "tenant acme may not use task billing");
  const HttpAnswer pinned = Chat(acme_.key, "fine-tuned");
  EXPECT_EQ(pinned.status, 403) << pinned.body;
  EXPECT_EQ(pinned.body["error"]["type"], "permission_error");
  EXPECT_EQ(pinned.body["error"]["message"],
            "tenant acme may not use route fine-tuned");

  // Another tenant without limits uses both.
  status = Infer(beta_.key, "fine-tuned", "billing", &response);
  EXPECT_TRUE(status.ok()) << status.error_message();

  auto model_ids = [&](const std::string& key) {
    std::set<std::string> ids;
    const HttpAnswer models = Http("GET", "/v1/models", key);
    for (const auto& model : models.body["data"]) ids.insert(model["id"]);
    return ids;
  };
  EXPECT_EQ(model_ids(acme_.key),
            (std::set<std::string>{"arbiter/auto", "prompted"}));
  EXPECT_EQ(model_ids(beta_.key),
            (std::set<std::string>{"arbiter/auto", "prompted", "fine-tuned"}));
}

TEST_F(AuthTest, AdminMethodsAndCollectionsNeedTheirPermission) {
  ASSERT_NO_FATAL_FAILURE(Start(Config(Auth(acme_.entry))));
  grpc::Status status = RouteStats(acme_.key);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(),
              HasSubstr("admin key required for Admin.GetRouteStats"));
  {
    grpc::ClientContext context;
    WithKey(context, acme_.key);
    v1::ReloadConfigResponse response;
    status = v1::Admin::NewStub(channel_)->ReloadConfig(
        &context, v1::ReloadConfigRequest(), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_THAT(status.error_message(),
                HasSubstr("admin key required for Admin.ReloadConfig"));
  }
  status = Upsert(acme_.key, "docs");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(),
              HasSubstr("admin key required for Retrieval.Upsert"));
  EXPECT_EQ(RouteStats("").error_code(), grpc::StatusCode::UNAUTHENTICATED);

  status = RouteStats(admin_.key);
  EXPECT_TRUE(status.ok()) << status.error_message();
  status = Upsert(admin_.key, "docs");
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_TRUE(Upsert(admin_.key, "hr").ok());

  status = Search(acme_.key, "docs");
  EXPECT_TRUE(status.ok()) << status.error_message();
  status = Search(acme_.key, "hr");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(status.error_message(), "tenant acme may not search collection hr");
  EXPECT_TRUE(Search(beta_.key, "hr").ok());
  EXPECT_TRUE(Search(admin_.key, "hr").ok());
}

TEST_F(AuthTest, FeedbackIsForTheTenantWhoseRequestItWas) {
  ASSERT_NO_FATAL_FAILURE(Start(Config(Auth(acme_.entry))));
  v1::InferResponse acme_answer, beta_answer, admin_answer;
  ASSERT_TRUE(Infer(acme_.key, "", "", &acme_answer).ok());
  ASSERT_TRUE(Infer(beta_.key, "", "", &beta_answer).ok());
  ASSERT_TRUE(Infer(admin_.key, "", "", &admin_answer).ok());
  EXPECT_TRUE(absl::StartsWith(acme_answer.request_id(), "arb3_"));
  EXPECT_TRUE(absl::StartsWith(admin_answer.request_id(), "arb2_"));

  grpc::Status status = Feedback(beta_.key, acme_answer.request_id());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(),
              HasSubstr("tenant beta may not give feedback on this request"));
  const HttpAnswer http =
      Http("POST", "/v1/feedback", beta_.key,
           {{"request_id", acme_answer.request_id()}, {"correct", true}});
  EXPECT_EQ(http.status, 403) << http.body;
  // Not another tenant's, nor an admin's.
  EXPECT_EQ(Feedback(acme_.key, admin_answer.request_id()).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);

  status = Feedback(acme_.key, acme_answer.request_id());
  EXPECT_TRUE(status.ok()) << status.error_message();
  const HttpAnswer own =
      Http("POST", "/v1/feedback", beta_.key,
           {{"request_id", beta_answer.request_id()}, {"correct", true}});
  EXPECT_EQ(own.status, 200) << own.body;
  // An admin may judge any request.
  EXPECT_TRUE(Feedback(admin_.key, admin_answer.request_id()).ok());
}

TEST_F(AuthTest, AReloadRotatesKeysWithoutARestart) {
  ASSERT_NO_FATAL_FAILURE(Start(Config(Auth(acme_.entry))));
  const MadeKey next = CreateKey({"--tenant", "acme", "--label", "new"});
  ASSERT_EQ(Chat(acme_.key, "arbiter/auto").status, 200);
  ASSERT_EQ(Chat(next.key, "arbiter/auto").status, 401);

  Write(Config(Auth(next.entry)));
  const std::string target = gateway_->target();
  // A tenant may not reload; the CLI sends the admin key from a file.
  const auto refused = RunCommand(
      ARBITER_BINARY,
      {"reload", "--target", target, "--api-key-file", KeyFile(acme_, "acme")});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_THAT(refused.output, HasSubstr("PERMISSION_DENIED"));
  const auto reloaded =
      RunCommand(ARBITER_BINARY, {"reload", "--target", target,
                                  "--api-key-file", KeyFile(admin_, "admin")});
  ASSERT_EQ(reloaded.exit_code, 0) << reloaded.output;
  EXPECT_THAT(reloaded.output, HasSubstr("API keys: 1 added, 1 removed"));
  EXPECT_THAT(reloaded.output, Not(HasSubstr(next.key)));

  EXPECT_EQ(Chat(acme_.key, "arbiter/auto").status, 401);
  EXPECT_EQ(Chat(next.key, "arbiter/auto").status, 200);
  v1::InferResponse response;
  EXPECT_EQ(Infer(acme_.key, "", "", &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Infer(next.key, "", "", &response).ok());
}

TEST_F(AuthTest, TheCliSendsTheKeyFromTheEnvironmentOrAFile) {
  ASSERT_NO_FATAL_FAILURE(Start(Config(Auth(acme_.entry))));
  const std::string target = gateway_->target();
  unsetenv("ARBITER_API_KEY");
  auto result = RunCommand(ARBITER_BINARY, {"stats", "--target", target});
  EXPECT_NE(result.exit_code, 0);
  EXPECT_THAT(result.output, HasSubstr("UNAUTHENTICATED"));
  EXPECT_THAT(result.output, HasSubstr("--api-key-file PATH or"));
  result =
      RunCommand(ARBITER_BINARY, {"stats", "--target", target, "--api-key-file",
                                  KeyFile(admin_, "admin")});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  result =
      RunCommand(ARBITER_BINARY, {"stats", "--target", target, "--api-key-file",
                                  (dir_ / "missing").string()});
  EXPECT_NE(result.exit_code, 0);
  EXPECT_THAT(result.output, HasSubstr("--api-key-file: cannot read"));

  setenv("ARBITER_API_KEY", acme_.key.c_str(), 1);
  result = RunCommand(ARBITER_BINARY,
                      {"infer", "--target", target, "How do I reset it?"});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  result = RunCommand(ARBITER_BINARY, {"infer", "--target", target, "--route",
                                       "fine-tuned", "How do I reset it?"});
  EXPECT_NE(result.exit_code, 0);
  EXPECT_THAT(result.output,
              HasSubstr("tenant acme may not use route fine-tuned"));
  unsetenv("ARBITER_API_KEY");
}

TEST_F(AuthTest, WithoutAuthItRefusesToListenBeyondLoopback) {
  Write(Config(""));
  for (const char* flag : {"--grpc-listen", "--http-listen"}) {
    const auto result = RunCommand(
        ARBITER_BINARY,
        {"serve", "--config", config_path_, "--no-state", "--grpc-listen",
         "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--http-listen",
         "127.0.0.1:0", flag, "0.0.0.0:0"});
    EXPECT_EQ(result.exit_code, 1) << result.output;
    EXPECT_THAT(result.output, HasSubstr("0.0.0.0:0"));
    EXPECT_THAT(result.output, HasSubstr("auth: {mode: none}"));
  }
  // Loopback without auth serves anyone, as it always did.
  ASSERT_NO_FATAL_FAILURE(Start(Config("")));
  v1::InferResponse response;
  EXPECT_TRUE(Infer("", "", "", &response).ok());
  EXPECT_TRUE(RouteStats("").ok());
}

TEST_F(AuthTest, ModeNoneListensBeyondLoopbackWithAWarning) {
  ASSERT_NO_FATAL_FAILURE(
      Start(Config("auth: {mode: none}"), {"--grpc-listen", "0.0.0.0:0"}));
  EXPECT_THAT(gateway_->process->Output(),
              HasSubstr("warning: auth mode none"));
  v1::InferResponse response;
  EXPECT_TRUE(Infer("", "fine-tuned", "billing", &response).ok());
  EXPECT_TRUE(RouteStats("").ok());
}

}  // namespace
}  // namespace arbiter
