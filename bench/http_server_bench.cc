// gateway/http's server with trivial handlers, for a load generator (wrk)
// to measure the server itself; bench/http_server_bench.sh runs it beside
// nginx. Prints "listening on PORT" and serves until stdin closes.
//
//   ./build/bench/http_server_bench [--io-threads 2] [--port 0] [--later]
//
// GET /hello answers "hello" (nginx serves the same bytes from a file);
// POST /v1/chat/completions answers a fixed chat.completion. With --later,
// the handlers answer from another thread, as a front waiting on a backend
// does.

#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "boost/asio/executor_work_guard.hpp"
#include "boost/asio/io_context.hpp"
#include "boost/asio/post.hpp"
#include "gateway/http/http_server.h"

namespace arbiter::http {
namespace {

constexpr char kCompletion[] =
    R"({"id":"chatcmpl-1","object":"chat.completion","created":1700000000,)"
    R"("model":"mock","choices":[{"index":0,"message":{"role":"assistant",)"
    R"("content":"Hello from the mock upstream."},"finish_reason":"stop"}],)"
    R"("usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}})";

Response Answer(const std::string& content_type, const std::string& body) {
  Response response(boost::beast::http::status::ok, 11);
  response.set(boost::beast::http::field::content_type, content_type);
  response.body() = body;
  return response;
}

int Main(int argc, char** argv) {
  int io_threads = 2;
  int port = 0;
  bool later = false;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--later") {
      later = true;
    } else if (i + 1 < argc && flag == "--io-threads" &&
               absl::SimpleAtoi(argv[i + 1], &io_threads)) {
      ++i;
    } else if (i + 1 < argc && flag == "--port" &&
               absl::SimpleAtoi(argv[i + 1], &port)) {
      ++i;
    } else {
      std::cerr << "usage: http_server_bench [--io-threads N] [--port P] "
                   "[--later]\n";
      return 2;
    }
  }
  // One thread standing for the backends' I/O thread, when answering later.
  boost::asio::io_context backend;
  auto work = boost::asio::make_work_guard(backend);
  std::thread backend_thread([&] { backend.run(); });

  auto handler = [&backend, later](std::string content_type,
                                   std::string body) -> Handler {
    return [&backend, later, content_type, body](Request, Responder responder) {
      if (!later) {
        std::move(responder).Send(Answer(content_type, body));
        return;
      }
      boost::asio::post(backend, [content_type, body,
                                  responder = std::move(responder)]() mutable {
        std::move(responder).Send(Answer(content_type, body));
      });
    };
  };
  Routes routes;
  routes.Add(Verb::get, "/hello", handler("text/plain", "hello\n"));
  routes.Add(Verb::post, "/v1/chat/completions",
             handler("application/json", kCompletion));
  HttpServerOptions options;
  options.address = "127.0.0.1:" + std::to_string(port);
  options.io_threads = io_threads;
  auto server = HttpServer::Start(options, std::move(routes));
  if (!server.ok()) {
    std::cerr << server.status() << "\n";
    return 1;
  }
  std::cout << "listening on " << (*server)->port() << std::endl;
  char buffer[256];
  while (std::fread(buffer, 1, sizeof(buffer), stdin) > 0) {
  }
  server->reset();
  work.reset();
  backend_thread.join();
  return 0;
}

}  // namespace
}  // namespace arbiter::http

int main(int argc, char** argv) { return arbiter::http::Main(argc, argv); }
