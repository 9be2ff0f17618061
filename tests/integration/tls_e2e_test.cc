// TLS for real: a gateway serving gRPC, HTTP and /metrics with certificates
// made by the `openssl` command line, reached by gRPC's and libcurl's TLS
// clients (and by a real Prometheus scraping with TLS and basic auth);
// mutual TLS; certificates rotated by a reload; bad files refused by name.

#include <arpa/inet.h>
#include <curl/curl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/subprocess.h"

namespace arbiter {
namespace {

using ::arbiter::testing::FreePort;
using ::arbiter::testing::RunCommand;
using ::arbiter::testing::ServingGateway;
using ::arbiter::testing::StartServe;
using ::arbiter::testing::Subprocess;
using ::testing::HasSubstr;
using ::testing::Not;

// "password", as `printf %s password | sha256sum` prints it.
constexpr char kPasswordSha256[] =
    "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void Write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// A throwaway PKI in `dir`, made with the openssl CLI: two CAs, a server
// certificate for 127.0.0.1 and localhost from each, a client certificate.
class Pki {
 public:
  explicit Pki(std::string dir) : dir_(std::move(dir)) {}

  bool Make() {
    return Ca("ca") && Ca("other-ca") && Leaf("server", "ca", true) &&
           Leaf("rotated", "other-ca", true) && Leaf("client", "ca", false);
  }
  [[nodiscard]] std::string Path(const std::string& name) const {
    return absl::StrCat(dir_, "/", name);
  }

