#include "gateway/http/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gateway/http/basic_auth.h"
#include "gateway/http/metrics_handler.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"

namespace arbiter::http {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// A blocking loopback client that sees the bytes the server sends; every
// read gives up after 5 s.
class Client final {
 public:
  explicit Client(int port) : fd_(socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in address = {};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&address),
                         sizeof(address)) == 0;
    SetTimeout(absl::Seconds(5));
  }
  ~Client() { Close(); }

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  [[nodiscard]] bool connected() const { return connected_; }

  void Send(const std::string& bytes) {
    for (size_t sent = 0; sent < bytes.size();) {
      ssize_t n =
          send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += n;
    }
  }

  // One response: headers, then Content-Length bytes of body unless
  // `head` (a response to HEAD has none). Empty when the connection closes
  // first.
  std::string ReadResponse(bool head = false) {
    size_t end;
    while ((end = pending_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill()) return "";
    }
    size_t length = 0;
    size_t field = pending_.find("Content-Length: ");
    if (!head && field != std::string::npos && field < end) {
      size_t digits = field + 16;
      (void)absl::SimpleAtoi(
          pending_.substr(digits, pending_.find("\r\n", digits) - digits),
          &length);
    }
    while (pending_.size() < end + 4 + length) {
      if (!Fill()) return "";
    }
    std::string response = pending_.substr(0, end + 4 + length);
    pending_.erase(0, end + 4 + length);
    return response;
  }

  // Whether the server sends nothing and keeps the connection for `wait`.
  bool SilentFor(absl::Duration wait) {
    if (!pending_.empty()) return false;
    SetTimeout(wait);
    char byte;
    const bool silent = recv(fd_, &byte, 1, MSG_PEEK) < 0 &&
                        (errno == EAGAIN || errno == EWOULDBLOCK);
    SetTimeout(absl::Seconds(5));
    return silent;
  }

  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  // Whether the server closes the connection (within 5 s), with nothing
  // more sent.
  bool ClosedByServer() {
    while (Fill()) {
    }
    return closed_;
  }

 private:
  void SetTimeout(absl::Duration timeout) {
    timeval value = absl::ToTimeval(timeout);
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &value, sizeof(value));
  }

  bool Fill() {
    char buffer[65536];
    ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
    if (n <= 0) {
      closed_ = n == 0 || errno == ECONNRESET;
      return false;
    }
    pending_.append(buffer, n);
    return true;
  }

  int fd_;
  bool connected_ = false;
  bool closed_ = false;
  std::string pending_;
};

std::string Get(absl::string_view target, absl::string_view extra = "") {
  return absl::StrCat("GET ", target, " HTTP/1.1\r\nHost: test\r\n", extra,
                      "\r\n");
}

std::string StatusLine(const std::string& response) {
  return response.substr(0, response.find("\r\n"));
}

std::string Body(const std::string& response) {
  size_t end = response.find("\r\n\r\n");
  return end == std::string::npos ? "" : response.substr(end + 4);
}

Response Text(absl::string_view text) {
  Response response(boost::beast::http::status::ok, 11);
  response.set(boost::beast::http::field::content_type, "text/plain");
  response.body() = std::string(text);
  return response;
}

Handler Answer(std::string text) {
  return [text = std::move(text)](Request, Responder responder) {
    std::move(responder).Send(Text(text));
  };
}

