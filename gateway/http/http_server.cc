#include "gateway/http/http_server.h"

#include <algorithm>
#include <cstdint>
#include <exception>
#include <iostream>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "boost/asio/dispatch.hpp"
#include "boost/asio/executor_work_guard.hpp"
#include "boost/asio/io_context.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/post.hpp"
#include "boost/asio/steady_timer.hpp"
#include "boost/asio/strand.hpp"
#include "boost/beast/core/bind_handler.hpp"
#include "boost/beast/core/error.hpp"
#include "boost/beast/core/flat_buffer.hpp"
#include "boost/beast/core/tcp_stream.hpp"
#include "boost/beast/http/empty_body.hpp"
#include "boost/beast/http/error.hpp"
#include "boost/beast/http/parser.hpp"
#include "boost/beast/http/read.hpp"
#include "boost/beast/http/write.hpp"
#include "common/quote.h"

namespace arbiter::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

absl::string_view View(beast::string_view text) {
  return absl::string_view(text.data(), text.size());
}

void Log(absl::string_view message) {
  std::cerr << absl::StrCat("arbiter: http: ", message, "\n") << std::flush;
}

Response PlainText(bhttp::status status, absl::string_view text) {
  Response response(status, 11);
  response.set(bhttp::field::content_type, "text/plain; charset=utf-8");
  response.body() = absl::StrCat(text, "\n");
  return response;
}

// The path of a request target: origin-form ("/metrics?x=1"), or
// absolute-form ("http://host/metrics") as a client of a proxy sends it.
std::optional<absl::string_view> PathOf(absl::string_view target) {
  if (target == "*") return target;  // OPTIONS *: no route has it.
  if (!absl::StartsWith(target, "/")) {
    size_t scheme_end = target.find("://");
    if (scheme_end == absl::string_view::npos || scheme_end == 0) {
      return std::nullopt;
    }
    size_t slash = target.find('/', scheme_end + 3);
    if (slash == absl::string_view::npos) return absl::string_view("/");
    target.remove_prefix(slash);
  }
  return target.substr(0, target.find_first_of("?#"));
}

// Splits "host:port" or "[v6]:port".
absl::Status SplitHostPort(absl::string_view address, std::string* host,
                           std::string* port) {
  size_t colon = address.rfind(':');
  int number = 0;
  if (colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &number) || number < 0 ||
      number > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", address, "\" is not host:port"));
  }
  absl::string_view name = address.substr(0, colon);
  if (absl::StartsWith(name, "[") && absl::EndsWith(name, "]")) {
    name = name.substr(1, name.size() - 2);
  }
  *host = std::string(name);
  *port = std::to_string(number);
  return absl::OkStatus();
}

}  // namespace

// What the I/O threads, the connections and outstanding Responders share.
// Connections and queued handlers refer to it by plain reference: they live
// inside its I/O context and cannot outlive it.
struct ServerState : std::enable_shared_from_this<ServerState> {
  ServerState(HttpServerOptions options, Routes routes)
      : options(std::move(options)),
        routes(std::move(routes)),
        io(std::max(1, this->options.io_threads)),
        work(asio::make_work_guard(io)),
        acceptor(asio::make_strand(io)),
        accept_retry(acceptor.get_executor()) {}

  void Accept();

  const HttpServerOptions options;
  const Routes routes;
  // Declared before everything that holds one of its executors, so that it
  // is destroyed after them.
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  tcp::acceptor acceptor;
  asio::steady_timer accept_retry;
};

// One client connection: reads a request, lets its handler answer, writes
// the answer, and reads the next one (keep-alive). Every step runs on the
// connection's strand; Answer may be called from any thread.
class Connection final : public std::enable_shared_from_this<Connection> {
 public:
  Connection(ServerState& state, tcp::socket socket)
      : state_(state), stream_(std::move(socket)) {}

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void Start() {
    asio::dispatch(stream_.get_executor(),
                   [self = shared_from_this()] { self->Read(); });
  }

  void Answer(Response response) {
    asio::post(
        stream_.get_executor(),
        [self = shared_from_this(), response = std::move(response)]() mutable {
          self->Write(std::move(response));
        });
  }