 private:
  bool Run(const std::string& command) {
    return std::system(
               absl::StrCat("cd '", dir_, "' && ", command, " >/dev/null 2>&1")
                   .c_str()) == 0;
  }
  bool Ca(const std::string& name) {
    return Run(absl::StrCat(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
        "-nodes -keyout ",
        name, ".key -out ", name, ".pem -days 2 -subj '/CN=", name, "'"));
  }
  bool Leaf(const std::string& name, const std::string& ca, bool server) {
    Write(Path(name + ".ext"),
          server ? "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                 : "extendedKeyUsage=clientAuth\n");
    return Run(absl::StrCat(
               "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
               "-nodes -keyout ",
               name, ".key -out ", name, ".csr -subj '/CN=", name, "'")) &&
           Run(absl::StrCat("openssl x509 -req -in ", name, ".csr -CA ", ca,
                            ".pem -CAkey ", ca, ".key -CAcreateserial -out ",
                            name, ".pem -days 2 -extfile ", name, ".ext"));
  }

  std::string dir_;
};

// The result of one HTTPS request by libcurl.
struct Fetched {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string body;
  std::string error;
};

struct FetchOptions {
  std::string ca_file;  // Empty: the system's CAs, which do not know ours.
  std::string cert_file, key_file;  // A client certificate.
  std::string user_password;        // "user:password" for basic auth.
  std::string post_json;
};

size_t Append(char* data, size_t size, size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

Fetched Fetch(const std::string& url, const FetchOptions& options = {}) {
  Fetched fetched;
  CURL* curl = curl_easy_init();
  char error[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &Append);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &fetched.body);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
  if (!options.ca_file.empty()) {
    curl_easy_setopt(curl, CURLOPT_CAINFO, options.ca_file.c_str());
  }
  if (!options.cert_file.empty()) {
    curl_easy_setopt(curl, CURLOPT_SSLCERT, options.cert_file.c_str());
    curl_easy_setopt(curl, CURLOPT_SSLKEY, options.key_file.c_str());
  }
  if (!options.user_password.empty()) {
    curl_easy_setopt(curl, CURLOPT_USERPWD, options.user_password.c_str());
  }
  curl_slist* headers = nullptr;
  if (!options.post_json.empty()) {
    headers = curl_slist_append(headers, "content-type: application/json");
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, options.post_json.c_str());
  }
  fetched.code = curl_easy_perform(curl);
  fetched.error = error;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &fetched.status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return fetched;
}

constexpr char kChat[] =
    R"({"model":"prompted","messages":[{"role":"user","content":"Hi"}]})";

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/arbiter-tls-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    pki_ = std::make_unique<Pki>(dir_);
    ASSERT_TRUE(pki_->Make()) << "openssl could not make the test PKI";
    // The files the gateway serves, so that a test can rotate them.
    std::filesystem::copy_file(pki_->Path("server.pem"), Path("tls.pem"));
    std::filesystem::copy_file(pki_->Path("server.key"), Path("tls.key"));
  }
  void TearDown() override {
    gateway_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  [[nodiscard]] std::string Path(const std::string& name) const {
    return pki_->Path(name);
  }

  // The quickstart's routes over the simulator, with `tls` as the
  // server.tls section's inner YAML and `more` added to server.
  std::string Config(const std::string& tls, const std::string& more = "") {
    const std::string quickstart = ARBITER_SOURCE_DIR "/quickstart";
    const std::string config = Path("arbiter.yaml");
    Write(config,
          absl::StrCat("server:\n  tls: {", tls, "}\n", more,
                       "tasks: [faq]\n"
                       "policy: {pinned: {route: prompted}}\n"
                       "backends:\n"
                       "  - name: sim\n"
                       "    sim:\n"
                       "      time_to_first_token_seconds: 0\n"
                       "      seconds_per_token: 0\n"
                       "      output_tokens: 5\n"
                       "      dataset: ",
                       quickstart,
                       "/questions.jsonl\n"
                       "      models: [{name: base, accuracy: 0.8}]\n"
                       "routes:\n"
                       "  - {name: prompted, kind: prompted, backend: sim, "
                       "model: base}\n"));
    return config;
  }

  std::string ServerTls() const {
    return absl::StrCat("cert_file: ", Path("tls.pem"),
                        ", key_file: ", Path("tls.key"));
  }

  void Serve(const std::string& config) {
    auto gateway =
        StartServe(ARBITER_BINARY, {"--config", config, "--no-state"});
    ASSERT_TRUE(gateway.ok()) << gateway.status();
    gateway_ = std::make_unique<ServingGateway>(*std::move(gateway));
  }

  std::string Https(const std::string& path) const {
    return absl::StrCat("https://127.0.0.1:", gateway_->http_port, path);
  }

  // Infer over a TLS channel trusting `ca` (and presenting a client
  // certificate when `client` names one).
  grpc::Status GrpcInfer(const std::string& ca, const std::string& client = "",
                         grpc::ChannelArguments args = {}) const {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = Slurp(Path(ca + ".pem"));
    if (!client.empty()) {
      ssl.pem_cert_chain = Slurp(Path(client + ".pem"));
      ssl.pem_private_key = Slurp(Path(client + ".key"));
    }
    return Infer(grpc::SslCredentials(ssl), std::move(args));
  }

  grpc::Status Infer(std::shared_ptr<grpc::ChannelCredentials> credentials,
                     grpc::ChannelArguments args = {}) const {
    auto stub = v1::Gateway::NewStub(grpc::CreateCustomChannel(
        gateway_->target(), std::move(credentials), args));
    v1::InferRequest request;
    v1::ChatMessage* message = request.add_messages();
    message->set_role(v1::ROLE_USER);
    message->set_content("Hi");
    v1::InferResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(5));
    return stub->Infer(&context, request, &response);
  }

  std::string dir_;
  std::unique_ptr<Pki> pki_;
  std::unique_ptr<ServingGateway> gateway_;
};

TEST_F(TlsTest, BothFrontsServeTlsToClientsThatTrustTheCa) {
  ASSERT_NO_FATAL_FAILURE(Serve(Config(ServerTls())));

  grpc::Status trusted = GrpcInfer("ca");
  EXPECT_TRUE(trusted.ok()) << trusted.error_message();
  Fetched chat = Fetch(Https("/v1/chat/completions"),
                       {.ca_file = Path("ca.pem"), .post_json = kChat});
  EXPECT_EQ(chat.code, CURLE_OK) << chat.error;
  EXPECT_EQ(chat.status, 200) << chat.body;
  EXPECT_THAT(chat.body, HasSubstr("chat.completion"));
}

