#pragma once

#include <cstddef>
#include <memory>
#include <optional>
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
#include "gateway/loop_guest.h"
#include "gateway/tls/tls_identity.h"

namespace arbiter::http {

using Verb = boost::beast::http::verb;
using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;

class Connection;    // One client connection; private to the server.
struct StreamState;  // What a StreamWriter shares with its connection.
class Worker;        // One I/O thread and the connections it serves.
class Listener;      // The listening socket.
struct Shared;       // What every worker reads.

// Called at most once, on an I/O thread, when the client of an exchange that
// is not over yet goes away: it closed the connection (or shut down its
// sending side), the connection failed, a write timed out, a stream's queue
// overflowed, or the server was destroyed (then on the destroying thread).
// It must not block; the owner cancels its work. Never called once Send or
// Finish has returned.
using OnClosed = absl::AnyInvocable<void()>;

// The body of a streamed response, sent as it is written: chunked transfer
// encoding to an HTTP/1.1 client, the raw bytes then the end of the
// connection to an HTTP/1.0 one, nothing to a HEAD request. Write and Finish
// may be called from any thread, also concurrently; once the stream is over
// (finished, dropped, or its client gone) they return false and do nothing.
// Destroyed unfinished, it sends what was queued and closes the connection,
// so that the client sees a truncated response rather than a complete one.
class StreamWriter final {
 public:
  StreamWriter(StreamWriter&& other) noexcept = default;
  StreamWriter& operator=(StreamWriter&& other) noexcept;
  ~StreamWriter();

  StreamWriter(const StreamWriter&) = delete;
  StreamWriter& operator=(const StreamWriter&) = delete;

  // Queues `bytes` (sent in order, as one chunk or with the bytes written
  // after them). When more than HttpServerOptions.max_stream_queued_bytes
  // would wait for a client that does not read, the stream is dropped: the
  // connection closes, on_closed is called and this returns false.
  bool Write(std::string bytes);
  // Ends the response (the last chunk); a kept-alive connection then serves
  // its next request.
  bool Finish();
  // Bytes written but not yet taken by the client's socket.
  [[nodiscard]] size_t queued_bytes() const;

 private:
  friend class Responder;
  StreamWriter(std::shared_ptr<Worker> worker,
               std::shared_ptr<Connection> connection,
               std::shared_ptr<StreamState> stream);

  // Wakes the connection when the stream has something new to send.
  void Notify(bool wake);

  // Declared first so that it is released last: the connection's socket
  // belongs to the worker's I/O context.
  std::shared_ptr<Worker> worker_;
  std::shared_ptr<Connection> connection_;
  std::shared_ptr<StreamState> stream_;  // Null once moved from.
};

// Answers one request exactly once, from any thread and at any time: a
// handler may reply before it returns or keep the Responder and reply later.
// Destroyed without a reply, it answers 500, so a handler's bug never leaves
// a client waiting. Replies after the client or the server is gone are
// dropped.
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

  // Answers with a stream: `head`'s status and fields (e.g. Content-Type:
  // text/event-stream) now, its body, if any, as the stream's first bytes,
  // and the rest through the writer. `on_closed` (see OnClosed) replaces
  // one given to OnClientGone. If the client is already gone, the writer's
  // calls return false and on_closed is called on an I/O thread.
  [[nodiscard]] StreamWriter StartStream(Response head,
                                         OnClosed on_closed = nullptr) &&;

  // Tells the owner, through `on_closed` (see OnClosed), that the client went
  // away before the answer, so that it can cancel its work; its late Send is
  // dropped quietly. Called on an I/O thread, at once if the client is
  // already gone. A later call replaces the callback.
  void OnClientGone(OnClosed on_closed);

 private:
  friend class Connection;
  Responder(std::shared_ptr<Worker> worker,
            std::shared_ptr<Connection> connection)
      : worker_(std::move(worker)), connection_(std::move(connection)) {}