 private:
  void Read() {
    const HttpServerOptions& options = state_.options;
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(
        std::min<size_t>(options.max_header_bytes, UINT32_MAX)));
    parser_->body_limit(options.max_body_bytes);
    stream_.expires_after(absl::ToChronoNanoseconds(options.read_timeout));
    bhttp::async_read(
        stream_, buffer_, *parser_,
        beast::bind_front_handler(&Connection::OnRead, shared_from_this()));
  }

  void OnRead(beast::error_code error, size_t /*bytes*/) {
    stream_.expires_never();  // A handler's time is not the client's.
    if (error) return OnReadError(error);
    Dispatch(parser_->release());
  }

  void OnReadError(beast::error_code error) {
    static const beast::error_category& kParseErrors =
        bhttp::make_error_code(bhttp::error::bad_method).category();
    if (error == bhttp::error::header_limit) {
      // The parser records the target once the request line is whole.
      return Refuse(
          parser_->get().target().empty()
              ? PlainText(bhttp::status::uri_too_long,
                          "request target too long")
              : PlainText(bhttp::status::request_header_fields_too_large,
                          "request header fields too large"));
    }
    if (error == bhttp::error::body_limit) {
      return Refuse(PlainText(bhttp::status::payload_too_large,
                              "request body too large"));
    }
    // Anything else in the parser's category is a malformed request; a
    // client that closed, timed out or went away gets no answer.
    if (&error.category() == &kParseErrors &&
        error != bhttp::error::end_of_stream &&
        error != bhttp::error::partial_message) {
      return Refuse(
          PlainText(bhttp::status::bad_request,
                    absl::StrCat("malformed request: ", error.message())));
    }
    Close();
  }

  // Answers a request that could not be read whole, then closes: what
  // follows it on the connection cannot be framed.
  void Refuse(Response response) {
    version_ = 11;
    keep_alive_ = false;
    head_ = false;
    Write(std::move(response));
  }

  void Dispatch(Request request) {
    version_ = request.version();
    keep_alive_ = request.keep_alive();
    head_ = request.method() == Verb::head;
    std::optional<absl::string_view> path = PathOf(View(request.target()));
    if (!path.has_value()) {
      return Write(
          PlainText(bhttp::status::bad_request, "malformed request target"));
    }
    Routes::Match match = state_.routes.Find(request.method(), *path);
    if (match.handler == nullptr) {
      if (match.allow.empty()) {
        return Write(PlainText(bhttp::status::not_found, "not found"));
      }
      Response response =
          PlainText(bhttp::status::method_not_allowed, "method not allowed");
      response.set(bhttp::field::allow, match.allow);
      return Write(std::move(response));
    }
    const std::string route(*path);
    try {
      (*match.handler)(std::move(request), Responder(state_.shared_from_this(),
                                                     shared_from_this()));
    } catch (const std::exception& e) {
      // The handler's Responder, destroyed unanswered, answers 500.
      Log(absl::StrCat("the handler of ", QuoteInput(route),
                       " threw: ", e.what()));
    } catch (...) {
      Log(absl::StrCat("the handler of ", QuoteInput(route), " threw"));
    }
  }

  void Write(Response response) {
    response.version(version_);
    response.keep_alive(keep_alive_);
    const bhttp::status status = response.result();
    if (bhttp::to_status_class(status) == bhttp::status_class::informational ||
        status == bhttp::status::no_content ||
        status == bhttp::status::not_modified) {
      response.body().clear();  // These have no body (RFC 9110 6.4.1).
    }
    if (head_) {
      // The headers GET would send, Content-Length included, and no body.
      const size_t length = response.body().size();
      auto message = std::make_shared<bhttp::response<bhttp::empty_body>>(
          std::move(response.base()));
      message->content_length(length);
      return Send(std::move(message));
    }
    response.prepare_payload();
    Send(std::make_shared<Response>(std::move(response)));
  }

  template <typename Body>
  void Send(std::shared_ptr<bhttp::response<Body>> message) {
    const bool close = message->need_eof();
    stream_.expires_after(
        absl::ToChronoNanoseconds(state_.options.write_timeout));
    bhttp::async_write(stream_, *message,
                       [self = shared_from_this(), message, close](
                           beast::error_code error, size_t /*bytes*/) {
                         self->OnWrite(error, close);
                       });
  }

  void OnWrite(beast::error_code error, bool close) {
    if (error || close) return Close();
    Read();
  }

  void Close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.close();
  }

  ServerState& state_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  // Of the request being answered.
  unsigned version_ = 11;
  bool keep_alive_ = false;
  bool head_ = false;
};

