// Starts `arbiter serve` as a real process and tries its outer shell: what
// browsers and port scanners send to the metrics port, a second gateway on
// ports already in use, and the signals an orchestrator sends, with a
// backend that never answers.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/integration/subprocess.h"

namespace arbiter {
namespace {

using ::arbiter::testing::StartServe;
using ::arbiter::testing::Subprocess;
using ::grpc::health::v1::Health;
using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// A backend that accepts connections and reads what comes, and never
// answers.
class HungBackend final {
 public:
  HungBackend() {
    listener_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address = {};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (bind(listener_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        listen(listener_, 16) != 0 ||
        getsockname(listener_, reinterpret_cast<sockaddr*>(&address),
                    &length) != 0) {
      ADD_FAILURE() << "cannot listen";
    }
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { Loop(); });
  }
  ~HungBackend() {
    stopping_ = true;
    thread_.join();
    for (int fd : clients_) close(fd);
    close(listener_);
  }

  HungBackend(const HungBackend&) = delete;
  HungBackend& operator=(const HungBackend&) = delete;

  [[nodiscard]] int port() const { return port_; }
  // Whether a request has come: the gateway has one in flight here.
  [[nodiscard]] bool HasRequest() const { return has_request_; }

 private:
  void Loop() {
    while (!stopping_) {
      std::vector<pollfd> fds = {{listener_, POLLIN, 0}};
      for (int fd : clients_) fds.push_back({fd, POLLIN, 0});
      if (poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        int fd = accept(listener_, nullptr, nullptr);
        if (fd >= 0) clients_.push_back(fd);
      }
      for (size_t i = 1; i < fds.size(); ++i) {
        if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        char buffer[4096];
        ssize_t n = read(fds[i].fd, buffer, sizeof(buffer));
        if (n > 0) {
          has_request_ = true;
        } else {
          close(fds[i].fd);
          std::erase(clients_, fds[i].fd);
        }
      }
    }
  }

  int listener_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> has_request_{false};
  std::vector<int> clients_;  // Only the loop's thread touches it.
};

// Sends `bytes` on a new connection to the loopback `port` and returns what
// comes back until the server closes the connection (at most 10 s).
std::string RawExchange(int port, const std::string& bytes) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  const absl::Cleanup close_fd = [fd] { close(fd); };
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) !=
      0) {
    return "connection refused";
  }
  timeval timeout = {10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  for (size_t sent = 0; sent < bytes.size();) {
    ssize_t n =
        send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // The server may close before it has read it all.
    sent += n;
  }
  std::string reply;
  char buffer[65536];
  for (;;) {
    ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    reply.append(buffer, n);
  }
  return reply;
}

std::string Request(absl::string_view method, absl::string_view target) {
  return absl::StrCat(method, " ", target,
                      " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                      "\r\n");
}

std::string StatusLine(const std::string& reply) {
  return reply.substr(0, reply.find("\r\n"));
}

std::string Body(const std::string& reply) {
  size_t end = reply.find("\r\n\r\n");
  return end == std::string::npos ? "" : reply.substr(end + 4);
}

// A gateway whose only route is a fine-tuned one on an `openai` backend at
// `backend_port` (30 s timeout), draining for `grace_seconds`.
std::string HungBackendConfig(int backend_port, double grace_seconds) {
  return absl::StrReplaceAll(R"yaml(
server: {shutdown_grace_seconds: GRACE}
tasks: [faq]
policy: {pinned: {route: tuned}}
backends:
  - name: hung
    openai: {base_url: "http://127.0.0.1:PORT/v1", timeout_seconds: 30}
routes:
  - name: tuned
    kind: fine_tuned
    backend: hung
    model: m
)yaml",
                             {{"PORT", std::to_string(backend_port)},
                              {"GRACE", absl::StrCat(grace_seconds)}});
}

v1::InferRequest Ask(const std::string& text) {
  v1::InferRequest request;
  v1::ChatMessage* message = request.add_messages();
  message->set_role(v1::ROLE_USER);
  message->set_content(text);
  return request;
}

class ServeTest : public ::testing::Test {
 protected:
  using Gateway = ::arbiter::testing::ServingGateway;

  void TearDown() override {
    for (const std::string& path : config_paths_) {
      std::filesystem::remove(path);
    }
  }

