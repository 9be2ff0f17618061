// The embedding-server client against a real HTTP server on loopback that
// answers the way OpenAI-compatible servers do, and the ways they fail.

#include "retrieval/embedding_client.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace arbiter::retrieval {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int kDim = 4;

// Input "t<k>" embeds to (k + 1, 1, 0, 0) before normalisation, so the
// client's output says which input each vector came from.
nlohmann::json VectorFor(const std::string& text, int dim) {
  nlohmann::json vector = nlohmann::json::array();
  vector.push_back(std::stod(text.substr(1)) + 1);
  vector.push_back(1.0);
  for (int i = 2; i < dim; ++i) vector.push_back(0.0);
  return vector;
}

// A well-behaved answer, items in reversed index order, two tokens a text.
std::string Answer(const nlohmann::json& request, int dim = kDim) {
  const nlohmann::json& input = request["input"];
  nlohmann::json data = nlohmann::json::array();
  for (size_t i = input.size(); i-- > 0;) {
    data.push_back({{"object", "embedding"},
                    {"index", i},
                    {"embedding", VectorFor(input[i], dim)}});
  }
  nlohmann::json answer = {{"object", "list"}, {"data", data}};
  answer["usage"] = {{"prompt_tokens", 2 * input.size()},
                     {"total_tokens", 2 * input.size()}};
  return answer.dump();
}

std::vector<std::string> Texts(int n) {
  std::vector<std::string> texts;
  for (int i = 0; i < n; ++i) texts.push_back(absl::StrCat("t", i));
  return texts;
}

// A port nothing listens on: bound once, then closed.
int ClosedPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

class EmbeddingClientTest : public ::testing::Test {
 protected:
  // Answers one request; `call` counts from 1.
  using Handler = std::function<void(const nlohmann::json& request, int call,
                                     httplib::Response& response)>;

  void SetUp() override {
    handler_ = [](const nlohmann::json& request, int,
                  httplib::Response& response) {
      response.set_content(Answer(request), "application/json");
    };
    server_.Post("/v1/embeddings", [this](const httplib::Request& request,
                                          httplib::Response& response) {
      Handler handler;
      int call;
      {
        std::lock_guard<std::mutex> lock(mu_);
        call = ++calls_;
        bodies_.push_back(request.body);
        auth_ = request.get_header_value("Authorization");
        handler = handler_;
      }
      handler(nlohmann::json::parse(request.body), call, response);
    });
    server_.set_tcp_nodelay(true);  // Else Nagle adds 40 ms per answer.
    server_.new_task_queue = [] { return new httplib::ThreadPool(16); };
    port_ = server_.bind_to_any_port("127.0.0.1");
    ASSERT_GT(port_, 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) absl::SleepFor(absl::Milliseconds(1));
  }

  void TearDown() override {
    release_.Notify();  // Slow handlers return now.
    server_.stop();
    thread_.join();
  }

  void Serve(Handler handler) {
    std::lock_guard<std::mutex> lock(mu_);
    handler_ = std::move(handler);
  }

  // Fast retries, so the suite stays quick.
  EmbeddingServerOptions Options() const {
    EmbeddingServerOptions options;
    options.url = absl::StrCat("http://127.0.0.1:", port_, "/v1");
    options.model = "test-embedder";
    options.dim = kDim;
    options.timeout = absl::Seconds(2);
    options.backoff = absl::Milliseconds(1);
    return options;
  }

  std::unique_ptr<EmbeddingClient> Client(EmbeddingServerOptions options) {
    auto client = EmbeddingClient::Create(std::move(options));
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(*client) : nullptr;
  }

  int calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  std::vector<std::string> bodies() {
    std::lock_guard<std::mutex> lock(mu_);
    return bodies_;
  }
  std::string auth() {
    std::lock_guard<std::mutex> lock(mu_);
    return auth_;
  }

  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  absl::Notification release_;
  std::mutex mu_;
  Handler handler_;
  int calls_ = 0;
  std::vector<std::string> bodies_;
  std::string auth_;
};

