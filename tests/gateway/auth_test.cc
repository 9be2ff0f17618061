// API keys, the authenticator, the loopback-only default, the auth section's
// validation, and a tenant's grant in the request pipeline (a gateway built
// in-process from the quickstart config).

#include <future>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gateway/auth/api_key.h"
#include "gateway/auth/authenticator.h"
#include "gateway/auth/exposure.h"
#include "gateway/config.h"
#include "gateway/gateway_host.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"

namespace arbiter {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;
using ::testing::StartsWith;

const absl::Time kNow = absl::FromUnixSeconds(1780000000);

TEST(ApiKeyTest, NewKeysArePrefixedBase64urlOf32RandomBytes) {
  std::set<std::string> keys;
  for (int i = 0; i < 100; ++i) {
    auto key = auth::NewApiKey();
    ASSERT_TRUE(key.ok()) << key.status();
    EXPECT_THAT(*key, StartsWith("ak_"));
    EXPECT_THAT(*key, SizeIs(3 + 43));  // 32 bytes, unpadded.
    EXPECT_EQ(key->find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLM"
                                     "NOPQRSTUVWXYZ0123456789-_",
                                     3),
              std::string::npos)
        << *key;
    keys.insert(*key);
  }
  EXPECT_THAT(keys, SizeIs(100));
}