  // A config file holding `yaml`, removed after the test.
  std::string WriteConfig(const std::string& yaml) {
    std::string path = (std::filesystem::temp_directory_path() /
                        absl::StrCat("arbiter-serve-", getpid(), "-",
                                     config_paths_.size(), ".yaml"))
                           .string();
    std::ofstream(path) << yaml;
    config_paths_.push_back(path);
    return path;
  }

  static std::vector<std::string> ServeArgs(const std::string& config_path,
                                            const std::string& grpc_listen,
                                            const std::string& metrics_listen) {
    std::vector<std::string> args = {
        ARBITER_BINARY,     "serve",        "--grpc-listen", grpc_listen,
        "--metrics-listen", metrics_listen, "--http-listen", "127.0.0.1:0"};
    if (!config_path.empty()) {
      args.insert(args.end(), {"--config", config_path});
    }
    return args;
  }

  // Starts `arbiter serve` (the embedded quickstart when `config_path` is
  // empty) on OS-chosen ports and waits for its banner.
  static Gateway Start(const std::string& config_path) {
    std::vector<std::string> args;
    if (!config_path.empty()) args = {"--config", config_path};
    auto gateway = StartServe(ARBITER_BINARY, args);
    if (!gateway.ok()) {
      ADD_FAILURE() << "no banner: " << gateway.status();
      return Gateway();
    }
    return *std::move(gateway);
  }

  static std::shared_ptr<grpc::Channel> Channel(const Gateway& gateway) {
    return grpc::CreateChannel(absl::StrCat("127.0.0.1:", gateway.grpc_port),
                               grpc::InsecureChannelCredentials());
  }

  static HealthCheckResponse::ServingStatus Health(const Gateway& gateway) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(5));
    HealthCheckResponse response;
    grpc::Status status =
        Health::NewStub(Channel(gateway))
            ->Check(&context, HealthCheckRequest(), &response);
    return status.ok() ? response.status() : HealthCheckResponse::UNKNOWN;
  }

  static void ExpectMetricsServed(const Gateway& gateway) {
    const std::string reply =
        RawExchange(gateway.metrics_port, Request("GET", "/metrics"));
    EXPECT_EQ(StatusLine(reply), "HTTP/1.1 200 OK");
    EXPECT_THAT(reply, HasSubstr("Content-Type: text/plain; version=0.0.4; "
                                 "charset=utf-8\r\n"));
    EXPECT_THAT(Body(reply),
                HasSubstr("# TYPE arbiter_requests_total counter"));
  }

  std::vector<std::string> config_paths_;
};

TEST_F(ServeTest, MetricsPortAnswersWhatBrowsersAndScannersSend) {
  HungBackend backend;  // Reachable: the gateway reports SERVING.
  Gateway gateway = Start(WriteConfig(HungBackendConfig(backend.port(), 1)));
  ASSERT_GT(gateway.metrics_port, 0);
  const int port = gateway.metrics_port;

  std::string reply = RawExchange(port, Request("GET", "/"));
  EXPECT_EQ(StatusLine(reply), "HTTP/1.1 404 Not Found");
  reply = RawExchange(port, Request("GET", "/favicon.ico"));
  EXPECT_EQ(StatusLine(reply), "HTTP/1.1 404 Not Found");

  reply = RawExchange(port, Request("HEAD", "/metrics"));
  EXPECT_EQ(StatusLine(reply), "HTTP/1.1 200 OK");
  EXPECT_THAT(reply, HasSubstr("Content-Length: "));
  EXPECT_THAT(reply, Not(HasSubstr("Content-Length: 0\r\n")));
  EXPECT_EQ(Body(reply), "");

  reply = RawExchange(port, Request("POST", "/metrics"));
  EXPECT_EQ(StatusLine(reply), "HTTP/1.1 405 Method Not Allowed");
  EXPECT_THAT(reply, HasSubstr("Allow: GET, HEAD\r\n"));

  reply = RawExchange(port, Request("GET", "/" + std::string(16 << 10, 'a')));
  EXPECT_EQ(StatusLine(reply), "HTTP/1.1 414 URI Too Long");

  std::string noise(1 << 20, '\0');
  std::mt19937 random(12);
  for (char& c : noise) c = static_cast<char>(random());
  RawExchange(port, noise);  // Whatever comes back; the connection closes.

  ExpectMetricsServed(gateway);
  EXPECT_EQ(Health(gateway), HealthCheckResponse::SERVING);
  EXPECT_EQ(gateway.process->Stop(), 0) << gateway.process->Output();
}