TEST_F(EmbeddingClientTest, BatchesAndReturnsUnitVectorsInInputOrder) {
  auto client = Client(Options());
  ASSERT_NE(client, nullptr);
  const std::vector<std::string> texts = Texts(150);

  auto embeddings = client->Embed(texts);

  ASSERT_TRUE(embeddings.ok()) << embeddings.status();
  ASSERT_EQ(embeddings->vectors.size(), 150u);
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::vector<float>& v = embeddings->vectors[i];
    ASSERT_EQ(v.size(), static_cast<size_t>(kDim));
    double norm = 0;
    for (float x : v) norm += x * x;
    EXPECT_NEAR(norm, 1.0, 1e-5) << "texts[" << i << "]";
    EXPECT_NEAR(v[0] / v[1], i + 1.0, 1e-3) << "texts[" << i << "]";
  }
  EXPECT_EQ(embeddings->tokens, 300);
  EXPECT_EQ(calls(), 3);
  std::vector<size_t> batch_sizes;
  for (const std::string& body : bodies()) {
    nlohmann::json request = nlohmann::json::parse(body);
    EXPECT_EQ(request["model"], "test-embedder");
    EXPECT_EQ(request["encoding_format"], "float");
    batch_sizes.push_back(request["input"].size());
  }
  EXPECT_THAT(batch_sizes, ElementsAre(64u, 64u, 22u));
  EmbeddingClient::Counters counters = client->counters();
  EXPECT_EQ(counters.requests, 3);
  EXPECT_EQ(counters.retries, 0);
  EXPECT_EQ(counters.failures, 0);
  EXPECT_EQ(counters.tokens, 300);
  EXPECT_EQ(client->dim(), kDim);
}

TEST_F(EmbeddingClientTest, SendsBearerTokenOnlyWhenConfigured) {
  EmbeddingServerOptions options = Options();
  options.api_key = "sk-secret";
  auto with_key = Client(options);
  ASSERT_NE(with_key, nullptr);
  ASSERT_TRUE(with_key->Embed(Texts(1)).ok());
  EXPECT_EQ(auth(), "Bearer sk-secret");

  auto without_key = Client(Options());
  ASSERT_NE(without_key, nullptr);
  ASSERT_TRUE(without_key->Embed(Texts(1)).ok());
  EXPECT_EQ(auth(), "");
}

TEST_F(EmbeddingClientTest, RetriesServerErrorsThenSucceeds) {
  Serve(
      [](const nlohmann::json& request, int call, httplib::Response& response) {
        if (call <= 2) {
          response.status = 503;
          response.set_content("loading model", "text/plain");
          return;
        }
        response.set_content(Answer(request), "application/json");
      });
  auto client = Client(Options());
  ASSERT_NE(client, nullptr);

  auto embeddings = client->Embed(Texts(3));

  ASSERT_TRUE(embeddings.ok()) << embeddings.status();
  EXPECT_EQ(embeddings->vectors.size(), 3u);
  EXPECT_EQ(calls(), 3);
  EXPECT_EQ(client->counters().retries, 2);
  EXPECT_EQ(client->counters().requests, 3);
  EXPECT_EQ(client->counters().failures, 0);
}

TEST_F(EmbeddingClientTest, HonoursRetryAfterOnTooManyRequests) {
  Serve(
      [](const nlohmann::json& request, int call, httplib::Response& response) {
        if (call == 1) {
          response.status = 429;
          response.set_header("Retry-After", "0");
          response.set_content("slow down", "text/plain");
          return;
        }
        response.set_content(Answer(request), "application/json");
      });
  EmbeddingServerOptions options = Options();
  // Our own backoff would wait at least a second: only Retry-After is quick.
  options.backoff = absl::Seconds(2);
  auto client = Client(options);
  ASSERT_NE(client, nullptr);

  const absl::Time start = absl::Now();
  auto embeddings = client->Embed(Texts(2));

  ASSERT_TRUE(embeddings.ok()) << embeddings.status();
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(800));
  EXPECT_EQ(calls(), 2);
  EXPECT_EQ(client->counters().retries, 1);
}