class HttpServerTest : public ::testing::Test {
 protected:
  void Start(Routes routes, HttpServerOptions options = {}) {
    auto server = HttpServer::Start(std::move(options), std::move(routes));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  // GET /hello and POST /echo.
  void StartDefault(HttpServerOptions options = {}) {
    Routes routes;
    routes.Add(Verb::get, "/hello", Answer("hello"));
    routes.Add(Verb::post, "/echo", [](Request request, Responder responder) {
      std::move(responder).Send(Text(request.body()));
    });
    Start(std::move(routes), std::move(options));
  }

  std::string Exchange(const std::string& request, bool head = false) {
    Client client(server_->port());
    EXPECT_TRUE(client.connected());
    client.Send(request);
    return client.ReadResponse(head);
  }

  // The server still answers a well-formed request.
  void ExpectServing() { EXPECT_EQ(Body(Exchange(Get("/hello"))), "hello"); }

  // Also with a handler that answers later (GET /later kept in `held`).
  template <typename Held>
  void ExpectServingLater(Held& held) {
    Client client(server_->port());
    client.Send(Get("/later"));
    auto responder = held.Take();
    ASSERT_TRUE(responder.has_value());
    std::move(*responder).Send(Text("later"));
    EXPECT_EQ(Body(client.ReadResponse()), "later");
  }

  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, AnswersARouteWithItsHandler) {
  StartDefault();
  const std::string response = Exchange(Get("/hello"));
  EXPECT_EQ(StatusLine(response), "HTTP/1.1 200 OK");
  EXPECT_THAT(response, HasSubstr("Content-Length: 5\r\n"));
  EXPECT_EQ(Body(response), "hello");
}

TEST_F(HttpServerTest, UnknownPathGets404) {
  StartDefault();
  EXPECT_EQ(StatusLine(Exchange(Get("/"))), "HTTP/1.1 404 Not Found");
  EXPECT_EQ(StatusLine(Exchange(Get("/favicon.ico"))),
            "HTTP/1.1 404 Not Found");
  EXPECT_EQ(StatusLine(Exchange(Get("/hello/"))), "HTTP/1.1 404 Not Found");
}

TEST_F(HttpServerTest, WrongMethodGets405WithAllow) {
  StartDefault();
  std::string response = Exchange(
      "POST /hello HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\nhi");
  EXPECT_EQ(StatusLine(response), "HTTP/1.1 405 Method Not Allowed");
  EXPECT_THAT(response, HasSubstr("Allow: GET, HEAD\r\n"));
  response = Exchange("DELETE /echo HTTP/1.1\r\nHost: test\r\n\r\n");
  EXPECT_EQ(StatusLine(response), "HTTP/1.1 405 Method Not Allowed");
  EXPECT_THAT(response, HasSubstr("Allow: POST\r\n"));
}

TEST_F(HttpServerTest, HeadGetsGetsHeadersWithoutTheBody) {
  StartDefault();
  Client client(server_->port());
  client.Send("HEAD /hello HTTP/1.1\r\nHost: test\r\n\r\n" + Get("/hello"));
  const std::string head = client.ReadResponse(/*head=*/true);
  EXPECT_EQ(StatusLine(head), "HTTP/1.1 200 OK");
  EXPECT_THAT(head, HasSubstr("Content-Length: 5\r\n"));
  EXPECT_EQ(Body(head), "");
  // Had a body followed the headers, this would not parse as the next one.
  EXPECT_EQ(Body(client.ReadResponse()), "hello");
}

TEST_F(HttpServerTest, RoutesByPathWithoutTheQuery) {
  StartDefault();
  EXPECT_EQ(Body(Exchange(Get("/hello?name=x#top"))), "hello");
  EXPECT_EQ(Body(Exchange(Get("http://test:80/hello?x"))), "hello");
}

TEST_F(HttpServerTest, KeepsTheConnectionAliveAcrossRequests) {
  StartDefault();
  Client client(server_->port());
  client.Send(Get("/hello"));
  EXPECT_EQ(Body(client.ReadResponse()), "hello");
  client.Send(Get("/nothing-here"));
  EXPECT_EQ(StatusLine(client.ReadResponse()), "HTTP/1.1 404 Not Found");
  // Pipelined: both answered, in order.
  client.Send(
      "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc" +
      Get("/hello"));
  EXPECT_EQ(Body(client.ReadResponse()), "abc");
  EXPECT_EQ(Body(client.ReadResponse()), "hello");
  client.Send(Get("/hello", "Connection: close\r\n"));
  const std::string last = client.ReadResponse();
  EXPECT_THAT(last, HasSubstr("Connection: close\r\n"));
  EXPECT_TRUE(client.ClosedByServer());
}

TEST_F(HttpServerTest, ClosesAnHttp10ConnectionAfterTheAnswer) {
  StartDefault();
  Client client(server_->port());
  client.Send("GET /hello HTTP/1.0\r\n\r\n");
  EXPECT_EQ(StatusLine(client.ReadResponse()), "HTTP/1.0 200 OK");
  EXPECT_TRUE(client.ClosedByServer());
}

TEST_F(HttpServerTest, LongRequestLineGets414AndCloses) {
  HttpServerOptions options;
  options.max_header_bytes = 4096;
  StartDefault(options);
  Client client(server_->port());
  client.Send(Get("/" + std::string(16 << 10, 'a')));
  EXPECT_EQ(StatusLine(client.ReadResponse()), "HTTP/1.1 414 URI Too Long");
  EXPECT_TRUE(client.ClosedByServer());
  ExpectServing();
}

TEST_F(HttpServerTest, LargeHeaderFieldsGet431AndClose) {
  HttpServerOptions options;
  options.max_header_bytes = 4096;
  StartDefault(options);
  Client client(server_->port());
  client.Send(Get("/hello", "X-Big: " + std::string(8192, 'b') + "\r\n"));
  EXPECT_EQ(StatusLine(client.ReadResponse()),
            "HTTP/1.1 431 Request Header Fields Too Large");
  EXPECT_TRUE(client.ClosedByServer());
  ExpectServing();
}

TEST_F(HttpServerTest, LargeBodyGets413AndCloses) {
  HttpServerOptions options;
  options.max_body_bytes = 1000;
  StartDefault(options);
  Client client(server_->port());
  client.Send(
      "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1001\r\n\r\n" +
      std::string(1001, 'x'));
  EXPECT_EQ(StatusLine(client.ReadResponse()),
            "HTTP/1.1 413 Payload Too Large");
  EXPECT_TRUE(client.ClosedByServer());
  // At the limit it is read and answered.
  EXPECT_EQ(Body(Exchange("POST /echo HTTP/1.1\r\nHost: test\r\n"
                          "Content-Length: 1000\r\n\r\n" +
                          std::string(1000, 'x'))),
            std::string(1000, 'x'));
}

TEST_F(HttpServerTest, MalformedRequestsGet400AndCloseThatConnectionOnly) {
  StartDefault();
  Client bystander(server_->port());  // Kept alive throughout.
  bystander.Send(Get("/hello"));
  EXPECT_EQ(Body(bystander.ReadResponse()), "hello");
  for (const std::string& garbage :
       {std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11),
        std::string("GET /hello HTTP/9.9\r\n\r\n"),
        std::string("GET /hello HTTP/1.1\r\nBad Header\r\n\r\n"),
        std::string("POST /echo HTTP/1.1\r\nContent-Length: x\r\n\r\n")}) {
    Client client(server_->port());
    client.Send(garbage);
    EXPECT_EQ(StatusLine(client.ReadResponse()), "HTTP/1.1 400 Bad Request")
        << garbage;
    EXPECT_TRUE(client.ClosedByServer()) << garbage;
  }
  bystander.Send(Get("/hello"));
  EXPECT_EQ(Body(bystander.ReadResponse()), "hello");
}