void ServerState::Accept() {
  acceptor.async_accept(asio::make_strand(io), [this](beast::error_code error,
                                                      tcp::socket socket) {
    if (error == asio::error::operation_aborted || !acceptor.is_open()) {
      return;
    }
    if (error) {
      // Typically out of file descriptors: retry shortly, not in a spin.
      Log(absl::StrCat("accept failed: ", error.message()));
      accept_retry.expires_after(std::chrono::milliseconds(100));
      accept_retry.async_wait([this](beast::error_code wait_error) {
        if (!wait_error) Accept();
      });
      return;
    }
    Accept();
    std::make_shared<Connection>(*this, std::move(socket))->Start();
  });
}

Responder& Responder::operator=(Responder&& other) noexcept {
  if (this != &other) {
    Responder unanswered(std::move(*this));  // Answers 500 if it must.
    state_ = std::move(other.state_);
    connection_ = std::move(other.connection_);
  }
  return *this;
}

Responder::~Responder() {
  if (connection_ == nullptr) return;
  try {
    connection_->Answer(PlainText(bhttp::status::internal_server_error,
                                  "the handler did not answer"));
  } catch (...) {
    // Out of memory: the connection closes once nothing holds it.
  }
}

void Responder::Send(Response response) && {
  if (connection_ == nullptr) return;
  std::shared_ptr<Connection> connection = std::move(connection_);
  connection->Answer(std::move(response));
}

Routes& Routes::Add(Verb method, std::string path, Handler handler) {
  by_path_[std::move(path)].emplace_back(method, std::move(handler));
  return *this;
}

Routes::Match Routes::Find(Verb method, absl::string_view path) const {
  Match match;
  auto it = by_path_.find(path);
  if (it == by_path_.end()) return match;
  const Handler* get = nullptr;
  bool has_head = false;
  std::vector<absl::string_view> allowed;
  for (const auto& [verb, handler] : it->second) {
    if (verb == method) match.handler = &handler;
    if (verb == Verb::get) get = &handler;
    if (verb == Verb::head) has_head = true;
    allowed.push_back(View(bhttp::to_string(verb)));
  }
  if (get != nullptr && !has_head) {
    allowed.push_back("HEAD");
    if (method == Verb::head) match.handler = get;
  }
  match.allow = absl::StrJoin(allowed, ", ");
  return match;
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    HttpServerOptions options, Routes routes) {
  std::string host, port;
  if (absl::Status split = SplitHostPort(options.address, &host, &port);
      !split.ok()) {
    return split;
  }
  const std::string address = options.address;
  auto state =
      std::make_shared<ServerState>(std::move(options), std::move(routes));
  beast::error_code error;
  tcp::resolver resolver(state->io);
  auto endpoints = resolver.resolve(host, port, tcp::resolver::passive, error);
  if (error || endpoints.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot resolve \"", host,
        "\": ", error ? error.message() : std::string("no address")));
  }
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  tcp::acceptor& acceptor = state->acceptor;
  acceptor.open(endpoint.protocol(), error);
  // SO_REUSEADDR only lets a restart bind past TIME_WAIT; a port another
  // process listens on is still refused (there is no SO_REUSEPORT).
  if (!error) acceptor.set_option(tcp::acceptor::reuse_address(true), error);
  if (!error) acceptor.bind(endpoint, error);
  if (!error) acceptor.listen(asio::socket_base::max_listen_connections, error);
  if (error == asio::error::address_in_use) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", address, ": port ", port, " is already in use"));
  }
  if (error) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", address, ": ", error.message()));
  }
  auto server = std::unique_ptr<HttpServer>(new HttpServer());
  server->port_ = acceptor.local_endpoint(error).port();
  server->state_ = state;
  state->Accept();
  for (int i = 0; i < std::max(1, state->options.io_threads); ++i) {
    server->threads_.emplace_back([state = state.get()] {
      // The last line of defence: an exception out of a completion handler
      // loses that connection, never the process.
      for (;;) {
        try {
          state->io.run();
          return;
        } catch (const std::exception& e) {
          Log(absl::StrCat("I/O thread caught: ", e.what()));
        } catch (...) {
          Log("I/O thread caught an unknown exception");
        }
      }
    });
  }
  return server;
}

HttpServer::~HttpServer() {
  if (state_ == nullptr) return;
  state_->io.stop();
  for (std::thread& thread : threads_) thread.join();
  beast::error_code ignored;
  state_->acceptor.close(ignored);  // Frees the port now.
  // Connections close as the I/O context goes, once no Responder holds it.
}

}  // namespace arbiter::http
