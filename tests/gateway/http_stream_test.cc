// Streamed responses of gateway/http's server, through a real socket and
// Beast's own response parser on the client side.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "boost/asio/buffer.hpp"
#include "boost/beast/http/error.hpp"
#include "boost/beast/http/parser.hpp"
#include "gateway/http/http_server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbiter::http {
namespace {

namespace bhttp = boost::beast::http;
using ::testing::HasSubstr;
using ::testing::Not;

int Connect(int port, int receive_buffer = 0) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (receive_buffer > 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer,
               sizeof(receive_buffer));
  }
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) !=
      0) {
    close(fd);
    return -1;
  }
  timeval timeout = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  return fd;
}

// A blocking loopback client that parses responses with Beast's parser and
// sees a chunked body chunk by chunk, as the chunks arrive. Every read gives
// up after 5 s.
class StreamClient final {
 public:
  explicit StreamClient(int port, int receive_buffer = 0)
      : fd_(Connect(port, receive_buffer)) {}
  ~StreamClient() { Close(); }

  StreamClient(const StreamClient&) = delete;
  StreamClient& operator=(const StreamClient&) = delete;

  [[nodiscard]] bool connected() const { return fd_ >= 0; }

  void Send(const std::string& bytes) {
    for (size_t sent = 0; sent < bytes.size();) {
      ssize_t n =
          send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += n;
    }
  }

  // Starts on the next response; `head` for the answer to HEAD.
  void ExpectResponse(bool head = false) {
    parser_.emplace();
    parser_->body_limit(boost::none);
    parser_->skip(head);
    chunks_.clear();
    partial_.clear();
    parser_->on_chunk_body(on_chunk_body_);
  }

  // Until the response's header is parsed; false if the connection closes,
  // 5 s pass or the bytes do not parse first.
  bool ReadHeader() {
    for (;;) {
      if (!Feed()) return false;
      if (parser_->is_header_done()) return true;
      if (!Fill()) return false;
    }
  }

  // The next whole chunk of the body; none once the body is over, or if
  // the connection closes, 5 s pass or the bytes do not parse first.
  std::optional<std::string> NextChunk() {
    for (;;) {
      if (!Feed()) return std::nullopt;
      if (!chunks_.empty()) {
        std::string chunk = std::move(chunks_.front());
        chunks_.pop_front();
        return chunk;
      }
      if (parser_->is_done() || !Fill()) return std::nullopt;
    }
  }

  // The chunks up to the end of the body (or whatever ends the reading).
  std::vector<std::string> ReadChunks() {
    std::vector<std::string> chunks;
    while (std::optional<std::string> chunk = NextChunk()) {
      chunks.push_back(*std::move(chunk));
    }
    return chunks;
  }

  // A whole response with a Content-Length body; none if it does not come.
  std::optional<Response> ReadResponse() {
    ExpectResponse();
    std::string body;
    while (NextChunk().has_value()) {
    }
    if (!parser_->is_done()) return std::nullopt;
    return parser_->release();
  }

  // All the bytes the server sends until it closes (within 5 s), unparsed.
  std::string ReadToClose() {
    while (Fill()) {
    }
    std::string bytes = std::move(pending_);
    pending_.clear();
    return bytes;
  }

  // Whether the server closed the connection (rather than 5 s passing).
  bool ClosedByServer() {
    while (Fill()) {
    }
    return closed_;
  }