TEST_F(HttpServerTest, ATargetThatIsNotAPathGets400) {
  StartDefault();
  EXPECT_EQ(StatusLine(Exchange(Get("hello"))), "HTTP/1.1 400 Bad Request");
}

TEST_F(HttpServerTest, ClosesAConnectionThatDoesNotSendARequestInTime) {
  HttpServerOptions options;
  options.read_timeout = absl::Milliseconds(200);
  StartDefault(options);
  Client client(server_->port());
  client.Send("GET /hello HTTP/1.1\r\n");  // And no more.
  const absl::Time start = absl::Now();
  EXPECT_TRUE(client.ClosedByServer());
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  ExpectServing();
}

TEST_F(HttpServerTest, AHandlerMayAnswerLaterFromAnotherThread) {
  std::mutex mu;  // std:: so that ThreadSanitizer sees it.
  std::condition_variable held;
  std::vector<Responder> waiting;  // Guarded by mu.
  Routes routes;
  routes.Add(Verb::get, "/later", [&](Request, Responder responder) {
    std::lock_guard lock(mu);
    waiting.push_back(std::move(responder));
    held.notify_one();
  });
  routes.Add(Verb::get, "/hello", Answer("hello"));
  Start(std::move(routes));
  Client client(server_->port());
  client.Send(Get("/later"));
  {
    std::unique_lock lock(mu);
    held.wait(lock, [&] { return !waiting.empty(); });
  }
  ExpectServing();  // Other connections are not held up meanwhile.
  std::thread([&] {
    std::lock_guard lock(mu);
    std::move(waiting.front()).Send(Text("later"));
  }).join();
  EXPECT_EQ(Body(client.ReadResponse()), "later");
}