TEST(ApiKeyTest, HashesWithSha256) {
  EXPECT_EQ(auth::Sha256Hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  auth::KeyDigest digest;
  ASSERT_TRUE(auth::ParseSha256Hex(
      "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
      &digest));
  EXPECT_EQ(digest, auth::Sha256("abc"));
}

TEST(ApiKeyTest, HashesMustBe64HexDigits) {
  auth::KeyDigest digest;
  const std::string valid = auth::Sha256Hex("abc");
  EXPECT_FALSE(auth::ParseSha256Hex("", &digest));
  EXPECT_FALSE(auth::ParseSha256Hex(valid.substr(1), &digest));
  EXPECT_FALSE(auth::ParseSha256Hex(valid + "0", &digest));
  EXPECT_FALSE(auth::ParseSha256Hex(std::string(63, '0') + "g", &digest));
  EXPECT_FALSE(auth::ParseSha256Hex("ak_" + valid.substr(3), &digest));
}

TEST(ApiKeyTest, ReadsBearerTokensOnly) {
  EXPECT_EQ(*auth::BearerToken("Bearer ak_x"), "ak_x");
  EXPECT_EQ(*auth::BearerToken("bearer   ak_x "), "ak_x");
  for (const char* bad :
       {"", "Bearer", "Bearer ", "Basic ak_x", "ak_x", "Bearerak_x"}) {
    auto token = auth::BearerToken(bad);
    EXPECT_EQ(token.status().code(), absl::StatusCode::kUnauthenticated) << bad;
  }
  // The message never holds what was sent.
  EXPECT_THAT(std::string(auth::BearerToken("Basic s3cr3t").status().message()),
              Not(HasSubstr("s3cr3t")));
}

TEST(ApiKeyTest, ParsesLifetimesAndExpiries) {
  absl::Duration lifetime;
  ASSERT_TRUE(auth::ParseLifetime("90d", &lifetime));
  EXPECT_EQ(lifetime, absl::Hours(90 * 24));
  ASSERT_TRUE(auth::ParseLifetime("1h30m", &lifetime));
  EXPECT_EQ(lifetime, absl::Minutes(90));
  EXPECT_FALSE(auth::ParseLifetime("0d", &lifetime));
  EXPECT_FALSE(auth::ParseLifetime("-5h", &lifetime));
  EXPECT_FALSE(auth::ParseLifetime("soon", &lifetime));
  absl::Time expiry;
  ASSERT_TRUE(auth::ParseExpiry("2027-06-01T00:00:00Z", &expiry));
  EXPECT_EQ(expiry, absl::FromCivil(absl::CivilSecond(2027, 6, 1, 0, 0, 0),
                                    absl::UTCTimeZone()));
  EXPECT_FALSE(auth::ParseExpiry("2027-06-01", &expiry));
}

// Routes prompted, fine-tuned, rag; tasks faq, billing; tenant acme (key
// "acme-key", prompted and rag, faq, collection docs, expiring at kNow),
// tenant beta ("beta-key", everything) and an admin ("admin-key").
v1::Config AuthConfig() {
  v1::Config config;
  for (const char* route : {"prompted", "fine-tuned", "rag"}) {
    config.add_routes()->set_name(route);
  }
  config.add_tasks("faq");
  config.add_tasks("billing");
  v1::Auth& auth = *config.mutable_auth();
  auth.set_mode(v1::AUTH_MODE_KEYS);
  v1::Tenant& acme = *auth.add_tenants();
  acme.set_name("acme");
  v1::ApiKey& acme_key = *acme.add_keys();
  acme_key.set_sha256(auth::Sha256Hex("acme-key"));
  acme_key.set_label("laptop");
  acme_key.set_expires(
      absl::FormatTime(absl::RFC3339_full, kNow, absl::UTCTimeZone()));
  acme.add_allowed_routes("prompted");
  acme.add_allowed_routes("rag");
  acme.add_allowed_tasks("faq");
  acme.add_allowed_collections("docs");
  v1::Tenant& beta = *auth.add_tenants();
  beta.set_name("beta");
  beta.add_keys()->set_sha256(auth::Sha256Hex("beta-key"));
  auth.add_admin_keys()->set_sha256(auth::Sha256Hex("admin-key"));
  return config;
}

TEST(AuthenticatorTest, WithAuthOffEveryoneMayDoEverything) {
  v1::Config config = AuthConfig();
  config.clear_auth();
  for (int mode_none = 0; mode_none < 2; ++mode_none) {
    if (mode_none == 1) config.mutable_auth()->set_mode(v1::AUTH_MODE_NONE);
    const auth::Authenticator authenticator(config);
    EXPECT_FALSE(authenticator.enabled());
    for (auto header : {std::optional<absl::string_view>(),
                        std::optional<absl::string_view>("Bearer junk")}) {
      auto caller = authenticator.Identify(header, kNow);
      ASSERT_TRUE(caller.ok()) << caller.status();
      EXPECT_EQ(caller->role, auth::Role::kAnyone);
      EXPECT_TRUE(auth::RequireAdmin(*caller, "Admin.ReloadConfig").ok());
      EXPECT_TRUE(auth::MaySearch(*caller, "hr").ok());
      EXPECT_EQ(auth::TenantName(*caller), "");
    }
  }
}

TEST(AuthenticatorTest, MissingMalformedAndUnknownKeysAreUnauthenticated) {
  const auth::Authenticator authenticator(AuthConfig());
  ASSERT_TRUE(authenticator.enabled());
  for (auto header : {std::optional<absl::string_view>(),
                      std::optional<absl::string_view>("Basic YWJj"),
                      std::optional<absl::string_view>("Bearer acme-kez"),
                      std::optional<absl::string_view>("Bearer ")}) {
    auto caller = authenticator.Identify(header, kNow - absl::Seconds(1));
    EXPECT_EQ(caller.status().code(), absl::StatusCode::kUnauthenticated)
        << header.value_or("(none)");
  }
  EXPECT_EQ(authenticator.Identify("Bearer nope", kNow).status().message(),
            "unknown API key");
}

TEST(AuthenticatorTest, AKeyWorksUntilItExpires) {
  const auth::Authenticator authenticator(AuthConfig());
  auto before =
      authenticator.Identify("Bearer acme-key", kNow - absl::Seconds(1));
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->role, auth::Role::kTenant);
  EXPECT_EQ(auth::TenantName(*before), "acme");
  auto at = authenticator.Identify("Bearer acme-key", kNow);
  EXPECT_EQ(at.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(at.status().message()),
              HasSubstr("tenant acme, label laptop) expired at"));
  EXPECT_THAT(std::string(at.status().message()), Not(HasSubstr("acme-key")));
}