  [[nodiscard]] bool done() const { return parser_->is_done(); }
  [[nodiscard]] const Response& message() const { return parser_->get(); }
  [[nodiscard]] const std::string& parse_error() const { return error_; }

  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  // Gives the parser what was received; false on a parse error.
  bool Feed() {
    while (!pending_.empty() && !parser_->is_done()) {
      boost::beast::error_code error;
      const size_t used = parser_->put(boost::asio::buffer(pending_), error);
      pending_.erase(0, used);
      if (error == bhttp::error::need_more) return true;
      if (error) {
        error_ = error.message();
        return false;
      }
      if (used == 0) return true;
    }
    return true;
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
  bool closed_ = false;
  std::string pending_;
  std::string error_;
  std::optional<bhttp::response_parser<bhttp::string_body>> parser_;
  std::deque<std::string> chunks_;
  std::string partial_;  // Of the chunk being received.
  // The parser keeps a reference to it.
  std::function<size_t(uint64_t, boost::beast::string_view,
                       boost::beast::error_code&)>
      on_chunk_body_ = [this](uint64_t remain, boost::beast::string_view body,
                              boost::beast::error_code&) {
        partial_.append(body.data(), body.size());
        if (remain == body.size()) {
          chunks_.push_back(std::move(partial_));
          partial_.clear();
        }
        return body.size();
      };
};

std::string Get(absl::string_view target, absl::string_view extra = "") {
  return absl::StrCat("GET ", target, " HTTP/1.1\r\nHost: test\r\n", extra,
                      "\r\n");
}

Response Text(absl::string_view text) {
  Response response(bhttp::status::ok, 11);
  response.set(bhttp::field::content_type, "text/plain");
  response.body() = std::string(text);
  return response;
}

Response EventStreamHead() {
  Response head(bhttp::status::ok, 11);
  head.set(bhttp::field::content_type, "text/event-stream");
  head.set(bhttp::field::cache_control, "no-cache");
  head.set("X-Arbiter-Route", "r1");
  return head;
}

// Serves GET /stream?id=N by handing the test a StreamWriter (kept under
// N), and GET /hello; counts the streams' on_closed calls.
class StreamTest : public ::testing::Test {
 protected:
  void Start(HttpServerOptions options = {}) {
    Routes routes;
    routes.Add(
        Verb::get, "/stream", [this](Request request, Responder responder) {
          std::string id;
          const std::string target(request.target());
          if (size_t equals = target.find("id="); equals != std::string::npos) {
            id = target.substr(equals + 3);
          }
          Response head = EventStreamHead();
          head.body() = first_bytes_;
          StreamWriter writer = std::move(responder).StartStream(
              std::move(head), [this, id] { OnClosedCalled(id); });
          std::lock_guard lock(mu_);
          writers_.emplace(id, std::move(writer));
          changed_.notify_all();
        });
    routes.Add(Verb::get, "/hello", [](Request, Responder responder) {
      std::move(responder).Send(Text("hello"));
    });
    auto server = HttpServer::Start(std::move(options), std::move(routes));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  // The writer of /stream?id=`id` once its handler ran (within 5 s).
  std::optional<StreamWriter> TakeWriter(const std::string& id = "") {
    std::unique_lock lock(mu_);
    if (!changed_.wait_for(lock, std::chrono::seconds(5),
                           [&] { return writers_.count(id) > 0; })) {
      return std::nullopt;
    }
    auto it = writers_.find(id);
    StreamWriter writer = std::move(it->second);
    writers_.erase(it);
    return writer;
  }

  // Whether on_closed of /stream?id=`id` was called within `timeout`.
  bool WaitClosed(const std::string& id, absl::Duration timeout) {
    std::unique_lock lock(mu_);
    return changed_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                             [&] { return closed_.count(id) > 0; });
  }

  int ClosedCalls(const std::string& id) {
    std::lock_guard lock(mu_);
    auto it = closed_.find(id);
    return it == closed_.end() ? 0 : it->second;
  }

  void ExpectServing() {
    StreamClient client(server_->port());
    client.Send(Get("/hello"));
    std::optional<Response> response = client.ReadResponse();
    ASSERT_TRUE(response.has_value());
    EXPECT_EQ(response->body(), "hello");
  }

  std::string first_bytes_;  // The head's body, sent first.
  std::unique_ptr<HttpServer> server_;

 private:
  void OnClosedCalled(const std::string& id) {
    std::lock_guard lock(mu_);
    ++closed_[id];
    changed_.notify_all();
  }