TEST_F(HttpServerTest, AHandlerThatThrowsOrDropsItsResponderGets500) {
  Routes routes;
  routes.Add(Verb::get, "/throws", [](Request, Responder) {
    throw std::runtime_error("handler bug");
  });
  routes.Add(Verb::get, "/drops", [](Request, Responder) {});
  routes.Add(Verb::get, "/hello", Answer("hello"));
  Start(std::move(routes));
  EXPECT_EQ(StatusLine(Exchange(Get("/throws"))),
            "HTTP/1.1 500 Internal Server Error");
  EXPECT_EQ(StatusLine(Exchange(Get("/drops"))),
            "HTTP/1.1 500 Internal Server Error");
  ExpectServing();
}

TEST_F(HttpServerTest, AResponderMayOutliveTheServer) {
  absl::Notification held;
  std::unique_ptr<Responder> kept;
  Routes routes;
  routes.Add(Verb::get, "/later", [&](Request, Responder responder) {
    kept = std::make_unique<Responder>(std::move(responder));
    held.Notify();
  });
  Start(std::move(routes));
  Client client(server_->port());
  client.Send(Get("/later"));
  held.WaitForNotification();
  server_.reset();
  std::move(*kept).Send(Text("too late"));  // Dropped, safely.
  kept.reset();
  EXPECT_EQ(client.ReadResponse(), "");
}

TEST_F(HttpServerTest, RefusesAPortInUseNamingIt) {
  StartDefault();
  HttpServerOptions options;
  options.address = absl::StrCat("127.0.0.1:", server_->port());
  auto second = HttpServer::Start(options, Routes());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(second.status().message(),
            absl::StrCat("cannot listen on 127.0.0.1:", server_->port(),
                         ": port ", server_->port(), " is already in use"));
  ExpectServing();
}

TEST_F(HttpServerTest, RejectsAnAddressThatIsNotHostPort) {
  HttpServerOptions options;
  options.address = "localhost";
  auto server = HttpServer::Start(options, Routes());
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
}

// A handler that keeps its Responder: the test answers it, or sees its
// client go.
class HeldRequests final {
 public:
  Handler Handle() {
    return [this](Request, Responder responder) {
      std::lock_guard lock(mu_);
      held_.push_back(std::move(responder));
      changed_.notify_all();
    };
  }

  // The next Responder a handler kept (within 5 s).
  std::optional<Responder> Take() {
    std::unique_lock lock(mu_);
    if (!changed_.wait_for(lock, std::chrono::seconds(5),
                           [&] { return !held_.empty(); })) {
      return std::nullopt;
    }
    Responder responder = std::move(held_.front());
    held_.erase(held_.begin());
    return responder;
  }

 private:
  std::mutex mu_;  // std:: so that ThreadSanitizer sees it.
  std::condition_variable changed_;
  std::vector<Responder> held_;
};

TEST_F(HttpServerTest, TellsAHandlerWhoseClientLeftBeforeTheAnswer) {
  HeldRequests held;
  Routes routes;
  routes.Add(Verb::get, "/later", held.Handle());
  routes.Add(Verb::get, "/hello", Answer("hello"));
  Start(std::move(routes));
  auto client = std::make_unique<Client>(server_->port());
  client->Send(Get("/later"));
  std::optional<Responder> responder = held.Take();
  ASSERT_TRUE(responder.has_value());
  absl::Notification gone;
  responder->OnClientGone([&] { gone.Notify(); });
  client.reset();
  const absl::Time closed = absl::Now();
  ASSERT_TRUE(gone.WaitForNotificationWithTimeout(absl::Seconds(2)));
  EXPECT_LT(absl::Now() - closed, absl::Milliseconds(100));
  std::move(*responder).Send(Text("too late"));  // Dropped quietly.
  ExpectServing();
}

TEST_F(HttpServerTest, OnClientGoneIsNotCalledOnceAnswered) {
  HeldRequests held;
  Routes routes;
  routes.Add(Verb::get, "/later", held.Handle());
  Start(std::move(routes));
  Client client(server_->port());
  client.Send(Get("/later"));
  std::optional<Responder> responder = held.Take();
  ASSERT_TRUE(responder.has_value());
  std::atomic<int> calls = 0;
  responder->OnClientGone([&] { ++calls; });
  std::move(*responder).Send(Text("in time"));
  EXPECT_EQ(Body(client.ReadResponse()), "in time");
  client.Close();
  // A later request on another connection, and time for a wrong call.
  ExpectServingLater(held);
  EXPECT_EQ(calls.load(), 0);
}