TEST(AuthenticatorTest, TenantsAreHeldToTheirGrantAndAdminsAreNot) {
  const auth::Authenticator authenticator(AuthConfig());
  const absl::Time earlier = kNow - absl::Hours(1);
  auto acme = authenticator.Identify("Bearer acme-key", earlier);
  ASSERT_TRUE(acme.ok());
  EXPECT_THAT(acme->tenant->routes, ElementsAre(true, false, true));
  EXPECT_THAT(acme->tenant->tasks, ElementsAre(true, false));
  EXPECT_EQ(acme->tenant->RouteDenied("fine-tuned").message(),
            "tenant acme may not use route fine-tuned");
  EXPECT_TRUE(auth::MaySearch(*acme, "docs").ok());
  const absl::Status hr = auth::MaySearch(*acme, "hr");
  EXPECT_EQ(hr.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(hr.message(), "tenant acme may not search collection hr");
  const absl::Status reload = auth::RequireAdmin(*acme, "Admin.ReloadConfig");
  EXPECT_EQ(reload.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(reload.message()),
              StartsWith("admin key required for Admin.ReloadConfig"));

  auto beta = authenticator.Identify("Bearer beta-key", earlier);
  ASSERT_TRUE(beta.ok());
  EXPECT_THAT(beta->tenant->routes, ElementsAre(true, true, true));
  EXPECT_THAT(beta->tenant->tasks, ElementsAre(true, true));
  EXPECT_TRUE(auth::MaySearch(*beta, "hr").ok());
  EXPECT_FALSE(auth::RequireAdmin(*beta, "Retrieval.Upsert").ok());

  auto admin = authenticator.Identify("Bearer admin-key", earlier);
  ASSERT_TRUE(admin.ok());
  EXPECT_EQ(admin->role, auth::Role::kAdmin);
  EXPECT_EQ(admin->tenant, nullptr);
  EXPECT_TRUE(auth::RequireAdmin(*admin, "Retrieval.Upsert").ok());
  EXPECT_TRUE(auth::MaySearch(*admin, "hr").ok());
  EXPECT_EQ(auth::TenantName(*admin), "");
}

TEST(AuthenticatorTest, ATenantMayHoldSeveralKeysForRotation) {
  v1::Config config = AuthConfig();
  config.mutable_auth()->mutable_tenants(1)->add_keys()->set_sha256(
      absl::AsciiStrToUpper(auth::Sha256Hex("beta-key-2")));
  const auth::Authenticator authenticator(config);
  for (const char* key : {"Bearer beta-key", "Bearer beta-key-2"}) {
    auto caller = authenticator.Identify(key, kNow);
    ASSERT_TRUE(caller.ok()) << key;
    EXPECT_EQ(auth::TenantName(*caller), "beta");
  }
}

TEST(ExposureTest, KnowsLoopbackHosts) {
  for (const char* host :
       {"127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"}) {
    EXPECT_TRUE(auth::IsLoopbackHost(host)) << host;
  }
  for (const char* host : {"0.0.0.0", "10.0.0.1", "[::]", "::", "example.com",
                           "127.0.0.1.example.com", ""}) {
    EXPECT_FALSE(auth::IsLoopbackHost(host)) << host;
  }
}

TEST(ExposureTest, WithoutAuthOnlyLoopbackListensAndModeNoneWarns) {
  v1::Config config;
  config.mutable_server()->set_grpc_listen("127.0.0.1:50051");
  config.mutable_server()->set_http_listen("off");
  EXPECT_TRUE(auth::CheckExposure(config).ok());
  config.mutable_server()->set_http_listen("0.0.0.0:8080");
  const absl::Status refused = auth::CheckExposure(config);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.message()),
              HasSubstr("server.http_listen 0.0.0.0:8080"));
  EXPECT_THAT(std::string(refused.message()), HasSubstr("auth: {mode: none}"));
  EXPECT_EQ(auth::OpenAccessWarning(config), "");
  config.mutable_auth()->set_mode(v1::AUTH_MODE_NONE);
  EXPECT_TRUE(auth::CheckExposure(config).ok());
  EXPECT_THAT(auth::OpenAccessWarning(config), StartsWith("warning:"));
  config.mutable_auth()->set_mode(v1::AUTH_MODE_KEYS);
  EXPECT_TRUE(auth::CheckExposure(config).ok());
  EXPECT_EQ(auth::OpenAccessWarning(config), "");
}

constexpr char kConfig[] = R"yaml(
tasks: [faq, billing]
backends:
  - name: sim
    sim: {dataset: q.jsonl}
routes:
  - {name: prompted, kind: prompted, backend: sim, model: m}
  - {name: fine-tuned, kind: fine_tuned, backend: sim, model: m}
policy:
  pinned: {route: prompted}
)yaml";

std::vector<std::string> AuthErrors(const std::string& auth) {
  auto config = ParseConfigYaml(absl::StrCat(kConfig, auth));
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok()) return {"(does not parse)"};
  return ValidateConfig(*config);
}