TEST_F(EmbeddingClientTest, GivesUpOnPersistentServerErrors) {
  Serve([](const nlohmann::json&, int, httplib::Response& response) {
    response.status = 502;
    response.set_content("upstream gone", "text/plain");
  });
  EmbeddingServerOptions options = Options();
  options.max_retries = 2;
  auto client = Client(options);
  ASSERT_NE(client, nullptr);

  auto embeddings = client->Embed(Texts(2));

  EXPECT_EQ(embeddings.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(embeddings.status().message(), HasSubstr("HTTP 502"));
  EXPECT_THAT(embeddings.status().message(), HasSubstr("upstream gone"));
  EXPECT_THAT(embeddings.status().message(), HasSubstr("after 3 attempts"));
  EXPECT_THAT(embeddings.status().message(),
              HasSubstr(absl::StrCat("http://127.0.0.1:", port_)));
  EXPECT_EQ(calls(), 3);
  EXPECT_EQ(client->counters().failures, 1);
}

TEST_F(EmbeddingClientTest, DoesNotRetryBadRequest) {
  Serve([](const nlohmann::json&, int, httplib::Response& response) {
    response.status = 400;
    response.set_content(
        R"({"error":{"message":"input is longer than 512 tokens"}})",
        "application/json");
  });
  auto client = Client(Options());
  ASSERT_NE(client, nullptr);

  auto embeddings = client->Embed(Texts(2));

  EXPECT_EQ(embeddings.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(embeddings.status().message(), HasSubstr("HTTP 400"));
  EXPECT_THAT(embeddings.status().message(),
              HasSubstr("input is longer than 512 tokens"));
  EXPECT_EQ(calls(), 1);
  EXPECT_EQ(client->counters().retries, 0);
}

TEST_F(EmbeddingClientTest, MapsAuthErrorsToSpecificCodes) {
  Serve([](const nlohmann::json& request, int, httplib::Response& response) {
    response.status = request["model"] == "forbidden" ? 403 : 401;
    response.set_content("no", "text/plain");
  });
  EmbeddingServerOptions options = Options();
  auto unauthenticated = Client(options);
  ASSERT_NE(unauthenticated, nullptr);
  EXPECT_EQ(unauthenticated->Embed(Texts(1)).status().code(),
            absl::StatusCode::kUnauthenticated);
  options.model = "forbidden";
  auto forbidden = Client(options);
  ASSERT_NE(forbidden, nullptr);
  EXPECT_EQ(forbidden->Embed(Texts(1)).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(calls(), 2);
}

TEST_F(EmbeddingClientTest, WrongDimensionNamesBothSizes) {
  Serve([](const nlohmann::json& request, int, httplib::Response& response) {
    response.set_content(Answer(request, /*dim=*/6), "application/json");
  });
  auto client = Client(Options());
  ASSERT_NE(client, nullptr);

  auto embeddings = client->Embed(Texts(2));

  EXPECT_EQ(embeddings.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(embeddings.status().message(), HasSubstr("returned 6-dim"));
  EXPECT_THAT(embeddings.status().message(), HasSubstr("expects 4"));
  EXPECT_EQ(calls(), 1);
}

TEST_F(EmbeddingClientTest, SlowServerTimesOutWithDeadlineExceeded) {
  Serve(
      [this](const nlohmann::json& request, int, httplib::Response& response) {
        release_.WaitForNotificationWithTimeout(absl::Seconds(3));
        response.set_content(Answer(request), "application/json");
      });
  EmbeddingServerOptions options = Options();
  options.timeout = absl::Milliseconds(200);
  options.max_retries = 1;
  auto client = Client(options);
  ASSERT_NE(client, nullptr);

  const absl::Time start = absl::Now();
  auto embeddings = client->Embed(Texts(1));

  EXPECT_EQ(embeddings.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(embeddings.status().message(), HasSubstr("after 2 attempts"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_EQ(client->counters().requests, 2);
}

TEST_F(EmbeddingClientTest, ClosedPortIsUnavailable) {
  EmbeddingServerOptions options = Options();
  options.url = absl::StrCat("http://127.0.0.1:", ClosedPort(), "/v1");
  options.max_retries = 1;
  auto client = Client(options);
  ASSERT_NE(client, nullptr);

  auto embeddings = client->Embed(Texts(1));

  EXPECT_EQ(embeddings.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(embeddings.status().message(), HasSubstr(options.url));
  EXPECT_THAT(embeddings.status().message(), HasSubstr("after 2 attempts"));
  EXPECT_EQ(client->counters().retries, 1);
  EXPECT_EQ(client->counters().failures, 1);
}

TEST_F(EmbeddingClientTest, MalformedAnswersAreInternal) {
  struct Case {
    std::string body;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"<html>oops</html>", "malformed JSON"},
      {R"({"object":"list"})", "malformed JSON"},
      // One vector for two inputs.
      {R"({"data":[{"index":0,"embedding":[1,0,0,0]}]})", "malformed JSON"},
      // Index 1 missing, index 0 twice.
      {R"({"data":[{"index":0,"embedding":[1,0,0,0]},
                   {"index":0,"embedding":[0,1,0,0]}]})",
       "malformed JSON"},
      {R"({"data":[{"index":0,"embedding":"AAAA"},
                   {"index":1,"embedding":"AAAA"}]})",
       "malformed JSON"},
      // 1e39 is no float.
      {R"({"data":[{"index":0,"embedding":[1e39,0,0,0]},
                   {"index":1,"embedding":[0,1,0,0]}]})",
       "non-finite"},
      {R"({"data":[{"index":0,"embedding":[1,0,0,0]},
                   {"index":1,"embedding":[0,0,0,0]}]})",
       "all-zero vector for texts[1]"},
  };
  for (const Case& c : cases) {
    Serve([&c](const nlohmann::json&, int, httplib::Response& response) {
      response.set_content(c.body, "application/json");
    });
    auto client = Client(Options());
    ASSERT_NE(client, nullptr);
    auto embeddings = client->Embed(Texts(2));
    EXPECT_EQ(embeddings.status().code(), absl::StatusCode::kInternal)
        << c.body;
    EXPECT_THAT(embeddings.status().message(), HasSubstr(c.message)) << c.body;
    EXPECT_EQ(client->counters().retries, 0) << c.body;
  }
}