TEST_F(TlsTest, ClientsWithoutTheCaOrWithoutTlsFailCleanly) {
  ASSERT_NO_FATAL_FAILURE(Serve(Config(ServerTls())));

  // A client that trusts another CA does not get through, nor one in plain
  // text; the gateway lives on and still serves the right clients.
  EXPECT_EQ(GrpcInfer("other-ca").error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Infer(grpc::InsecureChannelCredentials()).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  Fetched untrusted =
      Fetch(Https("/v1/models"), {.ca_file = Path("other-ca.pem")});
  EXPECT_EQ(untrusted.code, CURLE_PEER_FAILED_VERIFICATION) << untrusted.error;
  // Plain HTTP to the HTTPS port is told what is wrong, in plain text.
  Fetched plain = Fetch(
      absl::StrCat("http://127.0.0.1:", gateway_->http_port, "/v1/models"));
  EXPECT_EQ(plain.code, CURLE_OK) << plain.error;
  EXPECT_EQ(plain.status, 400);
  EXPECT_THAT(plain.body, HasSubstr("speaks HTTPS"));

  EXPECT_TRUE(GrpcInfer("ca").ok());
  EXPECT_EQ(Fetch(Https("/v1/models"), {.ca_file = Path("ca.pem")}).status,
            200);
}

TEST_F(TlsTest, MutualTlsAdmitsOnlyClientsWithACertificateTheCaSigned) {
  ASSERT_NO_FATAL_FAILURE(Serve(
      Config(absl::StrCat(ServerTls(), ", client_ca_file: ", Path("ca.pem")))));

  EXPECT_EQ(GrpcInfer("ca").error_code(), grpc::StatusCode::UNAVAILABLE);
  grpc::Status with_cert = GrpcInfer("ca", "client");
  EXPECT_TRUE(with_cert.ok()) << with_cert.error_message();
  // A certificate signed by another CA is refused like none.
  EXPECT_EQ(GrpcInfer("ca", "rotated").error_code(),
            grpc::StatusCode::UNAVAILABLE);

  Fetched without = Fetch(Https("/v1/models"), {.ca_file = Path("ca.pem")});
  EXPECT_NE(without.code, CURLE_OK);
  Fetched with = Fetch(Https("/v1/models"), {.ca_file = Path("ca.pem"),
                                             .cert_file = Path("client.pem"),
                                             .key_file = Path("client.key")});
  EXPECT_EQ(with.code, CURLE_OK) << with.error;
  EXPECT_EQ(with.status, 200);
}

TEST_F(TlsTest, MetricsOverTlsWithBasicAuth) {
  ASSERT_NO_FATAL_FAILURE(Serve(Config(
      ServerTls(),
      absl::StrCat("  metrics_tls: true\n  metrics_basic_auth: {username: "
                   "prometheus, password_sha256: ",
                   kPasswordSha256, "}\n"))));
  const std::string url =
      absl::StrCat("https://127.0.0.1:", gateway_->metrics_port, "/metrics");

  Fetched anonymous = Fetch(url, {.ca_file = Path("ca.pem")});
  EXPECT_EQ(anonymous.status, 401);
  Fetched wrong = Fetch(
      url, {.ca_file = Path("ca.pem"), .user_password = "prometheus:wrong"});
  EXPECT_EQ(wrong.status, 401);
  Fetched other_user = Fetch(
      url, {.ca_file = Path("ca.pem"), .user_password = "grafana:password"});
  EXPECT_EQ(other_user.status, 401);
  Fetched scrape = Fetch(
      url, {.ca_file = Path("ca.pem"), .user_password = "prometheus:password"});
  EXPECT_EQ(scrape.status, 200);
  EXPECT_THAT(scrape.body, HasSubstr("arbiter_config_reloads_total"));
}

TEST_F(TlsTest, PrometheusScrapesWithTlsAndBasicAuth) {
  if (std::system("command -v prometheus >/dev/null 2>&1") != 0) {
    if (std::getenv("CI") != nullptr) {
      FAIL() << "prometheus is not installed; CI must install it";
    }
    GTEST_SKIP() << "prometheus not installed (Debian package prometheus)";
  }
  ASSERT_NO_FATAL_FAILURE(Serve(Config(
      absl::StrCat(ServerTls(), ", client_ca_file: ", Path("ca.pem")),
      absl::StrCat("  metrics_tls: true\n  metrics_basic_auth: {username: "
                   "prometheus, password_sha256: ",
                   kPasswordSha256, "}\n"))));
  const int port = FreePort();
  const std::string config = Path("prometheus.yml");
  Write(config,
        absl::StrCat(
            "global: {scrape_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: arbiter\n"
            "    scheme: https\n"
            "    tls_config: {ca_file: ",
            Path("ca.pem"), ", cert_file: ", Path("client.pem"),
            ", key_file: ", Path("client.key"),
            "}\n"
            "    basic_auth: {username: prometheus, password: password}\n"
            "    static_configs: [{targets: ['127.0.0.1:",
            gateway_->metrics_port, "']}]\n"));
  auto prometheus = Subprocess::Start(
      {"prometheus", "--config.file=" + config,
       "--storage.tsdb.path=" + Path("tsdb"),
       absl::StrCat("--web.listen-address=127.0.0.1:", port)});
  ASSERT_TRUE(prometheus.ok()) << prometheus.status();

  httplib::Client client("127.0.0.1", port);
  std::string last;
  bool up = false;
  for (int i = 0; i < 60 && !up; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    auto result = client.Get("/api/v1/query?query=up%7Bjob%3D%22arbiter%22%7D");
    if (!result || result->status != 200) continue;
    last = result->body;
    auto body = nlohmann::json::parse(result->body, nullptr, false);
    if (body.is_discarded()) continue;
    for (const auto& sample : body["data"]["result"]) {
      up = up || sample["value"][1] == "1";
    }
  }
  EXPECT_TRUE(up) << "Prometheus never scraped arbiter over TLS: " << last;
  auto targets = client.Get("/api/v1/targets");
  ASSERT_TRUE(targets);
  EXPECT_THAT(targets->body, Not(HasSubstr("\"lastError\":\"server returned")))
      << targets->body;
}

TEST_F(TlsTest, AReloadRotatesTheCertificates) {
  ASSERT_NO_FATAL_FAILURE(Serve(Config(ServerTls())));
  ASSERT_TRUE(GrpcInfer("ca").ok());
  ASSERT_EQ(Fetch(Https("/v1/models"), {.ca_file = Path("other-ca.pem")}).code,
            CURLE_PEER_FAILED_VERIFICATION);

  // The same paths, now holding a certificate from the other CA.
  std::filesystem::copy_file(Path("rotated.pem"), Path("tls.pem"),
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(Path("rotated.key"), Path("tls.key"),
                             std::filesystem::copy_options::overwrite_existing);
  gateway_->process->Signal(SIGHUP);
  ASSERT_TRUE(
      gateway_->process->WaitForLine("reloaded the config", absl::Seconds(10))
          .ok())
      << gateway_->process->Output();

  Fetched rotated =
      Fetch(Https("/v1/models"), {.ca_file = Path("other-ca.pem")});
  EXPECT_EQ(rotated.code, CURLE_OK) << rotated.error;
  EXPECT_EQ(Fetch(Https("/v1/models"), {.ca_file = Path("ca.pem")}).code,
            CURLE_PEER_FAILED_VERIFICATION);
  // gRPC takes the new files within its refresh period. Each attempt on a
  // new channel (a new handshake): a channel's arguments make it unique.
  bool grpc_rotated = false;
  for (int i = 0; i < 40 && !grpc_rotated; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("arbiter.test.attempt", i);
    grpc_rotated = GrpcInfer("other-ca", "", args).ok();
    if (!grpc_rotated)
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  EXPECT_TRUE(grpc_rotated) << "gRPC still presents the old certificate";
}

TEST_F(TlsTest, AReloadWithABadCertificateIsRefusedAndTheOldOneStays) {
  ASSERT_NO_FATAL_FAILURE(Serve(Config(ServerTls())));
  // A key that is not the certificate's: refused, naming the file.
  std::filesystem::copy_file(Path("rotated.key"), Path("tls.key"),
                             std::filesystem::copy_options::overwrite_existing);
  gateway_->process->Signal(SIGHUP);
  auto refused =
      gateway_->process->WaitForLine("reload refused", absl::Seconds(10));
  ASSERT_TRUE(refused.ok()) << gateway_->process->Output();
  EXPECT_THAT(*refused, HasSubstr("server.tls.key_file"));
  EXPECT_THAT(*refused, HasSubstr("does not match the certificate"));
  Fetched still = Fetch(Https("/v1/models"), {.ca_file = Path("ca.pem")});
  EXPECT_EQ(still.code, CURLE_OK) << still.error;
  EXPECT_EQ(still.status, 200);
}

TEST_F(TlsTest, BadFilesStopTheStartNamingTheField) {
  struct Case {
    std::string tls;
    std::string says;
  };
  Write(Path("garbage.pem"), "not a certificate\n");
  const std::vector<Case> cases = {
      {absl::StrCat("cert_file: ", Path("missing.pem"),
                    ", key_file: ", Path("tls.key")),
       "server.tls.cert_file: cannot read"},
      {absl::StrCat("cert_file: ", Path("garbage.pem"),
                    ", key_file: ", Path("tls.key")),
       "holds no PEM certificate"},
      {absl::StrCat("cert_file: ", Path("tls.pem"),
                    ", key_file: ", Path("rotated.key")),
       "server.tls.key_file: the key in"},
      {absl::StrCat("cert_file: ", Path("tls.pem"),
                    ", key_file: ", Path("tls.pem")),
       "holds no unencrypted PEM private key"},
      {absl::StrCat(ServerTls(), ", client_ca_file: ", Path("garbage.pem")),
       "server.tls.client_ca_file"},
      {absl::StrCat("key_file: ", Path("tls.key")),
       "server.tls.cert_file: is required"},
  };
  for (const Case& c : cases) {
    auto result = RunCommand(
        ARBITER_BINARY, {"serve", "--config", Config(c.tls), "--no-state",
                         "--grpc-listen", "127.0.0.1:0", "--http-listen",
                         "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"});
    EXPECT_NE(result.exit_code, 0) << c.tls;
    EXPECT_THAT(result.output, HasSubstr(c.says)) << c.tls;
  }
  // /metrics over TLS without server.tls: the config says why.
  Write(Path("no-tls.yaml"),
        absl::StrReplaceAll(Slurp(Config(ServerTls())),
                            {{absl::StrCat("  tls: {", ServerTls(), "}\n"),
                              "  metrics_tls: true\n"}}));
  auto result =
      RunCommand(ARBITER_BINARY, {"check-config", Path("no-tls.yaml")});
  EXPECT_NE(result.exit_code, 0);
  EXPECT_THAT(result.output, HasSubstr("server.metrics_tls: needs server.tls"));
}

TEST_F(TlsTest, TheCliSpeaksTlsWithTheFilesTheEnvironmentNames) {
  ASSERT_NO_FATAL_FAILURE(Serve(
      Config(absl::StrCat(ServerTls(), ", client_ca_file: ", Path("ca.pem")))));
  auto infer = [&] {
    return RunCommand(ARBITER_BINARY,
                      {"infer", "--target", gateway_->target(), "Hi"});
  };
  auto unset = [] {
    unsetenv("ARBITER_TLS_CA_FILE");
    unsetenv("ARBITER_TLS_CERT_FILE");
    unsetenv("ARBITER_TLS_KEY_FILE");
  };
  unset();
  auto plain = infer();
  EXPECT_NE(plain.exit_code, 0);
  EXPECT_THAT(plain.output, HasSubstr("cannot reach a gateway"));

  setenv("ARBITER_TLS_CA_FILE", Path("ca.pem").c_str(), 1);
  setenv("ARBITER_TLS_CERT_FILE", Path("client.pem").c_str(), 1);
  auto half = infer();
  EXPECT_EQ(half.exit_code, 1);
  EXPECT_THAT(half.output, HasSubstr("go together"));

  setenv("ARBITER_TLS_KEY_FILE", Path("client.key").c_str(), 1);
  auto answered = infer();
  EXPECT_EQ(answered.exit_code, 0) << answered.output;
  EXPECT_THAT(answered.output, HasSubstr("[sim]"));

  setenv("ARBITER_TLS_CA_FILE", Path("missing.pem").c_str(), 1);
  auto missing = infer();
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.output, HasSubstr("$ARBITER_TLS_CA_FILE: cannot read"));
  unset();
}

}  // namespace
}  // namespace arbiter