std::string Hash(const std::string& key) { return auth::Sha256Hex(key); }

TEST(AuthConfigTest, AValidSectionHasNoErrorsAndDefaultsToKeys) {
  const std::string yaml = absl::StrCat(
      R"yaml(auth:
  tenants:
    - name: acme
      keys: [{sha256: )yaml",
      Hash("a"), R"yaml(, label: laptop, expires: 2027-06-01T00:00:00Z}]
      allowed_routes: [prompted]
      allowed_tasks: [faq]
      allowed_collections: [docs]
  admin_keys: [{sha256: )yaml",
      Hash("b"), "}]\n");
  EXPECT_THAT(AuthErrors(yaml), IsEmpty());
  auto loaded = LoadConfigText(absl::StrCat(kConfig, yaml), "test", nullptr);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->config.auth().mode(), v1::AUTH_MODE_KEYS);
  EXPECT_THAT(DescribeConfig(*loaded),
              HasSubstr("auth: keys, tenants acme, 1 admin key(s)"));
}

TEST(AuthConfigTest, ErrorsNameTheFieldAndPosition) {
  const std::string yaml = absl::StrCat(R"yaml(auth:
  mode: keys
  tenants:
    - name: acme
      keys: [{sha256: )yaml",
                                        Hash("a"), R"yaml(}]
    - name: beta
      keys:
        - {sha256: not-hex}
        - {sha256: )yaml",
                                        Hash("a"), R"yaml(, expires: tomorrow}
      allowed_routes: [prompted, rga]
      allowed_tasks: [refunds]
      allowed_collections: ["h r"]
    - name: acme
  admin_keys: [{sha256: ""}]
)yaml");
  const std::vector<std::string> errors = AuthErrors(yaml);
  EXPECT_THAT(errors,
              Contains(StartsWith(
                  "auth.tenants[1].keys[0].sha256: not 64 hex digits")));
  EXPECT_THAT(errors,
              Contains("auth.tenants[1].keys[1].sha256: duplicate key (first "
                       "at auth.tenants[0].keys[0])"));
  EXPECT_THAT(errors, Contains(StartsWith("auth.tenants[1].keys[1].expires: "
                                          "must be an RFC 3339 time")));
  EXPECT_THAT(errors, Contains("auth.tenants[1].allowed_routes[1]: unknown "
                               "route \"rga\""));
  EXPECT_THAT(errors, Contains("auth.tenants[1].allowed_tasks[0]: unknown "
                               "task \"refunds\""));
  EXPECT_THAT(
      errors,
      Contains(StartsWith("auth.tenants[1].allowed_collections[0]: must be")));
  EXPECT_THAT(errors,
              Contains("auth.tenants[2].name: duplicate tenant \"acme\""));
  EXPECT_THAT(errors, Contains(StartsWith("auth.admin_keys[0].sha256: must be "
                                          "set")));
}

TEST(AuthConfigTest, KeysModeNeedsAKeyAndModeNoneNone) {
  EXPECT_THAT(AuthErrors("auth: {mode: keys}\n"),
              ElementsAre(StartsWith("auth: mode keys needs at least one")));
  EXPECT_THAT(AuthErrors("auth: {mode: none}\n"), IsEmpty());
  EXPECT_THAT(
      AuthErrors(absl::StrCat(
          "auth: {mode: none, admin_keys: [{sha256: ", Hash("a"), "}]}\n")),
      ElementsAre(StartsWith("auth.mode: none checks no keys")));
  auto bad_mode =
      ParseConfigYaml(absl::StrCat(kConfig, "auth: {mode: open}\n"));
  EXPECT_THAT(std::string(bad_mode.status().message()),
              HasSubstr("expected keys or none"));
}

// A tenant's grant in the pipeline: the quickstart config (routes prompted,
// fine-tuned, rag; a cheapest-meeting-accuracy policy) with tenant acme
// allowed fine-tuned alone and task faq.
class TenantPipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto loaded = LoadEmbeddedConfig();
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    loaded->config.mutable_state()->clear_path();
    v1::Auth& auth = *loaded->config.mutable_auth();
    auth.set_mode(v1::AUTH_MODE_KEYS);
    v1::Tenant& acme = *auth.add_tenants();
    acme.set_name("acme");
    acme.add_keys()->set_sha256(auth::Sha256Hex("acme-key"));
    acme.add_allowed_routes("fine-tuned");
    acme.add_allowed_tasks("faq");
    acme.add_allowed_tasks("troubleshooting");
    v1::Tenant& beta = *auth.add_tenants();
    beta.set_name("beta");
    beta.add_keys()->set_sha256(auth::Sha256Hex("beta-key"));
    ASSERT_THAT(ValidateConfig(loaded->config), IsEmpty());
    auto host = GatewayHost::Create(*std::move(loaded), registry_, nullptr);
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = *std::move(host);
    gateway_ = host_->Current();
  }

  const auth::TenantGrant* Tenant(const std::string& key) const {
    auto caller = gateway_->authenticator().Identify(
        absl::StrCat("Bearer ", key), absl::Now());
    EXPECT_TRUE(caller.ok()) << caller.status();
    return caller.ok() ? caller->tenant : nullptr;
  }

  absl::Status Infer(const auth::TenantGrant* tenant, const std::string& route,
                     const std::string& task, v1::InferResponse* response) {
    v1::InferRequest request;
    v1::ChatMessage* message = request.add_messages();
    message->set_role(v1::ROLE_USER);
    message->set_content("How do I reset my password?");
    request.set_route(route);
    request.set_task(task);
    std::promise<absl::Status> done;
    InferWhole(
        gateway_->pipeline(), request, absl::Now() + absl::Seconds(30),
        response, [&](absl::Status status) { done.set_value(status); }, tenant);
    return done.get_future().get();
  }

  prometheus::Registry registry_;
  std::unique_ptr<GatewayHost> host_;
  std::shared_ptr<Gateway> gateway_;
};