  // The connection, now answered; null if it was already.
  std::shared_ptr<Connection> Take();

  // Declared first so that it is released last: the connection's socket
  // belongs to the worker's I/O context.
  std::shared_ptr<Worker> worker_;
  std::shared_ptr<Connection> connection_;  // Null once answered.
  bool registered_on_closed_ = false;       // OnClientGone was called.
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
    std::string allow;        // "GET, HEAD" for 405's Allow header.
    absl::string_view route;  // The path as added; lives with the Routes.
  };
  [[nodiscard]] Match Find(Verb method, absl::string_view path) const;

 private:
  absl::flat_hash_map<std::string, std::vector<std::pair<Verb, Handler>>>
      by_path_;
};

struct HttpServerOptions {
  // host:port (IPv6 as [::1]:port); port 0 lets the OS choose, see port().
  std::string address = "127.0.0.1:0";
  // Threads running the event loop, each serving its share of the
  // connections; handlers run on them.
  int io_threads = 2;
  // Open connections at most; beyond it the server stops accepting, and
  // new connections wait in the listen backlog until one closes.
  int max_connections = 16384;
  // Connections the kernel holds for accepting (capped by the kernel's
  // net.core.somaxconn, 4096 by default on Linux).
  int listen_backlog = 4096;
  // Limit of the request line (longer: 414) and, separately, of the header
  // fields (longer: 431).
  size_t max_header_bytes = 8 << 10;
  // Longer bodies get 413 (before the body is read when Content-Length
  // says so; a client that sent Expect: 100-continue is never sent 100).
  size_t max_body_bytes = 1 << 20;
  // From waiting for a request (also on a kept-alive connection) to having
  // read all of it; then the connection is closed.
  absl::Duration read_timeout = absl::Seconds(30);
  // For sending one response, or one write of a stream, to a client that
  // does not read it.
  absl::Duration write_timeout = absl::Seconds(30);
  // Bytes of a stream waiting for a client that does not read; more drops
  // the stream.
  size_t max_stream_queued_bytes = 1 << 20;
  // Event loops the I/O threads run besides their connections (guest i on
  // thread i % io_threads), so that work a handler starts, such as a
  // backend call, is finished on the handler's thread. They must outlive
  // the server, which hands them back (Leave) as it stops.
  std::vector<LoopGuest*> guests;
  // HTTPS instead of HTTP (TLS 1.2 and later); with a client CA, every
  // client must present a certificate it signed.
  std::optional<TlsIdentity> tls;
};

// An event-driven HTTP/1.1 server (Boost.Beast over Asio): a fixed number of
// I/O threads, each with its own event loop, serve every connection, with
// keep-alive, pipelining, streamed responses and Expect: 100-continue. A
// request that cannot be parsed gets 400 (414, 431, 413 for the limits
// above) and its connection is closed; nothing a client sends ends the
// process. No exception escapes into an I/O thread.
class HttpServer final {
 public:
  // Listens and starts serving. UNAVAILABLE naming the address when it
  // cannot listen (e.g. the port is already in use).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      HttpServerOptions options, Routes routes);
  // Stops listening and the I/O threads, and closes every connection
  // (calling the on_closed of exchanges not over yet).
  ~HttpServer();

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  [[nodiscard]] int port() const { return port_; }

  // Connections accepted from now on use `tls`; open ones keep theirs.
  // INVALID_ARGUMENT saying why if OpenSSL refuses it (the identity before
  // stays); FAILED_PRECONDITION for a server started without TLS.
  absl::Status SetTls(const TlsIdentity& tls);

 private:
  HttpServer() = default;

  std::shared_ptr<Shared> shared_;
  std::vector<std::shared_ptr<Worker>> workers_;
  std::unique_ptr<Listener> listener_;  // Uses the first worker's loop.
  std::vector<std::thread> threads_;
  int port_ = 0;
};

}  // namespace arbiter::http