TEST_F(HttpServerTest, OnClientGoneRegisteredAfterTheClientLeftIsCalledAtOnce) {
  HeldRequests held;
  Routes routes;
  routes.Add(Verb::get, "/later", held.Handle());
  Start(std::move(routes));
  auto client = std::make_unique<Client>(server_->port());
  client->Send(Get("/later"));
  std::optional<Responder> responder = held.Take();
  ASSERT_TRUE(responder.has_value());
  client.reset();
  absl::SleepFor(absl::Milliseconds(200));  // The server sees it go.
  absl::Notification gone;
  responder->OnClientGone([&] { gone.Notify(); });
  EXPECT_TRUE(gone.WaitForNotificationWithTimeout(absl::Seconds(2)));
}

TEST_F(HttpServerTest, OnClientGoneIsCalledWhenTheServerIsDestroyedFirst) {
  HeldRequests held;
  Routes routes;
  routes.Add(Verb::get, "/later", held.Handle());
  Start(std::move(routes));
  Client client(server_->port());
  client.Send(Get("/later"));
  std::optional<Responder> responder = held.Take();
  ASSERT_TRUE(responder.has_value());
  bool gone = false;
  responder->OnClientGone([&] { gone = true; });
  server_.reset();
  EXPECT_TRUE(gone);
  std::move(*responder).Send(Text("too late"));  // Dropped, safely.
}

TEST_F(HttpServerTest, AnswersRequestsPipelinedBehindOneAHandlerHolds) {
  HeldRequests held;
  Routes routes;
  routes.Add(Verb::get, "/later", held.Handle());
  routes.Add(Verb::get, "/hello", Answer("hello"));
  Start(std::move(routes));
  Client client(server_->port());
  client.Send(Get("/later") + Get("/hello"));
  std::optional<Responder> responder = held.Take();
  ASSERT_TRUE(responder.has_value());
  absl::SleepFor(absl::Milliseconds(50));  // /hello is read meanwhile.
  std::move(*responder).Send(Text("later"));
  EXPECT_EQ(Body(client.ReadResponse()), "later");
  EXPECT_EQ(Body(client.ReadResponse()), "hello");
}

TEST_F(HttpServerTest, HoldsConnectionsBeyondMaxConnectionsInTheBacklog) {
  HttpServerOptions options;
  options.max_connections = 2;
  StartDefault(options);
  auto first = std::make_unique<Client>(server_->port());
  Client second(server_->port());
  for (Client* client : {first.get(), &second}) {
    client->Send(Get("/hello"));
    EXPECT_EQ(Body(client->ReadResponse()), "hello");
  }
  // Connected (the kernel completed it), but not accepted: not answered,
  // and not closed either.
  Client third(server_->port());
  ASSERT_TRUE(third.connected());
  third.Send(Get("/hello"));
  EXPECT_TRUE(third.SilentFor(absl::Milliseconds(300)));
  second.Send(Get("/hello"));  // The open ones are still served.
  EXPECT_EQ(Body(second.ReadResponse()), "hello");
  first.reset();
  EXPECT_EQ(Body(third.ReadResponse()), "hello");
  third.Send(Get("/hello"));
  EXPECT_EQ(Body(third.ReadResponse()), "hello");
}

TEST_F(HttpServerTest, AnswersExpect100ContinueBeforeTheBodyIsSent) {
  StartDefault();
  Client client(server_->port());
  client.Send(
      "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n"
      "Expect: 100-continue\r\n\r\n");
  EXPECT_EQ(client.ReadResponse(), "HTTP/1.1 100 Continue\r\n\r\n");
  client.Send("hello");
  const std::string response = client.ReadResponse();
  EXPECT_EQ(StatusLine(response), "HTTP/1.1 200 OK");
  EXPECT_EQ(Body(response), "hello");
  // Without the expectation, or with the body already sent, no 100.
  client.Send(
      "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n"
      "Expect: 100-continue\r\n\r\nhi");
  EXPECT_EQ(StatusLine(client.ReadResponse()), "HTTP/1.1 200 OK");
}

TEST_F(HttpServerTest, RefusesABodyTooLargeWith413BeforeItIsSent) {
  HttpServerOptions options;
  options.max_body_bytes = 1000;
  StartDefault(options);
  Client client(server_->port());
  client.Send(
      "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1001\r\n"
      "Expect: 100-continue\r\n\r\n");
  // No 100 first: the client never sends the body.
  EXPECT_EQ(StatusLine(client.ReadResponse()),
            "HTTP/1.1 413 Payload Too Large");
  EXPECT_TRUE(client.ClosedByServer());
}