// Every field the client reads, of the wrong type or missing: INTERNAL
// naming the field, never an abort.
TEST_F(EmbeddingClientTest, MalformedAnswersNameTheField) {
  struct Case {
    std::string body;
    std::string message;
  };
  const std::vector<Case> cases = {
      {R"([1, 2])", "the document: expected an object, got an array"},
      {R"({"data":{"index":0}})", "data: expected an array, got an object"},
      {R"({"data":null})", "data: expected an array, got null"},
      {R"({"data":[1, 2]})", "data[0]: expected an object, got a number"},
      {R"({"data":[{"index":"0","embedding":[1,0,0,0]},
                   {"index":1,"embedding":[0,1,0,0]}]})",
       "data[0].index: expected an integer, got a string"},
      {R"({"data":[{"index":0,"embedding":[1,0,0,0]},
                   {"index":7,"embedding":[0,1,0,0]}]})",
       "data[1].index: 7 is out of range for a batch of 2"},
      {R"({"data":[{"index":0,"embedding":[1,0,0,0]},
                   {"index":1}]})",
       "data[1].embedding: missing"},
      {R"({"data":[{"index":0,"embedding":[1,0,0,0]},
                   {"index":1,"embedding":{"x":1}}]})",
       "data[1].embedding: expected an array, got an object"},
      {R"({"data":[{"index":0,"embedding":[1,0,"0",0]},
                   {"index":1,"embedding":[0,1,0,0]}]})",
       "data[0].embedding[2]: expected a number, got a string"},
      {R"({"data":[{"index":0,"embedding":[1,0,0,0]},
                   {"index":1,"embedding":[0,1,null,0]}]})",
       "data[1].embedding[2]: expected a number, got null"},
      {R"({"data":[{"index":0,"embedding":[1,0,0,0]},
                   {"index":1,"embedding":[0,1,0,0]}],
           "usage":{"prompt_tokens":"4"}})",
       "usage.prompt_tokens: expected an integer, got a string"},
      {R"({"data":[{"index":0,"embedding":[1,0,0,0]},
                   {"index":1,"embedding":[0,1,0,0]}],
           "usage":{"prompt_tokens":-4}})",
       "usage.prompt_tokens: must be >= 0"},
      {R"({"data":[{"index":0,"embedding":[1,0,0,0]},
                   {"index":1,"embedding":[0,1,0,0]}],"usage":7})",
       "usage: expected an object, got a number"},
      {R"({"data":[{"index":0,"embedding":[1,0,0,0]},)",
       "not valid JSON at byte"},
  };
  for (const Case& c : cases) {
    Serve([&c](const nlohmann::json&, int, httplib::Response& response) {
      response.set_content(c.body, "application/json");
    });
    auto client = Client(Options());
    ASSERT_NE(client, nullptr);
    auto embeddings = client->Embed(Texts(2));
    EXPECT_EQ(embeddings.status().code(), absl::StatusCode::kInternal)
        << c.body;
    EXPECT_THAT(embeddings.status().message(),
                HasSubstr(absl::StrCat("returned malformed JSON: ", c.message)))
        << c.body;
  }
}

TEST_F(EmbeddingClientTest, ReadsAnAnswerThatIsNotUtf8) {
  Serve([](const nlohmann::json& request, int, httplib::Response& response) {
    std::string answer = Answer(request);
    // A Latin-1 byte in a field the client does not read.
    answer.insert(1, "\"model\":\"caf\xe9\",");
    response.set_content(answer, "application/json");
  });
  auto client = Client(Options());
  ASSERT_NE(client, nullptr);
  auto embeddings = client->Embed(Texts(2));
  ASSERT_TRUE(embeddings.ok()) << embeddings.status();
  EXPECT_EQ(embeddings->vectors.size(), 2u);
}