TEST_F(ServeTest, RefusesToStartOnGrpcPortInUse) {
  HungBackend backend;  // Reachable: the gateway reports SERVING.
  const std::string config = WriteConfig(HungBackendConfig(backend.port(), 1));
  Gateway first = Start(config);
  ASSERT_GT(first.grpc_port, 0);
  auto second = Subprocess::Start(ServeArgs(
      config, absl::StrCat("127.0.0.1:", first.grpc_port), "127.0.0.1:0"));
  ASSERT_TRUE(second.ok()) << second.status();
  // Should it start, its destructor stops it.
  ASSERT_FALSE(
      (*second)->WaitForLine("grpc listening on ", absl::Seconds(30)).ok())
      << "a second gateway started on a port in use";
  EXPECT_NE((*second)->Wait(), 0);
  EXPECT_THAT((*second)->Output(),
              HasSubstr(absl::StrCat(
                  "cannot listen for gRPC on 127.0.0.1:", first.grpc_port,
                  ": port ", first.grpc_port, " is already in use")));
  EXPECT_EQ(Health(first), HealthCheckResponse::SERVING);
}

TEST_F(ServeTest, RefusesToStartOnMetricsPortInUse) {
  const std::string config = WriteConfig(HungBackendConfig(1, 1));
  Gateway first = Start(config);
  ASSERT_GT(first.metrics_port, 0);
  auto second = Subprocess::Start(ServeArgs(
      config, "127.0.0.1:0", absl::StrCat("127.0.0.1:", first.metrics_port)));
  ASSERT_TRUE(second.ok()) << second.status();
  // Should it start, its destructor stops it.
  ASSERT_FALSE(
      (*second)->WaitForLine("grpc listening on ", absl::Seconds(30)).ok())
      << "a second gateway started on a port in use";
  EXPECT_NE((*second)->Wait(), 0);
  EXPECT_THAT((*second)->Output(),
              HasSubstr(absl::StrCat(
                  "metrics: cannot listen on 127.0.0.1:", first.metrics_port,
                  ": port ", first.metrics_port, " is already in use")));
  ExpectMetricsServed(first);
}