  std::mutex mu_;  // std:: so that ThreadSanitizer sees it.
  std::condition_variable changed_;
  std::map<std::string, StreamWriter> writers_;
  std::map<std::string, int> closed_;
};

TEST_F(StreamTest, ChunksReachTheClientAsTheyAreWritten) {
  Start();
  StreamClient client(server_->port());
  client.Send(Get("/stream"));
  std::optional<StreamWriter> writer = TakeWriter();
  ASSERT_TRUE(writer.has_value());
  client.ExpectResponse();
  ASSERT_TRUE(client.ReadHeader()) << client.parse_error();
  EXPECT_TRUE(writer->Write("data: one\n\n"));
  // Read before the second is written: nothing waits for more or for the end.
  EXPECT_EQ(client.NextChunk(), "data: one\n\n");
  EXPECT_TRUE(writer->Write("data: two\n\n"));
  EXPECT_EQ(client.NextChunk(), "data: two\n\n");
  EXPECT_TRUE(writer->Finish());
  EXPECT_EQ(client.NextChunk(), std::nullopt);
  EXPECT_TRUE(client.done()) << client.parse_error();
}

TEST_F(StreamTest, SendsAValidChunkedResponseWithTheHandlersHeaders) {
  first_bytes_ = ": hello\n\n";
  Start();
  StreamClient client(server_->port());
  client.Send(Get("/stream"));
  std::optional<StreamWriter> writer = TakeWriter();
  ASSERT_TRUE(writer.has_value());
  std::string expected = first_bytes_;
  for (int i = 0; i < 50; ++i) {
    const std::string event = absl::StrCat("data: {\"n\":", i, "}\n\n");
    expected += event;
    EXPECT_TRUE(writer->Write(event));
  }
  EXPECT_TRUE(writer->Write(""));  // Nothing to send; not the last chunk.
  EXPECT_TRUE(writer->Finish());
  EXPECT_FALSE(writer->Write("after the end"));
  EXPECT_FALSE(writer->Finish());
  client.ExpectResponse();
  std::string body;
  for (const std::string& chunk : client.ReadChunks()) body += chunk;
  ASSERT_TRUE(client.done()) << client.parse_error();
  EXPECT_EQ(body, expected);
  const Response& response = client.message();
  EXPECT_EQ(response.result(), bhttp::status::ok);
  EXPECT_TRUE(response.chunked());
  EXPECT_TRUE(response.keep_alive());
  EXPECT_EQ(response[bhttp::field::content_type], "text/event-stream");
  EXPECT_EQ(response[bhttp::field::cache_control], "no-cache");
  EXPECT_EQ(response["X-Arbiter-Route"], "r1");
  EXPECT_EQ(response.count(bhttp::field::content_length), 0);
}

TEST_F(StreamTest, KeepsTheConnectionAliveAfterAFinishedStream) {
  Start();
  StreamClient client(server_->port());
  for (int round = 0; round < 3; ++round) {
    client.Send(Get("/stream"));
    std::optional<StreamWriter> writer = TakeWriter();
    ASSERT_TRUE(writer.has_value());
    EXPECT_TRUE(writer->Write("data: x\n\n"));
    EXPECT_TRUE(writer->Finish());
    client.ExpectResponse();
    EXPECT_EQ(client.ReadChunks(), std::vector<std::string>{"data: x\n\n"});
    ASSERT_TRUE(client.done()) << client.parse_error();
    client.Send(Get("/hello"));
    std::optional<Response> hello = client.ReadResponse();
    ASSERT_TRUE(hello.has_value());
    EXPECT_EQ(hello->body(), "hello");
  }
  EXPECT_EQ(ClosedCalls(""), 0);  // Every stream ended as it should.
}

TEST_F(StreamTest, ClientDisconnectMidStreamCallsOnClosedWithin100Ms) {
  Start();
  StreamClient client(server_->port());
  client.Send(Get("/stream"));
  std::optional<StreamWriter> writer = TakeWriter();
  ASSERT_TRUE(writer.has_value());
  EXPECT_TRUE(writer->Write("data: one\n\n"));
  client.ExpectResponse();
  ASSERT_EQ(client.NextChunk(), "data: one\n\n");
  // The owner writes nothing more: only the read the server keeps posted
  // can see the client leave.
  client.Close();
  const absl::Time closed = absl::Now();
  ASSERT_TRUE(WaitClosed("", absl::Seconds(2)));
  EXPECT_LT(absl::Now() - closed, absl::Milliseconds(100));
  EXPECT_FALSE(writer->Write("data: two\n\n"));
  EXPECT_FALSE(writer->Finish());
  EXPECT_EQ(ClosedCalls(""), 1);
  ExpectServing();
}

TEST_F(StreamTest, DropsAClientThatDoesNotReadOnceTheQueueIsFull) {
  HttpServerOptions options;
  options.max_stream_queued_bytes = 256 << 10;
  Start(options);
  StreamClient client(server_->port(), /*receive_buffer=*/4096);
  client.Send(Get("/stream"));  // And reads nothing.
  std::optional<StreamWriter> writer = TakeWriter();
  ASSERT_TRUE(writer.has_value());
  const std::string piece(64 << 10, 'x');
  size_t written = 0;
  size_t most_queued = 0;
  // The kernel's socket buffers take a few MiB before the queue grows.
  while (written < (256u << 20) && writer->Write(piece)) {
    written += piece.size();
    most_queued = std::max(most_queued, writer->queued_bytes());
  }
  EXPECT_LT(written, 256u << 20) << "never dropped";
  EXPECT_LE(most_queued, options.max_stream_queued_bytes);
  EXPECT_TRUE(WaitClosed("", absl::Seconds(5)));
  EXPECT_FALSE(writer->Write("more"));
  EXPECT_FALSE(writer->Finish());
  EXPECT_EQ(ClosedCalls(""), 1);
  ExpectServing();
}

TEST_F(StreamTest, AStreamWriteThatTimesOutClosesAndCallsOnClosed) {
  HttpServerOptions options;
  options.max_stream_queued_bytes = 1 << 30;
  options.write_timeout = absl::Milliseconds(200);
  Start(options);
  StreamClient client(server_->port(), /*receive_buffer=*/4096);
  client.Send(Get("/stream"));  // And reads nothing.
  std::optional<StreamWriter> writer = TakeWriter();
  ASSERT_TRUE(writer.has_value());
  const std::string piece(1 << 20, 'x');
  // More than the socket buffers hold, so that a write waits.
  for (int i = 0; i < 32 && writer->Write(piece); ++i) {
  }
  EXPECT_TRUE(WaitClosed("", absl::Seconds(5)));
  EXPECT_FALSE(writer->Write("more"));
  ExpectServing();
}

TEST_F(StreamTest, WriteAndFinishAfterTheClientLeftAreHarmless) {
  Start();
  std::optional<StreamWriter> writer;
  {
    StreamClient client(server_->port());
    client.Send(Get("/stream"));
    writer = TakeWriter();
    ASSERT_TRUE(writer.has_value());
  }
  ASSERT_TRUE(WaitClosed("", absl::Seconds(2)));
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(writer->Write("data: late\n\n"));
  EXPECT_FALSE(writer->Finish());
  EXPECT_EQ(writer->queued_bytes(), 0u);
  StreamWriter moved = *std::move(writer);
  EXPECT_FALSE(moved.Write("again"));
  writer.reset();
  EXPECT_EQ(ClosedCalls(""), 1);
  ExpectServing();
}

TEST_F(StreamTest, AWriterDroppedUnfinishedSendsWhatItQueuedThenCloses) {
  Start();
  StreamClient client(server_->port());
  client.Send(Get("/stream"));
  {
    std::optional<StreamWriter> writer = TakeWriter();
    ASSERT_TRUE(writer.has_value());
    EXPECT_TRUE(writer->Write("data: partial\n\n"));
  }
  client.ExpectResponse();
  EXPECT_EQ(client.ReadChunks(), std::vector<std::string>{"data: partial\n\n"});
  EXPECT_FALSE(client.done());  // Truncated, not complete.
  EXPECT_TRUE(client.ClosedByServer());
  EXPECT_EQ(ClosedCalls(""), 0);  // Its owner is gone: nobody to tell.
}

TEST_F(StreamTest, HeadGetsTheStreamsHeadersAndNoBody) {
  Start();
  StreamClient client(server_->port());
  client.Send("HEAD /stream HTTP/1.1\r\nHost: test\r\n\r\n");
  std::optional<StreamWriter> writer = TakeWriter();
  ASSERT_TRUE(writer.has_value());
  EXPECT_TRUE(writer->Write("data: dropped\n\n"));
  EXPECT_TRUE(writer->Finish());
  client.ExpectResponse(/*head=*/true);
  ASSERT_TRUE(client.ReadHeader());
  EXPECT_TRUE(client.done());
  EXPECT_TRUE(client.message().chunked());
  // Had a body followed, this would not parse as the next response.
  client.Send(Get("/hello"));
  std::optional<Response> hello = client.ReadResponse();
  ASSERT_TRUE(hello.has_value()) << client.parse_error();
  EXPECT_EQ(hello->body(), "hello");
}

TEST_F(StreamTest, StreamsRawBytesToAnHttp10ClientAndClosesAtTheEnd) {
  Start();
  StreamClient client(server_->port());
  client.Send("GET /stream HTTP/1.0\r\n\r\n");
  std::optional<StreamWriter> writer = TakeWriter();
  ASSERT_TRUE(writer.has_value());
  EXPECT_TRUE(writer->Write("data: a\n\n"));
  EXPECT_TRUE(writer->Write("data: b\n\n"));
  EXPECT_TRUE(writer->Finish());
  const std::string bytes = client.ReadToClose();
  EXPECT_THAT(bytes, ::testing::StartsWith("HTTP/1.0 200 OK\r\n"));
  EXPECT_THAT(bytes, Not(HasSubstr("chunked")));
  EXPECT_THAT(bytes, ::testing::EndsWith("\r\n\r\ndata: a\n\ndata: b\n\n"));
}

TEST_F(StreamTest, OnClosedIsCalledWhenTheServerIsDestroyedFirst) {
  Start();
  StreamClient client(server_->port());
  client.Send(Get("/stream"));
  std::optional<StreamWriter> writer = TakeWriter();
  ASSERT_TRUE(writer.has_value());
  server_.reset();
  EXPECT_EQ(ClosedCalls(""), 1);
  EXPECT_FALSE(writer->Write("data: late\n\n"));
  EXPECT_FALSE(writer->Finish());
}

// Many streams written from many threads at once while their clients read
// or leave (run under ThreadSanitizer in concurrency_test).
TEST_F(StreamTest, ManyStreamsWrittenFromManyThreads) {
  constexpr int kStreams = 8;
  constexpr int kWritersPerStream = 3;
  constexpr int kEventsPerWriter = 200;
  HttpServerOptions options;
  options.io_threads = 2;
  Start(options);
  std::vector<std::unique_ptr<StreamClient>> clients;
  for (int i = 0; i < kStreams; ++i) {
    clients.push_back(std::make_unique<StreamClient>(server_->port()));
    clients.back()->Send(Get(absl::StrCat("/stream?id=", i)));
  }
  std::vector<std::thread> threads;
  std::vector<std::string> bodies(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    // Odd clients leave after their first chunk; even ones read it all.
    threads.emplace_back([&, i] {
      StreamClient& client = *clients[i];
      client.ExpectResponse();
      if (i % 2 == 1) {
        (void)client.NextChunk();
        client.Close();
        return;
      }
      for (const std::string& chunk : client.ReadChunks()) bodies[i] += chunk;
    });
  }
  std::vector<std::shared_ptr<StreamWriter>> writers;
  for (int i = 0; i < kStreams; ++i) {
    std::optional<StreamWriter> writer = TakeWriter(absl::StrCat(i));
    ASSERT_TRUE(writer.has_value());
    writers.push_back(std::make_shared<StreamWriter>(*std::move(writer)));
  }
  std::vector<std::thread> writing;
  for (int i = 0; i < kStreams; ++i) {
    for (int w = 0; w < kWritersPerStream; ++w) {
      writing.emplace_back([&, i, w] {
        for (int n = 0; n < kEventsPerWriter; ++n) {
          if (!writers[i]->Write(absl::StrCat(w, " ", n, "\n")) && i % 2 == 0) {
            ADD_FAILURE() << "stream " << i << " dropped";
            return;
          }
          (void)writers[i]->queued_bytes();
        }
      });
    }
  }
  for (std::thread& thread : writing) thread.join();
  for (int i = 0; i < kStreams; i += 2) EXPECT_TRUE(writers[i]->Finish());
  for (std::thread& thread : threads) thread.join();
  for (int i = 0; i < kStreams; ++i) {
    if (i % 2 == 1) {
      // Gone: its writes may have been taken by the socket before it left.
      EXPECT_TRUE(WaitClosed(absl::StrCat(i), absl::Seconds(5))) << i;
      continue;
    }
    EXPECT_TRUE(clients[i]->done()) << i << clients[i]->parse_error();
    // Each writer's events arrive whole and in its order.
    std::vector<int> next(kWritersPerStream, 0);
    for (absl::string_view line :
         absl::StrSplit(bodies[i], '\n', absl::SkipEmpty())) {
      std::vector<absl::string_view> fields = absl::StrSplit(line, ' ');
      ASSERT_EQ(fields.size(), 2u) << line;
      int w = 0, n = 0;
      ASSERT_TRUE(absl::SimpleAtoi(fields[0], &w) &&
                  absl::SimpleAtoi(fields[1], &n))
          << line;
      ASSERT_LT(w, kWritersPerStream);
      EXPECT_EQ(n, next[w]) << "stream " << i << " writer " << w;
      next[w] = n + 1;
    }
    EXPECT_EQ(next, std::vector<int>(kWritersPerStream, kEventsPerWriter));
    EXPECT_EQ(ClosedCalls(absl::StrCat(i)), 0) << i;
  }
  writers.clear();
  ExpectServing();
}

}  // namespace
}  // namespace arbiter::http