// A hosted loop that records its turns: readable when the test signals it;
// a Turn may ask for the next one after a delay or through request_turn.
class FakeGuest final : public LoopGuest {
 public:
  FakeGuest() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~FakeGuest() override { close(fd_); }

  int ready_fd() const override { return fd_; }
  void Join(absl::AnyInvocable<void()> request_turn) override {
    std::lock_guard lock(mu_);
    joined_ = true;
    request_turn_ = std::move(request_turn);
  }
  absl::Duration Turn() override {
    uint64_t count;
    (void)!read(fd_, &count, sizeof(count));
    std::lock_guard lock(mu_);
    ++turns_;
    threads_.insert(std::this_thread::get_id());
    if (std::exchange(ask_again_, false)) request_turn_();
    changed_.notify_all();
    return std::exchange(next_, absl::InfiniteDuration());
  }
  void Leave() override {
    std::lock_guard lock(mu_);
    left_ = true;
    request_turn_ = nullptr;
  }

  void Signal() {
    const uint64_t one = 1;
    (void)!write(fd_, &one, sizeof(one));
  }
  // The next Turn asks for one more after `delay`, or through request_turn.
  void AskAfter(absl::Duration delay) {
    std::lock_guard lock(mu_);
    next_ = delay;
  }
  void AskThroughRequestTurn() {
    std::lock_guard lock(mu_);
    ask_again_ = true;
  }
  bool WaitForTurns(int turns) {
    std::unique_lock lock(mu_);
    return changed_.wait_for(lock, std::chrono::seconds(5),
                             [&] { return turns_ >= turns; });
  }
  int turns() {
    std::lock_guard lock(mu_);
    return turns_;
  }
  std::set<std::thread::id> threads() {
    std::lock_guard lock(mu_);
    return threads_;
  }
  bool joined() {
    std::lock_guard lock(mu_);
    return joined_;
  }
  bool left() {
    std::lock_guard lock(mu_);
    return left_;
  }

 private:
  const int fd_;
  std::mutex mu_;
  std::condition_variable changed_;
  absl::AnyInvocable<void()> request_turn_;
  int turns_ = 0;
  std::set<std::thread::id> threads_;
  absl::Duration next_ = absl::InfiniteDuration();
  bool ask_again_ = false;
  bool joined_ = false;
  bool left_ = false;
};

TEST_F(HttpServerTest, RunsAGuestLoopOnTheIoThreadOfItsHandlers) {
  FakeGuest guest;
  std::mutex mu;
  std::thread::id handler_thread;
  Routes routes;
  routes.Add(Verb::get, "/where", [&](Request, Responder responder) {
    {
      std::lock_guard lock(mu);
      handler_thread = std::this_thread::get_id();
    }
    std::move(responder).Send(Text("here"));
  });
  HttpServerOptions options;
  options.io_threads = 1;
  options.guests = {&guest};
  Start(std::move(routes), std::move(options));
  EXPECT_TRUE(guest.joined());
  ASSERT_TRUE(guest.WaitForTurns(1));  // One at the start.
  guest.Signal();
  ASSERT_TRUE(guest.WaitForTurns(2));
  EXPECT_EQ(Body(Exchange(Get("/where"))), "here");
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(guest.threads(), std::set<std::thread::id>{handler_thread});
  }
  // A turn that asks for another in 20 ms gets it with no signal.
  guest.AskAfter(absl::Milliseconds(20));
  guest.Signal();
  EXPECT_TRUE(guest.WaitForTurns(4));
  // And one asked through request_turn.
  guest.AskThroughRequestTurn();
  guest.Signal();
  EXPECT_TRUE(guest.WaitForTurns(6));
  server_.reset();
  EXPECT_TRUE(guest.left());
  const int turns = guest.turns();
  guest.Signal();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(guest.turns(), turns);  // Its host is gone.
}

TEST_F(HttpServerTest, SpreadsGuestLoopsOverTheIoThreads) {
  FakeGuest first, second;
  HttpServerOptions options;
  options.io_threads = 2;
  options.guests = {&first, &second};
  StartDefault(std::move(options));
  ASSERT_TRUE(first.WaitForTurns(1));
  ASSERT_TRUE(second.WaitForTurns(1));
  ASSERT_EQ(first.threads().size(), 1u);
  ASSERT_EQ(second.threads().size(), 1u);
  EXPECT_NE(*first.threads().begin(), *second.threads().begin());
  ExpectServing();
  server_.reset();  // Before the guests, which must outlive it.
  EXPECT_TRUE(first.left());
  EXPECT_TRUE(second.left());
}

