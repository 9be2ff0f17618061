// Signed request ids against real `arbiter serve` processes: feedback is
// credited only for ids this deployment issued (whichever replica issued
// them, whichever of its keys signed them), within the feedback window.

#include <httplib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "policy/hash.h"
#include "tests/integration/subprocess.h"

namespace arbiter {
namespace {

using ::arbiter::testing::ServingGateway;
using ::arbiter::testing::StartServe;
using ::arbiter::testing::Subprocess;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

const std::string kOldKey = "old-key-0123456789abcdefghijklmnopqrstuvwxyz";
const std::string kNewKey = "new-key-ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210";
const std::string kOtherKey = "another-deployment-key-0123456789abcdefghij";

class RequestIdTest : public ::testing::Test {
 protected:
  void TearDown() override {
    channels_.clear();
    gateways_.clear();
    std::error_code ignored;
    for (const auto& path : cleanup_) std::filesystem::remove(path, ignored);
  }

  std::string TempPath(const std::string& what) {
    const std::string path = (std::filesystem::temp_directory_path() /
                              absl::StrCat("arbiter-request-id-", getpid(), "-",
                                           cleanup_.size(), "-", what))
                                 .string();
    cleanup_.push_back(path);
    return path;
  }

  std::string KeyFile(const std::vector<std::string>& keys) {
    const std::string path = TempPath("keys");
    std::ofstream(path) << "# the first key signs\n"
                        << absl::StrJoin(keys, "\n") << "\n";
    chmod(path.c_str(), 0600);
    return path;
  }

  // A gateway over an in-process sim backend that answers at once, its
  // ids signed with the keys of `key_file`.
  std::string Config(const std::string& key_file,
                     const std::string& server = "") {
    return absl::StrCat(R"yaml(
tasks: [faq]
backends:
  - name: sim
    sim:
      seed: 7
      time_to_first_token_seconds: 0
      seconds_per_token: 0
      output_tokens: 8
      dataset: )yaml",
                        ARBITER_SOURCE_DIR, R"yaml(/quickstart/questions.jsonl
      models: [{name: quill-large, accuracy: 0.7}]
routes:
  - {name: prompted, kind: prompted, backend: sim, model: quill-large}
policy:
  pinned: {route: prompted}
server:
  request_id_key_file: )yaml",
                        key_file, "\n", server);
  }

  // Starts a gateway; its index in gateways_.
  int Start(const std::string& yaml) {
    const std::string path = TempPath("config.yaml");
    std::ofstream(path) << yaml;
    auto gateway = StartServe(ARBITER_BINARY, {"--config", path});
    EXPECT_TRUE(gateway.ok()) << gateway.status();
    if (!gateway.ok()) return -1;
    gateways_.push_back(*std::move(gateway));
    channels_.push_back(grpc::CreateChannel(
        gateways_.back().target(), grpc::InsecureChannelCredentials()));
    return static_cast<int>(gateways_.size()) - 1;
  }

  static std::unique_ptr<grpc::ClientContext> Context() {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    return context;
  }

