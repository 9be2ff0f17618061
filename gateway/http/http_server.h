#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "boost/beast/http/message.hpp"
#include "boost/beast/http/string_body.hpp"
#include "boost/beast/http/verb.hpp"

namespace arbiter::http {

using Verb = boost::beast::http::verb;
using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;

class Connection;  // One client connection; private to the server.
struct ServerState;

// Answers one request exactly once, from any thread and at any time: a
// handler may reply before it returns or keep the Responder and reply later.
// Destroyed without a reply, it answers 500, so a handler's bug never leaves
// a client waiting. Replies after the server is gone are dropped.
class Responder final {
 public:
  Responder(Responder&& other) noexcept = default;
  Responder& operator=(Responder&& other) noexcept;
  ~Responder();

  Responder(const Responder&) = delete;
  Responder& operator=(const Responder&) = delete;

  // The server fills in the version, Content-Length and keep-alive, and
  // sends only the headers to a HEAD request.
  void Send(Response response) &&;

 private:
  friend class Connection;
  Responder(std::shared_ptr<ServerState> state,
            std::shared_ptr<Connection> connection)
      : state_(std::move(state)), connection_(std::move(connection)) {}

  // Declared first so that it is released last: the connection's socket
  // belongs to the server's I/O context, which the state owns.
  std::shared_ptr<ServerState> state_;
  std::shared_ptr<Connection> connection_;  // Null once answered.
};

// Called on an I/O thread, concurrently with other requests: it must be
// thread-safe and must not block (answer later through the Responder).
// Exceptions are caught, logged and answered with 500.
using Handler = absl::AnyInvocable<void(Request, Responder) const>;

// Method + exact path -> handler; the query string is not part of the path.
// A GET route also answers HEAD. Unknown paths get 404, known paths with
// another method 405 with Allow.
//
//   Routes routes;
//   routes.Add(Verb::get, "/metrics", MetricsHandler(registry));
class Routes final {
 public:
  Routes() = default;
  Routes(Routes&&) = default;
  Routes& operator=(Routes&&) = default;

  Routes& Add(Verb method, std::string path, Handler handler);

  // What the server does with a request for `path`: the handler to call, or
  // none, with the methods the path allows (empty: unknown path).
  struct Match {
    const Handler* handler = nullptr;
    std::string allow;  // "GET, HEAD" for 405's Allow header.
  };
  [[nodiscard]] Match Find(Verb method, absl::string_view path) const;

 private:
  absl::flat_hash_map<std::string, std::vector<std::pair<Verb, Handler>>>
      by_path_;
};

struct HttpServerOptions {
  // host:port (IPv6 as [::1]:port); port 0 lets the OS choose, see port().
  std::string address = "127.0.0.1:0";
  // Threads running the event loop; handlers run on them.
  int io_threads = 2;
  // Limit of the request line (longer: 414) and, separately, of the header
  // fields (longer: 431).
  size_t max_header_bytes = 8 << 10;
  // Longer bodies get 413.
  size_t max_body_bytes = 1 << 20;
  // From waiting for a request (also on a kept-alive connection) to having
  // read all of it; then the connection is closed.
  absl::Duration read_timeout = absl::Seconds(30);
  // For sending one response to a client that does not read it.
  absl::Duration write_timeout = absl::Seconds(30);
};

// An event-driven HTTP/1.1 server (Boost.Beast over Asio): a fixed number of
// I/O threads serve every connection, with keep-alive and pipelining. A
// request that cannot be parsed gets 400 (414, 431, 413 for the limits
// above) and its connection is closed; nothing a client sends ends the
// process. No exception escapes into an I/O thread.
class HttpServer final {
 public:
  // Listens and starts serving. UNAVAILABLE naming the address when it
  // cannot listen (e.g. the port is already in use).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      HttpServerOptions options, Routes routes);
  // Stops listening, joins the I/O threads and closes every connection.
  ~HttpServer();

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  [[nodiscard]] int port() const { return port_; }

 private:
  HttpServer() = default;

  std::shared_ptr<ServerState> state_;
  std::vector<std::thread> threads_;
  int port_ = 0;
};

}  // namespace arbiter::http