TEST(MetricsHandlerTest, ServesTheRegistryInTextFormat) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter()
      .Name("arbiter_test_total")
      .Help("A test counter.")
      .Register(*registry)
      .Add({{"route", "a"}})
      .Increment(3);
  Routes routes;
  routes.Add(Verb::get, "/metrics", MetricsHandler(registry));
  auto server = HttpServer::Start({}, std::move(routes));
  ASSERT_TRUE(server.ok()) << server.status();
  Client client((*server)->port());
  client.Send(Get("/metrics"));
  const std::string response = client.ReadResponse();
  EXPECT_EQ(StatusLine(response), "HTTP/1.1 200 OK");
  EXPECT_THAT(response, HasSubstr("Content-Type: text/plain; version=0.0.4; "
                                  "charset=utf-8\r\n"));
  EXPECT_THAT(Body(response), HasSubstr("# TYPE arbiter_test_total counter\n"
                                        "arbiter_test_total{route=\"a\"} 3"));
}

// "password", hashed as the config holds it.
constexpr char kPasswordSha256[] =
    "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

TEST_F(HttpServerTest, BasicAuthAnswersOnlyTheRightCredentials) {
  Routes routes;
  routes.Add(Verb::get, "/metrics",
             RequireBasicAuth({"prometheus", kPasswordSha256},
                              "arbiter metrics", Answer("scraped")));
  Start(std::move(routes));
  auto with = [&](const std::string& authorization) {
    return Exchange(Get(
        "/metrics", absl::StrCat("Authorization: ", authorization, "\r\n")));
  };
  // base64("prometheus:password"), with the scheme in any case.
  EXPECT_EQ(Body(with("Basic cHJvbWV0aGV1czpwYXNzd29yZA==")), "scraped");
  EXPECT_EQ(Body(with("basic cHJvbWV0aGV1czpwYXNzd29yZA==")), "scraped");
  const std::string refused[] = {
      "Basic cHJvbWV0aGV1czp3cm9uZw==",       // prometheus:wrong
      "Basic Z3JhZmFuYTpwYXNzd29yZA==",       // grafana:password
      "Basic cHJvbWV0aGV1c3Bhc3N3b3Jk",       // no colon
      "Basic !!!not base64!!!",               // not base64
      "Bearer cHJvbWV0aGV1czpwYXNzd29yZA==",  // another scheme
      "Basic ",
  };
  for (const std::string& authorization : refused) {
    const std::string response = with(authorization);
    EXPECT_THAT(response, StartsWith("HTTP/1.1 401")) << authorization;
    EXPECT_THAT(response, HasSubstr("WWW-Authenticate: Basic realm=\"arbiter "
                                    "metrics\""))
        << authorization;
    EXPECT_THAT(Body(response), Not(HasSubstr("scraped")));
  }
  EXPECT_THAT(Exchange(Get("/metrics")), StartsWith("HTTP/1.1 401"));
}

TEST_F(HttpServerTest, BasicAuthWithAMalformedHashAdmitsNobody) {
  Routes routes;
  routes.Add(Verb::get, "/metrics",
             RequireBasicAuth({"prometheus", "5e88"}, "arbiter metrics",
                              Answer("scraped")));
  Start(std::move(routes));
  EXPECT_THAT(Exchange(Get("/metrics",
                           "Authorization: Basic "
                           "cHJvbWV0aGV1czpwYXNzd29yZA==\r\n")),
              StartsWith("HTTP/1.1 401"));
}

TEST_F(HttpServerTest, APlainServerCannotTakeUpTls) {
  StartDefault();
  absl::Status set = server_->SetTls({"cert", "key", ""});
  EXPECT_EQ(set.code(), absl::StatusCode::kFailedPrecondition) << set;
  ExpectServing();
}

TEST_F(HttpServerTest, TlsThatOpenSslRefusesFailsTheStart) {
  HttpServerOptions options;
  options.tls = TlsIdentity{"not a certificate", "not a key", ""};
  auto server = HttpServer::Start(std::move(options), Routes());
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(), HasSubstr("the certificate chain"));
}

}  // namespace
}  // namespace arbiter::http
