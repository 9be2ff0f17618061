// The monitoring stack for real: the gateway on the quickstart config serves
// labeled traffic with feedback, a real Prometheus (Debian's `prometheus`)
// scrapes it with deploy/prometheus's rules, and every expression of the
// Grafana dashboard and of the recording rules is evaluated through
// Prometheus's HTTP API and must return data. The cost and break-even
// figures Prometheus holds must match the gateway's own Admin API.

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/subprocess.h"
#include "yaml-cpp/yaml.h"

namespace arbiter {
namespace {

using ::arbiter::testing::FreePort;
using ::arbiter::testing::StartServe;
using ::arbiter::testing::Subprocess;
using nlohmann::json;

const std::string kDeploy = ARBITER_SOURCE_DIR "/deploy";

// Every "expr" in a Grafana dashboard, however deeply its panels nest.
void CollectExprs(const json& node, const std::string& where,
                  std::vector<std::pair<std::string, std::string>>& out) {
  if (node.is_object()) {
    if (node.contains("expr") && node["expr"].is_string()) {
      out.emplace_back(where, node["expr"].get<std::string>());
    }
    const std::string title = node.value("title", "");
    for (const auto& [key, value] : node.items()) {
      CollectExprs(value, title.empty() ? where : title, out);
    }
  } else if (node.is_array()) {
    for (const json& item : node) CollectExprs(item, where, out);
  }
}

// Dashboard variables become "match anything"; the rate interval one that
// covers several scrapes at this test's 1 s interval.
std::string Concrete(const std::string& expr) {
  return absl::StrReplaceAll(expr, {{"$__rate_interval", "1m"},
                                    {"${route}", ".*"},
                                    {"${task}", ".*"},
                                    {"$route", ".*"},
                                    {"$task", ".*"}});
}

class MonitoringTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!HasPrometheus()) return;  // SetUp says what that means.
    dir_ = new std::string(std::filesystem::temp_directory_path() /
                           absl::StrCat("arbiter-monitoring-", getpid()));
    std::filesystem::remove_all(*dir_);
    std::filesystem::create_directories(*dir_);

    auto gateway = StartServe(ARBITER_BINARY, {"--no-state"});
    if (!gateway.ok())
      return ::arbiter::testing::SuiteSetupFailed(gateway.status());
    gateway_ = gateway->process.release();
    grpc_port_ = gateway->grpc_port;
    const std::string metrics_address =
        absl::StrCat("127.0.0.1:", gateway->metrics_port);

    // Scrape and evaluate every second so the test need not wait long.
    prometheus_port_ = FreePort();
    const std::string config = absl::StrCat(*dir_, "/prometheus.yml");
    std::ofstream(config) << absl::StrCat(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: ['",
        kDeploy, "/prometheus/rules/*.yml']\n",
        "scrape_configs:\n"
        "  - job_name: arbiter\n"
        "    static_configs: [{targets: ['",
        metrics_address, "']}]\n");
    auto prometheus = Subprocess::Start(
        {"prometheus", "--config.file=" + config,
         "--storage.tsdb.path=" + *dir_ + "/data",
         absl::StrCat("--web.listen-address=127.0.0.1:", prometheus_port_),
         "--log.level=warn"});
    if (!prometheus.ok())
      return ::arbiter::testing::SuiteSetupFailed(prometheus.status());
    prometheus_ = prometheus->release();

    // Labeled traffic with feedback, over every task and route.
    auto load = Subprocess::Start({ARBITER_BINARY, "loadgen", "--target",
                                   absl::StrCat("127.0.0.1:", grpc_port_),
                                   "--qps", "60", "--duration", "12s",
                                   "--feedback", "--units", "50"});
    if (!load.ok()) return ::arbiter::testing::SuiteSetupFailed(load.status());
    if ((*load)->Wait() != 0) {
      return ::arbiter::testing::SuiteSetupFailed(
          absl::InternalError("loadgen failed: " + (*load)->Output()));
    }
    // Let Prometheus take a few scrapes after the last request, so its
    // latest samples hold the final request costs.
    std::this_thread::sleep_for(std::chrono::seconds(4));
  }

  static void TearDownTestSuite() {
    delete prometheus_;
    delete gateway_;
    if (dir_ != nullptr) std::filesystem::remove_all(*dir_);
    delete dir_;
  }

  void SetUp() override {
    if (!HasPrometheus()) {
      if (std::getenv("CI") != nullptr) {
        FAIL() << "prometheus is not installed; CI must install it";
      }
      GTEST_SKIP() << "prometheus not installed (Debian package prometheus)";
    }
    ASSERT_TRUE(::arbiter::testing::SuiteSetupStatus().ok())
        << ::arbiter::testing::SuiteSetupStatus();
    ASSERT_NE(prometheus_, nullptr) << "the servers did not start";
  }

  static bool HasPrometheus() {
    return std::system("command -v prometheus >/dev/null 2>&1") == 0;
  }

  // The result vector of an instant query; an error names the expression.
  static absl::StatusOr<json> Query(const std::string& expr) {
    httplib::Client client("127.0.0.1", prometheus_port_);
    client.set_read_timeout(10);
    auto result =
        client.Get("/api/v1/query", httplib::Params{{"query", expr}}, {});
    if (!result) return absl::UnavailableError("prometheus is not answering");
    json body = json::parse(result->body, nullptr, false);
    if (body.is_discarded() || body.value("status", "") != "success") {
      return absl::InvalidArgumentError(
          absl::StrCat("query failed: ", result->body));
    }
    return body["data"]["result"];
  }