  // The id of a request answered by `gateway`.
  std::string Serve(int gateway) {
    v1::InferRequest request;
    v1::ChatMessage* message = request.add_messages();
    message->set_role(v1::ROLE_USER);
    message->set_content("How do I reset my password?");
    v1::InferResponse response;
    grpc::Status status = v1::Gateway::NewStub(channels_[gateway])
                              ->Infer(Context().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.request_id();
  }

  grpc::Status Feedback(int gateway, const std::string& id) {
    v1::FeedbackRequest request;
    request.set_request_id(id);
    request.set_correct(false);
    v1::FeedbackResponse response;
    return v1::Gateway::NewStub(channels_[gateway])
        ->Feedback(Context().get(), request, &response);
  }

  // Judged answers in `gateway`'s statistics, once they show `want` (or
  // whatever they show after a few seconds).
  int64_t FeedbackCount(int gateway, int64_t want) {
    int64_t count = -1;
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (absl::Now() < deadline) {
      v1::GetRouteStatsResponse stats;
      grpc::Status status =
          v1::Admin::NewStub(channels_[gateway])
              ->GetRouteStats(Context().get(), v1::GetRouteStatsRequest(),
                              &stats);
      if (!status.ok()) return -1;
      count = 0;
      for (const v1::RouteTaskStats& cell : stats.stats()) {
        count += cell.feedback_count();
      }
      if (count == want) break;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return count;
  }

  std::string Metrics(int gateway) {
    httplib::Client client("127.0.0.1", gateways_[gateway].metrics_port);
    auto result = client.Get("/metrics");
    return result ? result->body : "";
  }

  std::vector<ServingGateway> gateways_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::string> cleanup_;
};

std::string Bytes(const std::string& id) {
  std::string bytes;
  EXPECT_TRUE(absl::WebSafeBase64Unescape(id.substr(5), &bytes)) << id;
  return bytes;
}

// An id of the former, unkeyed scheme, for a route and task that exist.
std::string OldSchemeId() {
  const std::string payload = "prompted|faq|1764350000123|1f";
  const uint32_t check = static_cast<uint32_t>(
      policy::StableHash64(payload, 0x6172626974657231ull));
  return absl::StrCat("arb1_", absl::WebSafeBase64Escape(absl::StrCat(
                                   payload, "|", absl::Hex(check))));
}

void ExpectNotIssuedHere(const grpc::Status& status, const std::string& what) {
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << what;
  EXPECT_THAT(status.error_message(),
              HasSubstr("was not issued by this deployment"))
      << what;
}

TEST_F(RequestIdTest, CreditsItsOwnIdsAndRefusesForgedOnes) {
  const int gateway = Start(Config(KeyFile({kNewKey})));
  const int other = Start(Config(KeyFile({kOtherKey})));
  ASSERT_GE(other, 0);
  const std::string id = Serve(gateway);
  ASSERT_THAT(id, StartsWith("arb2_"));

  std::string altered = id;
  altered[id.size() / 2] = altered[id.size() / 2] == 'A' ? 'B' : 'A';
  const std::string bytes = Bytes(id);
  const std::vector<std::pair<std::string, std::string>> forged = {
      {"an altered character", altered},
      {"another key's id", Serve(other)},
      {"the old unkeyed scheme", OldSchemeId()},
      {"a MAC short of a byte",
       absl::StrCat("arb2_", absl::WebSafeBase64Escape(
                                 bytes.substr(0, bytes.size() - 1)))},
      {"a MAC of 8 bytes",
       absl::StrCat("arb2_", absl::WebSafeBase64Escape(
                                 bytes.substr(0, bytes.size() - 8)))}};
  for (const auto& [what, forgery] : forged) {
    ExpectNotIssuedHere(Feedback(gateway, forgery), what);
  }
  // None of them counted: the one real feedback is all there is.
  EXPECT_EQ(FeedbackCount(gateway, 0), 0);
  grpc::Status accepted = Feedback(gateway, id);
  ASSERT_TRUE(accepted.ok()) << accepted.error_message();
  EXPECT_EQ(FeedbackCount(gateway, 1), 1);
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(FeedbackCount(gateway, 1), 1);
  EXPECT_THAT(Metrics(gateway),
              HasSubstr("arbiter_feedback_rejected_total{reason=\"not_issued_"
                        "here\"} 5"));
  EXPECT_THAT(gateways_[gateway].process->Output(),
              HasSubstr("request ids: HMAC-SHA-256 with 1 key from file"));
}

TEST_F(RequestIdTest, RotatedGatewayCreditsIdsSignedWithTheOldKey) {
  const int before = Start(Config(KeyFile({kOldKey})));
  const int after = Start(Config(KeyFile({kNewKey, kOldKey})));
  ASSERT_GE(after, 0);
  const std::string old_id = Serve(before);
  grpc::Status accepted = Feedback(after, old_id);
  ASSERT_TRUE(accepted.ok()) << accepted.error_message();
  EXPECT_EQ(FeedbackCount(after, 1), 1);
  // Its new ids are signed with the new key, which the gateway that has not
  // rotated yet does not hold.
  ExpectNotIssuedHere(Feedback(before, Serve(after)), "new key's id");
  // Once the old key is dropped, its ids are not credited.
  const int dropped = Start(Config(KeyFile({kNewKey})));
  ASSERT_GE(dropped, 0);
  ExpectNotIssuedHere(Feedback(dropped, Serve(before)), "dropped key's id");
}

TEST_F(RequestIdTest, ReplicasSharingAKeyFileCreditEachOthersIds) {
  const std::string keys = KeyFile({kNewKey, kOldKey});
  const int first = Start(Config(keys));
  const int second = Start(Config(keys));
  ASSERT_GE(second, 0);
  for (auto [issuer, judge] : {std::pair{first, second}, {second, first}}) {
    grpc::Status accepted = Feedback(judge, Serve(issuer));
    ASSERT_TRUE(accepted.ok()) << accepted.error_message();
    EXPECT_EQ(FeedbackCount(judge, 1), 1);
  }
  // A gateway of another deployment, with the same routes and tasks but its
  // own key, credits neither's.
  const int elsewhere = Start(Config(KeyFile({kOtherKey})));
  ASSERT_GE(elsewhere, 0);
  ExpectNotIssuedHere(Feedback(elsewhere, Serve(first)), "another deployment");
  EXPECT_EQ(FeedbackCount(elsewhere, 0), 0);
}

TEST_F(RequestIdTest, FeedbackAfterTheWindowIsFailedPrecondition) {
  // 0.0005 hours: 1.8 seconds.
  const int gateway =
      Start(Config(KeyFile({kNewKey}), "  feedback_window_hours: 0.0005\n"));
  ASSERT_GE(gateway, 0);
  const std::string on_time = Serve(gateway);
  const std::string late = Serve(gateway);
  grpc::Status accepted = Feedback(gateway, on_time);
  ASSERT_TRUE(accepted.ok()) << accepted.error_message();
  absl::SleepFor(absl::Seconds(2.5));
  grpc::Status refused = Feedback(gateway, late);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(refused.error_message(),
              HasSubstr("ago; feedback is accepted for 0.0005 hours "
                        "(server.feedback_window_hours)"));
  EXPECT_EQ(FeedbackCount(gateway, 1), 1);
  EXPECT_THAT(Metrics(gateway),
              HasSubstr("arbiter_feedback_rejected_total{reason=\"expired\"} "
                        "1"));
}

TEST_F(RequestIdTest, ShortKeyIsRefusedByCheckConfigAndServeWithoutShowingIt) {
  const std::string keys = KeyFile({kNewKey, "short-but-secret"});
  const std::string path = TempPath("config.yaml");
  std::ofstream(path) << Config(keys);
  for (const char* command : {"check-config", "serve"}) {
    std::vector<std::string> argv = {ARBITER_BINARY, command};
    if (std::string(command) == "serve") {
      argv.insert(argv.end(), {"--grpc-listen", "127.0.0.1:0",
                               "--metrics-listen", "127.0.0.1:0", "--config"});
    }
    argv.push_back(path);
    auto run = Subprocess::Start(argv);
    ASSERT_TRUE(run.ok()) << run.status();
    // A serve that took the key would listen; one that refused it exits.
    const bool listening =
        (*run)->WaitForLine("grpc listening on ", absl::Seconds(30)).ok();
    EXPECT_FALSE(listening) << command;
    EXPECT_NE(listening ? (*run)->Stop() : (*run)->Wait(), 0) << command;
    const std::string output = (*run)->Output();
    EXPECT_THAT(output, HasSubstr(absl::StrCat("server.request_id_key_file: \"",
                                               keys, "\" line 3")))
        << command;
    EXPECT_THAT(output, Not(HasSubstr("short-but-secret"))) << command;
    EXPECT_THAT(output, Not(HasSubstr(kNewKey))) << command;
  }
}

}  // namespace
}  // namespace arbiter