// SIGTERM with a call held by a backend that never answers (30 s timeout)
// and a 1 s grace: health watchers hear NOT_SERVING first, the call fails
// with UNAVAILABLE once the grace is over, and the process exits 0 within
// the grace plus one second.
TEST_F(ServeTest, SigtermCancelsWhatIsLeftAfterTheGrace) {
  HungBackend backend;
  Gateway gateway = Start(WriteConfig(HungBackendConfig(backend.port(), 1)));
  ASSERT_GT(gateway.grpc_port, 0);
  std::shared_ptr<grpc::Channel> channel = Channel(gateway);

  grpc::ClientContext watch_context;
  auto watch =
      Health::NewStub(channel)->Watch(&watch_context, HealthCheckRequest());
  HealthCheckResponse health;
  ASSERT_TRUE(watch->Read(&health));
  EXPECT_EQ(health.status(), HealthCheckResponse::SERVING);

  grpc::Status infer_status;
  absl::Time infer_done;
  std::thread infer([&] {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(60));
    v1::InferResponse response;
    infer_status = v1::Gateway::NewStub(channel)->Infer(
        &context, Ask("How do I reset my password?"), &response);
    infer_done = absl::Now();
  });
  for (int i = 0; i < 1000 && !backend.HasRequest(); ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_TRUE(backend.HasRequest());

  const absl::Time signalled = absl::Now();
  gateway.process->Signal(SIGTERM);
  absl::Time not_serving = absl::InfiniteFuture();
  std::thread watcher([&] {
    HealthCheckResponse next;
    while (watch->Read(&next)) {
      if (next.status() == HealthCheckResponse::NOT_SERVING) {
        not_serving = absl::Now();
        return;
      }
    }
  });
  const int exit_code = gateway.process->Wait();
  const absl::Duration exit_after = absl::Now() - signalled;
  infer.join();
  watcher.join();
  watch_context.TryCancel();
  watch->Finish().IgnoreError();

  EXPECT_EQ(exit_code, 0) << gateway.process->Output();
  EXPECT_LE(exit_after, absl::Seconds(2)) << gateway.process->Output();
  EXPECT_EQ(infer_status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << infer_status.error_message();
  EXPECT_THAT(infer_status.error_message(), HasSubstr("shutting down"));
  // The grace is honoured, then what is left is cancelled promptly.
  EXPECT_GE(infer_done - signalled, absl::Milliseconds(900));
  EXPECT_LE(infer_done - signalled, absl::Seconds(2));
  EXPECT_LT(not_serving, infer_done) << "no NOT_SERVING while draining";
}

TEST_F(ServeTest, SighupReloadsTheConfigAndServingGoesOn) {
  Gateway gateway = Start("");
  ASSERT_GT(gateway.grpc_port, 0);
  gateway.process->Signal(SIGHUP);
  ASSERT_TRUE(
      gateway.process->WaitForLine("reloaded the config", absl::Seconds(10))
          .ok())
      << gateway.process->Output();

  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(30));
  v1::InferResponse response;
  v1::InferRequest request = Ask("How do I reset my password?");
  request.set_route("fine-tuned");
  grpc::Status status = v1::Gateway::NewStub(Channel(gateway))
                            ->Infer(&context, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_THAT(response.text(), StartsWith("[sim]"));
  ExpectMetricsServed(gateway);
  EXPECT_EQ(gateway.process->Stop(), 0) << gateway.process->Output();
}

// A SIGTERM that comes while the main thread is not yet waiting for it may
// be delivered to a library thread that does not block it (OpenBLAS starts
// its pool before main), which ends the process with 143 instead of a
// drain. serve and sim-server take it through a handler; right after the
// banner is the likeliest moment for the race.
TEST_F(ServeTest, SigtermRightAfterTheBannerStopsCleanly) {
  for (int i = 0; i < 5; ++i) {
    Gateway gateway = Start("");
    ASSERT_GT(gateway.grpc_port, 0);
    EXPECT_EQ(gateway.process->Stop(), 0) << gateway.process->Output();
    EXPECT_THAT(gateway.process->Output(), HasSubstr("received SIGTERM"));
  }
  for (int i = 0; i < 10; ++i) {
    auto sim = Subprocess::Start(
        {ARBITER_BINARY, "sim-server", "--listen", "127.0.0.1:0"});
    ASSERT_TRUE(sim.ok()) << sim.status();
    ASSERT_TRUE(
        (*sim)->WaitForLine("sim-server listening on ", absl::Seconds(30)).ok())
        << (*sim)->Output();
    EXPECT_EQ((*sim)->Stop(), 0) << (*sim)->Output();
    EXPECT_THAT((*sim)->Output(), HasSubstr("received SIGTERM"));
  }
}

// The status of one call to gRPC reflection (a bidi method, called with one
// empty message): UNIMPLEMENTED when the gateway does not serve it.
grpc::StatusCode ReflectionStatus(std::shared_ptr<grpc::Channel> channel) {
  grpc::GenericStub stub(std::move(channel));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(5));
  grpc::Slice empty("");  // An empty message; an empty buffer is none.
  grpc::ByteBuffer request(&empty, 1), response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context,
                 "/grpc.reflection.v1alpha.ServerReflection/"
                 "ServerReflectionInfo",
                 grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status status) { done.set_value(status); });
  return done.get_future().get().error_code();
}

TEST_F(ServeTest, ReflectionIsServedUnlessTurnedOff) {
  const std::string config = HungBackendConfig(1, 1);
  Gateway on = Start(WriteConfig(config));
  ASSERT_NE(on.process, nullptr);
  EXPECT_NE(ReflectionStatus(Channel(on)), grpc::StatusCode::UNIMPLEMENTED);
  Gateway off = Start(
      WriteConfig(absl::StrReplaceAll(config, {{"shutdown_grace_seconds: 1",
                                                "shutdown_grace_seconds: 1, "
                                                "reflection: false"}})));
  ASSERT_NE(off.process, nullptr);
  EXPECT_EQ(ReflectionStatus(Channel(off)), grpc::StatusCode::UNIMPLEMENTED);
}

}  // namespace
}  // namespace arbiter