  // Waits until the expression returns data (rules need a few evaluations).
  static json QueryWithData(const std::string& expr) {
    json last;
    for (int i = 0; i < 20; ++i) {
      auto result = Query(expr);
      if (result.ok() && !result->empty()) return *result;
      if (!result.ok()) ADD_FAILURE() << expr << ": " << result.status();
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    return json::array();
  }

  // The value of a single-series result.
  static double ValueOf(const json& result, const std::string& label,
                        const std::string& value) {
    for (const json& series : result) {
      if (series["metric"].value(label, "") == value) {
        return std::stod(series["value"][1].get<std::string>());
      }
    }
    return -1;
  }

  static v1::GetEconomicsResponse Economics() {
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", grpc_port_),
                                       grpc::InsecureChannelCredentials());
    grpc::ClientContext context;
    v1::GetEconomicsResponse response;
    grpc::Status status = v1::Admin::NewStub(channel)->GetEconomics(
        &context, v1::GetEconomicsRequest(), &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  static inline std::string* dir_ = nullptr;
  static inline Subprocess* gateway_ = nullptr;
  static inline Subprocess* prometheus_ = nullptr;
  static inline int grpc_port_ = 0;
  static inline int prometheus_port_ = 0;
};

TEST_F(MonitoringTest, EveryDashboardExpressionReturnsData) {
  std::ifstream file(kDeploy +
                     "/grafana/dashboards/arbiter-unit-economics.json");
  ASSERT_TRUE(file.good());
  json dashboard = json::parse(file, nullptr, false);
  ASSERT_FALSE(dashboard.is_discarded()) << "the dashboard is not JSON";
  std::vector<std::pair<std::string, std::string>> exprs;
  CollectExprs(dashboard["panels"], "", exprs);
  ASSERT_GE(exprs.size(), 10u);
  for (const auto& [panel, expr] : exprs) {
    EXPECT_FALSE(QueryWithData(Concrete(expr)).empty())
        << "panel \"" << panel << "\": no data for " << Concrete(expr);
  }
}

TEST_F(MonitoringTest, EveryRecordingRuleReturnsData) {
  int rules = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(kDeploy + "/prometheus/rules")) {
    YAML::Node file = YAML::LoadFile(entry.path().string());
    for (const YAML::Node& group : file["groups"]) {
      for (const YAML::Node& rule : group["rules"]) {
        if (!rule["record"]) continue;
        ++rules;
        const std::string name = rule["record"].as<std::string>();
        const std::string expr = rule["expr"].as<std::string>();
        EXPECT_FALSE(QueryWithData(expr).empty())
            << "recording rule " << name << ": no data for " << expr;
        // And Prometheus itself has been recording it.
        EXPECT_FALSE(QueryWithData(name).empty())
            << "recording rule " << name << " has no recorded series";
      }
    }
  }
  EXPECT_GE(rules, 10);
}

TEST_F(MonitoringTest, PrometheusAgreesWithTheAdminApi) {
  const v1::GetEconomicsResponse economics = Economics();
  const json costs = QueryWithData("sum by (route) (arbiter_cost_usd_total)");
  const json requests =
      QueryWithData("sum by (route) (arbiter_requests_total{outcome=\"ok\"})");
  const json per_correct = QueryWithData(
      "arbiter_route_cost_per_correct_answer_usd{window=\"all\"}");
  int checked = 0;
  for (const v1::RouteEconomics& route : economics.routes()) {
    if (route.requests() == 0) continue;
    ++checked;
    // Request costs stopped moving with the traffic: equal to rounding.
    EXPECT_NEAR(ValueOf(costs, "route", route.route()),
                route.request_cost().total_usd(), 1e-9)
        << route.route();
    EXPECT_EQ(ValueOf(requests, "route", route.route()), route.requests())
        << route.route();
    // Hosting keeps accruing between the scrape and this call: a few
    // seconds' worth at most.
    ASSERT_TRUE(route.has_cost_per_correct_usd()) << route.route();
    const double drift =
        route.hosting_usd() / economics.uptime_seconds() * 5 / route.correct();
    EXPECT_NEAR(ValueOf(per_correct, "route", route.route()),
                route.cost_per_correct_usd(), drift + 1e-9)
        << route.route();
    if (!route.has_breakeven()) continue;
    const v1::BreakEven& be = route.breakeven();
    const json recovered = QueryWithData(absl::StrCat(
        "arbiter_breakeven_recovered_ratio{route=\"", route.route(), "\"}"));
    EXPECT_NEAR(ValueOf(recovered, "route", route.route()),
                be.recovered_share(), 1e-3);
    const json remaining = QueryWithData(absl::StrCat(
        "arbiter_breakeven_remaining_usd{route=\"", route.route(), "\"}"));
    EXPECT_NEAR(ValueOf(remaining, "route", route.route()), be.remaining_usd(),
                0.01);
    const json never = QueryWithData(
        absl::StrCat("arbiter_breakeven_never{route=\"", route.route(), "\"}"));
    EXPECT_EQ(ValueOf(never, "route", route.route()), be.never() ? 1 : 0);
  }
  EXPECT_EQ(checked, 3);
}

}  // namespace
}  // namespace arbiter