TEST_F(TenantPipelineTest, ThePolicyChoosesOnlyAmongTheTenantsRoutes) {
  const auth::TenantGrant* acme = Tenant("acme-key");
  ASSERT_NE(acme, nullptr);
  // troubleshooting runs the prompt-vs-rag experiment, whose arms pin routes
  // acme may not use: it stays out of it.
  for (const char* task : {"faq", "troubleshooting"}) {
    for (int i = 0; i < 10; ++i) {
      v1::InferResponse response;
      const absl::Status status = Infer(acme, "", task, &response);
      ASSERT_TRUE(status.ok()) << status;
      EXPECT_EQ(response.route(), "fine-tuned");
      EXPECT_EQ(response.decision().experiment(), "");
      EXPECT_THAT(response.request_id(), StartsWith("arb3_"));
    }
  }
  // A tenant without limits may pin any route.
  for (const char* route : {"prompted", "fine-tuned", "rag"}) {
    v1::InferResponse response;
    ASSERT_TRUE(Infer(Tenant("beta-key"), route, "billing", &response).ok());
    EXPECT_EQ(response.route(), route);
  }
}

TEST_F(TenantPipelineTest, APinOrTaskOutsideTheGrantIsPermissionDenied) {
  const auth::TenantGrant* acme = Tenant("acme-key");
  v1::InferResponse response;
  absl::Status status = Infer(acme, "prompted", "", &response);
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(status.message(), "tenant acme may not use route prompted");
  status = Infer(acme, "", "billing", &response);
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(status.message(), "tenant acme may not use task billing");
  EXPECT_TRUE(Infer(acme, "fine-tuned", "faq", &response).ok());
  EXPECT_TRUE(Infer(nullptr, "prompted", "billing", &response).ok());
}

TEST_F(TenantPipelineTest, FeedbackIsTheRequestingTenantsOnly) {
  v1::InferResponse acme_answer, open_answer;
  ASSERT_TRUE(Infer(Tenant("acme-key"), "", "faq", &acme_answer).ok());
  ASSERT_TRUE(Infer(nullptr, "", "faq", &open_answer).ok());
  EXPECT_THAT(open_answer.request_id(), StartsWith("arb2_"));
  v1::FeedbackRequest request;
  request.set_correct(true);
  request.set_request_id(acme_answer.request_id());
  auto refused = gateway_->feedback().Record(request, "beta");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("tenant beta may not give feedback on this request"));
  request.set_request_id(open_answer.request_id());
  EXPECT_EQ(gateway_->feedback().Record(request, "acme").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(gateway_->feedback().Record(request).ok());  // An admin's.
  request.set_request_id(acme_answer.request_id());
  EXPECT_TRUE(gateway_->feedback().Record(request, "acme").ok());
}

}  // namespace
}  // namespace arbiter