TEST_F(EmbeddingClientTest, CutsOffAnAnswerOverMaxResponseBytes) {
  // 100 MB without a length, then the same with one.
  constexpr size_t kHuge = 100u << 20;
  for (bool chunked : {true, false}) {
    Serve([chunked](const nlohmann::json&, int, httplib::Response& response) {
      auto write = [](httplib::DataSink& sink) {
        static const std::string chunk(64 << 10, ' ');
        return sink.write(chunk.data(), chunk.size());
      };
      if (chunked) {
        response.set_chunked_content_provider(
            "application/json",
            [write, sent = size_t{0}](size_t, httplib::DataSink& sink) mutable {
              if (sent >= kHuge) {
                sink.done();
                return true;
              }
              sent += 64 << 10;
              return write(sink);
            });
      } else {
        response.set_content_provider(
            kHuge, "application/json",
            [write](size_t, size_t, httplib::DataSink& sink) {
              return write(sink);
            });
      }
    });
    EmbeddingServerOptions options = Options();
    options.max_response_bytes = 1 << 20;
    auto client = Client(options);
    ASSERT_NE(client, nullptr);
    const absl::Time start = absl::Now();
    auto embeddings = client->Embed(Texts(2));
    EXPECT_EQ(embeddings.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(embeddings.status().message(),
                HasSubstr("larger than embedding_server.max_response_bytes "
                          "(1048576 bytes)"));
    EXPECT_LT(absl::Now() - start, absl::Seconds(2));
    EXPECT_EQ(client->counters().retries, 0);  // Would be as large again.
  }
}

TEST_F(EmbeddingClientTest, EmptyInputSendsNothing) {
  auto client = Client(Options());
  ASSERT_NE(client, nullptr);
  auto none = client->Embed({});
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->vectors.empty());

  std::vector<std::string> texts = Texts(5);
  texts[3].clear();
  auto with_empty = client->Embed(texts);
  EXPECT_EQ(with_empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(with_empty.status().message(), HasSubstr("texts[3]: empty text"));
  EXPECT_EQ(calls(), 0);
}

TEST_F(EmbeddingClientTest, ConcurrentCallersShareOneClient) {
  auto client = Client(Options());
  ASSERT_NE(client, nullptr);
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  // Four threads: httplib's listen backlog of 5 drops more simultaneous
  // connects, which then wait a second for the SYN to be resent.
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        auto embeddings = client->Embed(Texts(10));
        if (embeddings.ok() && embeddings->vectors.size() == 10) ++ok;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(ok.load(), 40);
  EXPECT_EQ(client->counters().requests, 40);
  EXPECT_EQ(client->counters().tokens, 800);
}

TEST(EmbeddingClientOptionsTest, RejectsBadOptionsNamingTheField) {
  auto options = [] {
    EmbeddingServerOptions options;
    options.url = "http://127.0.0.1:8080/v1";
    options.dim = 384;
    return options;
  };
  ASSERT_TRUE(EmbeddingClient::Create(options()).ok());

  struct Case {
    std::function<void(EmbeddingServerOptions&)> change;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](auto& o) { o.url = "127.0.0.1:8080/v1"; },
       "embedding_server.url: must start with http:// or https://"},
      {[](auto& o) { o.url = ""; }, "embedding_server.url"},
      {[](auto& o) { o.url = "http://"; }, "embedding_server.url"},
      {[](auto& o) { o.dim = 0; }, "embedding_server.dim: must be >= 1"},
      {[](auto& o) { o.max_batch = 0; }, "embedding_server.max_batch"},
      {[](auto& o) { o.max_retries = -1; }, "embedding_server.max_retries"},
      {[](auto& o) { o.timeout = absl::ZeroDuration(); },
       "embedding_server.timeout"},
      {[](auto& o) { o.connect_timeout = -absl::Seconds(1); },
       "embedding_server.connect_timeout"},
      {[](auto& o) { o.backoff = -absl::Seconds(1); },
       "embedding_server.backoff"},
      {[](auto& o) { o.api_key = "key\r\nX-Injected: 1"; },
       "embedding_server.api_key"},
      {[](auto& o) { o.max_response_bytes = 0; },
       "embedding_server.max_response_bytes"},
  };
  for (const Case& c : cases) {
    EmbeddingServerOptions bad = options();
    c.change(bad);
    auto client = EmbeddingClient::Create(bad);
    EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument)
        << c.message;
    EXPECT_THAT(client.status().message(), HasSubstr(c.message));
  }
}

}  // namespace
}  // namespace arbiter::retrieval
