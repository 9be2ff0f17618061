#include "gateway/http/http_server.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <iostream>
#include <mutex>
#include <optional>
#include <variant>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "boost/asio/buffer.hpp"
#include "boost/asio/dispatch.hpp"
#include "boost/asio/executor_work_guard.hpp"
#include "boost/asio/io_context.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/posix/stream_descriptor.hpp"
#include "boost/asio/post.hpp"
#include "boost/asio/ssl/context.hpp"
#include "boost/asio/ssl/stream.hpp"
#include "boost/asio/steady_timer.hpp"
#include "boost/asio/write.hpp"
#include "boost/beast/core/buffers_cat.hpp"
#include "boost/beast/core/error.hpp"
#include "boost/beast/core/flat_buffer.hpp"
#include "boost/beast/http/chunk_encode.hpp"
#include "boost/beast/http/empty_body.hpp"
#include "boost/beast/http/error.hpp"
#include "boost/beast/http/parser.hpp"
#include "boost/beast/http/serializer.hpp"
#include "boost/beast/http/write.hpp"
#include "common/quote.h"

namespace arbiter::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
// A connection stays on one loop: its objects need no type-erased executor.
using Executor = asio::io_context::executor_type;
using Socket = tcp::socket::rebind_executor<Executor>::other;
using Timer =
    asio::basic_waitable_timer<Clock, asio::wait_traits<Clock>, Executor>;
using TlsStream = asio::ssl::stream<Socket>;

namespace {

// While a handler holds a request, what the client sends next (pipelined)
// is read up to this much; reading goes on so that its leaving is seen.
constexpr size_t kWatchedBytes = 64 << 10;
constexpr char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";

absl::string_view View(beast::string_view text) {
  return absl::string_view(text.data(), text.size());
}

void Log(absl::string_view message) {
  std::cerr << absl::StrCat("arbiter: http: ", message, "\n") << std::flush;
}

// Runs an owner's callback; what it throws is logged, not passed on into
// an I/O thread.
void RunCallback(OnClosed& callback) {
  if (callback == nullptr) return;
  try {
    callback();
  } catch (const std::exception& e) {
    Log(absl::StrCat("an on_closed callback threw: ", e.what()));
  } catch (...) {
    Log("an on_closed callback threw");
  }
}

Response PlainText(bhttp::status status, absl::string_view text) {
  Response response(status, 11);
  response.set(bhttp::field::content_type, "text/plain; charset=utf-8");
  response.body() = absl::StrCat(text, "\n");
  return response;
}

// Statuses whose responses have no body (RFC 9110 6.4.1).
bool HasNoBody(bhttp::status status) {
  return bhttp::to_status_class(status) == bhttp::status_class::informational ||
         status == bhttp::status::no_content ||
         status == bhttp::status::not_modified;
}

bool ExpectsContinue(const Request& request) {
  auto expect = request.find(bhttp::field::expect);
  return request.version() >= 11 && expect != request.end() &&
         absl::EqualsIgnoreCase(
             absl::StripAsciiWhitespace(View(expect->value())), "100-continue");
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

// An OpenSSL server context for `tls`: TLS 1.2 and later, the client's
// certificate required and verified when there is a client CA.
absl::StatusOr<std::shared_ptr<asio::ssl::context>> TlsContext(
    const TlsIdentity& tls) {
  auto context =
      std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  beast::error_code error;
  context->set_options(
      asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
          asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
          asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use,
      error);
  auto failed = [&](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS: ", what, ": ", error.message()));
  };
  if (error) return failed("options");
  context->use_certificate_chain(asio::buffer(tls.cert_chain_pem), error);
  if (error) return failed("the certificate chain");
  context->use_private_key(asio::buffer(tls.key_pem), asio::ssl::context::pem,
                           error);
  if (error) return failed("the private key");
  if (!tls.client_ca_pem.empty()) {
    context->add_certificate_authority(asio::buffer(tls.client_ca_pem), error);
    if (error) return failed("the client CA");
    context->set_verify_mode(
        asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert, error);
    if (error) return failed("verifying clients");
  }
  return context;
}

// What every worker reads; only the TLS context changes (SetTls).
struct Shared {
  Shared(HttpServerOptions options, Routes routes)
      : options(std::move(options)),
        routes(std::move(routes)),
        read_timeout(absl::ToChronoNanoseconds(this->options.read_timeout)),
        write_timeout(absl::ToChronoNanoseconds(this->options.write_timeout)) {}

  // For the next connection; null for plain HTTP.
  std::shared_ptr<asio::ssl::context> tls() const {
    std::lock_guard lock(tls_mu);
    return tls_context;
  }

  const HttpServerOptions options;
  const Routes routes;
  const Clock::duration read_timeout;
  const Clock::duration write_timeout;
  mutable std::mutex tls_mu;  // std:: so that ThreadSanitizer sees it.
  std::shared_ptr<asio::ssl::context> tls_context ABSL_GUARDED_BY(tls_mu);
};

// A connection's byte stream: the socket, or TLS over it. An Asio stream
// itself, so that Beast's and Asio's writes take it.
class Transport final {
 public:
  using executor_type = Executor;

  explicit Transport(Socket socket) : stream_(std::move(socket)) {}
  // Holds `context` for as long as the TLS stream uses it.
  Transport(Socket socket, std::shared_ptr<asio::ssl::context> context)
      : stream_(std::in_place_type<TlsStream>, std::move(socket), *context),
        context_(std::move(context)) {}

  [[nodiscard]] bool tls() const {
    return std::holds_alternative<TlsStream>(stream_);
  }
  [[nodiscard]] Socket& socket() {
    if (auto* tls = std::get_if<TlsStream>(&stream_)) return tls->next_layer();
    return std::get<Socket>(stream_);
  }
  executor_type get_executor() { return socket().get_executor(); }

  // `received`: what was read from the socket before, the handshake's
  // start; the handler learns how much of it the handshake used.
  template <typename Handler>
  void AsyncHandshake(asio::const_buffer received, Handler handler) {
    std::get<TlsStream>(stream_).async_handshake(asio::ssl::stream_base::server,
                                                 received, std::move(handler));
  }

  template <typename Buffers, typename Token>
  auto async_read_some(const Buffers& buffers, Token&& token) {
    return asio::async_initiate<Token, void(beast::error_code, size_t)>(
        [this](auto handler, const Buffers& buffers) {
          std::visit(
              [&](auto& stream) {
                stream.async_read_some(buffers, std::move(handler));
              },
              stream_);
        },
        token, buffers);
  }

  template <typename Buffers, typename Token>
  auto async_write_some(const Buffers& buffers, Token&& token) {
    return asio::async_initiate<Token, void(beast::error_code, size_t)>(
        [this](auto handler, const Buffers& buffers) {
          std::visit(
              [&](auto& stream) {
                stream.async_write_some(buffers, std::move(handler));
              },
              stream_);
        },
        token, buffers);
  }

 private:
  std::variant<Socket, TlsStream> stream_;
  std::shared_ptr<asio::ssl::context> context_;
};

// The listening socket: hands each new connection to the next worker, and
// stops accepting while max_connections are open (the kernel holds the
// rest in the backlog). Runs on the first worker's loop.
class Listener final {
 public:
  Listener(std::vector<Worker*> workers, int max_connections);

  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  [[nodiscard]] tcp::acceptor& acceptor() { return acceptor_; }
  void Accept();
  // From any worker's thread, once per accepted connection.
  void ConnectionClosed();
  void Close();

 private:
  void OnAccept(Worker& worker, beast::error_code error, Socket socket);

  const std::vector<Worker*> workers_;
  const int max_connections_;
  tcp::acceptor acceptor_;
  asio::steady_timer retry_;
  size_t next_worker_ = 0;  // The acceptor's thread only.
  std::mutex mu_;           // std:: so that ThreadSanitizer sees it.
  int open_ ABSL_GUARDED_BY(mu_) = 0;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
};

// One I/O thread: an event loop of its own and the connections it serves.
// A connection stays on its worker's thread, so no strand or lock orders
// its steps. Connections and queued handlers refer to their worker by
// plain reference: they live inside its I/O context and cannot outlive it;
// Responders and StreamWriters hold it by shared_ptr.
class Worker final : public std::enable_shared_from_this<Worker> {
 public:
  explicit Worker(std::shared_ptr<const Shared> shared)
      : shared_(std::move(shared)), work_(asio::make_work_guard(io_)) {}

  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  [[nodiscard]] const Shared& shared() const { return *shared_; }
  [[nodiscard]] asio::io_context& io() { return io_; }
  [[nodiscard]] bool OnIoThread() {
    return io_.get_executor().running_in_this_thread();
  }
  void set_listener(Listener* listener) { listener_ = listener; }
  // For the worker that accepts: its pending accept holds a socket of
  // another worker's loop, which must outlive its own.
  void KeepAlive(std::shared_ptr<Worker> other) {
    kept_alive_.push_back(std::move(other));
  }

  // Calls `callback` on this worker's thread, or here once it is stopped.
  void RunOnIoThread(OnClosed callback) {
    if (stopped_.load(std::memory_order_acquire)) {
      RunCallback(callback);
      return;
    }
    asio::post(io_, [callback = std::move(callback)]() mutable {
      RunCallback(callback);
    });
  }

  void Add(Connection* connection) {
    std::lock_guard lock(mu_);
    connections_.insert(connection);
  }
  void Remove(Connection* connection) {
    std::lock_guard lock(mu_);
    connections_.erase(connection);
  }
  void ConnectionClosed() {
    if (listener_ != nullptr) listener_->ConnectionClosed();
  }

  // The thread's body.
  void Run() {
    // The last line of defence: an exception out of a completion handler
    // loses that connection, never the process.
    for (;;) {
      try {
        io_.run();
        return;
      } catch (const std::exception& e) {
        Log(absl::StrCat("I/O thread caught: ", e.what()));
      } catch (...) {
        Log("I/O thread caught an unknown exception");
      }
    }
  }
  void Stop() { io_.stop(); }
  // Once the thread is joined: closes every connection still open.
  void Shutdown();

  // Runs `guest`'s loop on this thread from the start of Run; called before
  // the thread starts.
  void Host(LoopGuest* guest);
  // Once the thread is joined: the guests run on their own threads again.
  void ReleaseGuests();

 private:
  const std::shared_ptr<const Shared> shared_;
  std::vector<std::shared_ptr<Worker>> kept_alive_;
  // Null once the server is going; read on the I/O thread, set before it
  // runs and after it is joined.
  Listener* listener_ = nullptr;
  std::atomic<bool> stopped_{false};
  std::mutex mu_;  // std:: so that ThreadSanitizer sees it.
  absl::flat_hash_set<Connection*> connections_ ABSL_GUARDED_BY(mu_);
  // Declared after what connections use, so that it is destroyed (with the
  // connections its queued handlers hold) first.
  asio::io_context io_{1};
  asio::executor_work_guard<asio::io_context::executor_type> work_;

  // A hosted loop: its Turn runs when its descriptor is readable, when the
  // time it asked for comes, or when it asks.
  struct Guest {
    Guest(asio::io_context& io, LoopGuest* loop)
        : loop(loop), ready(io, dup(loop->ready_fd())), timer(io) {}
    LoopGuest* const loop;
    // A duplicate of ready_fd, so that closing it leaves the guest's own.
    asio::posix::basic_stream_descriptor<Executor> ready;
    Timer timer;
    Clock::time_point timer_at = Clock::time_point::max();  // When armed.
    bool waiting = false;                                   // For ready.
  };
  void RunGuest(Guest& guest);
  // Destroyed before the loop their descriptors and timers belong to.
  std::vector<std::unique_ptr<Guest>> guests_;
};

void Worker::Host(LoopGuest* guest) {
  guests_.push_back(std::make_unique<Guest>(io_, guest));
  Guest* hosted = guests_.back().get();
  guest->Join([this, hosted] {
    asio::post(io_, [this, hosted] { RunGuest(*hosted); });
  });
  asio::post(io_, [this, hosted] { RunGuest(*hosted); });
}

void Worker::ReleaseGuests() {
  for (const std::unique_ptr<Guest>& guest : guests_) guest->loop->Leave();
  guests_.clear();
}

void Worker::RunGuest(Guest& guest) {
  absl::Duration next = absl::Milliseconds(10);
  try {
    next = guest.loop->Turn();
  } catch (...) {
    Log("a hosted event loop threw; it runs again in 10 ms");
  }
  // Turn left the descriptor quiet (or asked to run at once), so waiting
  // for it to become readable again loses no event.
  if (!guest.waiting) {
    guest.waiting = true;
    guest.ready.async_wait(asio::posix::descriptor_base::wait_read,
                           [this, &guest](const beast::error_code& error) {
                             guest.waiting = false;
                             if (!error) RunGuest(guest);
                           });
  }
  if (next <= absl::ZeroDuration()) {
    asio::post(io_, [this, &guest] { RunGuest(guest); });
    return;
  }
  if (next == absl::InfiniteDuration()) return;
  const Clock::time_point at = Clock::now() + absl::ToChronoNanoseconds(next);
  // An armed timer that comes first stays: its Turn asks again. Moving it
  // later on every turn would cost a system call each time.
  if (at >= guest.timer_at) return;
  guest.timer_at = at;
  guest.timer.expires_at(at);
  guest.timer.async_wait([this, &guest](const beast::error_code& error) {
    if (error) return;  // Replaced by an earlier one.
    guest.timer_at = Clock::time_point::max();
    RunGuest(guest);
  });
}

// A stream's queue, shared by its writer (any thread) and its connection.
struct StreamState {
  explicit StreamState(size_t limit) : limit(limit) {}

  const size_t limit;
  std::mutex mu;  // std:: so that ThreadSanitizer sees it.
  std::vector<std::string> queue ABSL_GUARDED_BY(mu);
  // In the queue and being written.
  size_t queued_bytes ABSL_GUARDED_BY(mu) = 0;
  bool open ABSL_GUARDED_BY(mu) = true;  // Takes writes.
  bool finish ABSL_GUARDED_BY(mu) = false;
  bool abandoned ABSL_GUARDED_BY(mu) = false;  // Writer gone unfinished.
  // The connection will look at the queue again without being woken: it
  // has not sent the header yet, or is writing.
  bool connection_busy ABSL_GUARDED_BY(mu) = true;
  OnClosed on_closed ABSL_GUARDED_BY(mu);
};

// One client connection: reads a request, lets its handler answer (at once,
// later, or as a stream), writes the answer, and reads the next one
// (keep-alive). Every step runs on its worker's thread; Answer, OpenStream,
// Wake and the callbacks' setters may be called from any thread. Bytes are
// read into one buffer by one read at a time and fed to Beast's parser, so
// that a read can stay posted while a handler holds the request: the
// client's leaving is seen then, and what it pipelines is kept.
class Connection final : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Worker& worker, Transport transport)
      : worker_(worker),
        transport_(std::move(transport)),
        timer_(transport_.get_executor()) {
    worker_.Add(this);
  }
  ~Connection() { worker_.Remove(this); }

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void Start() {
    if (!transport_.tls()) return StartReading();
    // A client that does not finish its handshake is closed as one that
    // does not send its request.
    SetDeadline(worker_.shared().read_timeout);
    // The first bytes tell a TLS client from one speaking plain HTTP.
    transport_.socket().async_read_some(
        buffer_.prepare(4096),
        [self = shared_from_this()](beast::error_code error, size_t bytes) {
          if (self->phase_ == Phase::kClosed) return;
          if (error) return self->Close();
          self->buffer_.commit(bytes);
          self->Handshake();
        });
  }

  void Answer(Response response) {
    if (worker_.OnIoThread()) return AnswerNow(std::move(response));
    asio::post(worker_.io(), [self = shared_from_this(),
                              response = std::move(response)]() mutable {
      self->AnswerNow(std::move(response));
    });
  }

  // The stream the writer shares; already closed if the client is gone.
  std::shared_ptr<StreamState> OpenStream(Response head, OnClosed on_closed) {
    auto stream = std::make_shared<StreamState>(
        worker_.shared().options.max_stream_queued_bytes);
    OnClosed replaced;
    OnClosed late;  // For a client already gone.
    bool gone;
    {
      std::lock_guard lock(mu_);
      replaced = std::move(on_client_gone_);
      if (on_closed == nullptr) on_closed.swap(replaced);
      gone = gone_;
      std::lock_guard stream_lock(stream->mu);
      if (gone) {
        stream->open = false;
        late = std::move(on_closed);
      } else {
        stream->on_closed = std::move(on_closed);
        if (!head.body().empty()) {
          stream->queued_bytes = head.body().size();
          stream->queue.push_back(std::move(head.body()));
        }
        open_stream_ = stream;
      }
    }
    if (gone) {
      if (late != nullptr) worker_.RunOnIoThread(std::move(late));
      return stream;
    }
    auto begin = [self = shared_from_this(), stream,
                  head = std::move(head)]() mutable {
      self->BeginStream(std::move(head), std::move(stream));
    };
    if (worker_.OnIoThread()) {
      begin();
    } else {
      asio::post(worker_.io(), std::move(begin));
    }
    return stream;
  }

  // The stream has something to send and the connection is idle.
  void Wake(std::shared_ptr<StreamState> stream) {
    asio::post(worker_.io(),
               [self = shared_from_this(), stream = std::move(stream)] {
                 if (self->stream_ == stream) self->Pump();
               });
  }

  // A stream overflowed: the client is dropped.
  void Drop() {
    asio::post(worker_.io(), [self = shared_from_this()] { self->Close(); });
  }

  void SetOnClientGone(OnClosed on_closed) {
    {
      std::lock_guard lock(mu_);
      if (!gone_) {
        on_closed.swap(on_client_gone_);
        return;  // The one replaced goes outside the lock.
      }
    }
    worker_.RunOnIoThread(std::move(on_closed));
  }

  void ClearOnClientGone() {
    OnClosed cleared;
    std::lock_guard lock(mu_);
    cleared.swap(on_client_gone_);
  }

  // On the worker's thread (or once it is joined): closes the socket and
  // tells the owner of an exchange not over yet.
  void Close() {
    if (phase_ == Phase::kClosed) return;
    auto self = shared_from_this();  // Callbacks may drop the last owner.
    phase_ = Phase::kClosed;
    beast::error_code ignored;
    timer_.cancel();
    transport_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    transport_.socket().close(ignored);
    OnClosed unary, streamed;
    std::shared_ptr<StreamState> stream;
    {
      std::lock_guard lock(mu_);
      gone_ = true;
      unary = std::move(on_client_gone_);
      stream = std::move(open_stream_);
    }
    std::vector<std::string> unsent;
    if (stream != nullptr) {
      std::lock_guard lock(stream->mu);
      stream->open = false;
      streamed = std::move(stream->on_closed);
      unsent.swap(stream->queue);
    }
    worker_.ConnectionClosed();
    RunCallback(unary);
    RunCallback(streamed);
  }

 private:
  enum class Phase {
    kReading,     // A request.
    kAwaiting,    // Its handler's answer.
    kResponding,  // Writing a whole response.
    kStreaming,   // Writing a stream.
    kClosed,
  };

  // --- TLS.

  void Handshake() {
    // Every TLS connection opens with a handshake record (content type 22).
    constexpr unsigned char kHandshakeRecord = 0x16;
    const auto* first =
        static_cast<const unsigned char*>(buffer_.data().data());
    if (*first != kHandshakeRecord) {
      // Answered in plain text, as the client will read it.
      buffer_.consume(buffer_.size());
      static constexpr char kPlainToTls[] =
          "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; "
          "charset=utf-8\r\nContent-Length: 55\r\nConnection: "
          "close\r\n\r\nthis port speaks HTTPS: send the request with "
          "https://\n";
      asio::async_write(transport_.socket(),
                        asio::buffer(kPlainToTls, sizeof(kPlainToTls) - 1),
                        [self = shared_from_this()](beast::error_code, size_t) {
                          self->Close();
                        });
      return;
    }
    transport_.AsyncHandshake(
        buffer_.data(),
        [self = shared_from_this()](beast::error_code error, size_t used) {
          if (self->phase_ == Phase::kClosed) return;
          if (error) return self->Close();
          self->buffer_.consume(used);
          self->StartReading();
        });
  }

  // --- Reading and parsing.

  void StartReading() {
    const HttpServerOptions& options = worker_.shared().options;
    phase_ = Phase::kReading;
    header_checked_ = false;
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(
        std::min<size_t>(options.max_header_bytes, UINT32_MAX)));
    parser_->body_limit(options.max_body_bytes);
    SetDeadline(worker_.shared().read_timeout);
    if (reading_) {
      // The buffer must not change under the read: a pipelined request
      // already read is parsed once the read is cancelled.
      if (buffer_.size() > 0) {
        beast::error_code ignored;
        transport_.socket().cancel(ignored);
      }
      return;
    }
    Parse();
  }

  void ReadMore() {
    reading_ = true;
    size_t size = buffer_.capacity() - buffer_.size();
    if (phase_ == Phase::kReading && parser_->is_header_done()) {
      // A body in as few reads as its length allows.
      size = std::max<size_t>(size,
                              parser_->content_length_remaining().value_or(0));
    }
    size = std::clamp<size_t>(size, 4096, 65536);
    transport_.async_read_some(
        buffer_.prepare(size),
        [self = shared_from_this()](beast::error_code error, size_t bytes) {
          self->OnRead(error, bytes);
        });
  }

  void OnRead(beast::error_code error, size_t bytes) {
    reading_ = false;
    if (phase_ == Phase::kClosed) return;
    if (error == asio::error::operation_aborted) {
      if (phase_ == Phase::kReading) Parse();
      return;
    }
    if (error) {
      // The client closed (or shut down its sending side) or the
      // connection failed. A whole answer being written is finished first.
      if (phase_ == Phase::kResponding) {
        peer_eof_ = true;
        return;
      }
      return Close();
    }
    buffer_.commit(bytes);
    switch (phase_) {
      case Phase::kReading:
        return Parse();
      case Phase::kAwaiting:
      case Phase::kStreaming:
        return Watch();
      default:
        return;  // Parsed once the answer is written.
    }
  }

  // Keeps a read posted while a handler holds the request.
  void Watch() {
    if (!reading_ && buffer_.size() < kWatchedBytes) ReadMore();
  }

  void Parse() {
    for (;;) {
      if (buffer_.size() == 0) {
        if (!reading_) ReadMore();
        return;
      }
      beast::error_code error;
      const size_t used = parser_->put(buffer_.data(), error);
      buffer_.consume(used);
      if (error == bhttp::error::need_more) {
        if (!reading_) ReadMore();
        return;
      }
      if (error) return OnParseError(error);
      if (parser_->is_done()) return Dispatch();
      if (parser_->is_header_done() && !header_checked_) {
        header_checked_ = true;
        // The client waits for 100 Continue before it sends the body.
        if (buffer_.size() == 0 && ExpectsContinue(parser_->get())) {
          return SendContinue();
        }
      }
    }
  }

  void SendContinue() {
    writing_ = true;
    asio::async_write(
        transport_, asio::buffer(kContinue, sizeof(kContinue) - 1),
        [self = shared_from_this()](beast::error_code error, size_t) {
          self->writing_ = false;
          if (self->phase_ == Phase::kClosed) return;
          if (error) return self->Close();
          self->Parse();
        });
  }

  void OnParseError(beast::error_code error) {
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
      // Also from Content-Length alone, before the body is read.
      return Refuse(PlainText(bhttp::status::payload_too_large,
                              "request body too large"));
    }
    Refuse(PlainText(bhttp::status::bad_request,
                     absl::StrCat("malformed request: ", error.message())));
  }

  // Answers a request that could not be read whole, then closes: what
  // follows it on the connection cannot be framed.
  void Refuse(Response response) {
    phase_ = Phase::kAwaiting;
    version_ = 11;
    keep_alive_ = false;
    head_ = false;
    AnswerNow(std::move(response));
  }

  void Dispatch() {
    phase_ = Phase::kAwaiting;
    ClearDeadline();  // A handler's time is not the client's.
    Request request = parser_->release();
    version_ = request.version();
    keep_alive_ = request.keep_alive();
    head_ = request.method() == Verb::head;
    std::optional<absl::string_view> path = PathOf(View(request.target()));
    if (!path.has_value()) {
      return AnswerNow(
          PlainText(bhttp::status::bad_request, "malformed request target"));
    }
    Routes::Match match = worker_.shared().routes.Find(request.method(), *path);
    if (match.handler == nullptr) {
      if (match.allow.empty()) {
        return AnswerNow(PlainText(bhttp::status::not_found, "not found"));
      }
      Response response =
          PlainText(bhttp::status::method_not_allowed, "method not allowed");
      response.set(bhttp::field::allow, match.allow);
      return AnswerNow(std::move(response));
    }
    try {
      (*match.handler)(std::move(request), Responder(worker_.shared_from_this(),
                                                     shared_from_this()));
    } catch (const std::exception& e) {
      // The handler's Responder, destroyed unanswered, answers 500.
      Log(absl::StrCat("the handler of ", QuoteInput(match.route),
                       " threw: ", e.what()));
    } catch (...) {
      Log(absl::StrCat("the handler of ", QuoteInput(match.route), " threw"));
    }
    // Answered already, or the handler keeps the request: watch the client.
    if (phase_ == Phase::kAwaiting || phase_ == Phase::kStreaming) Watch();
  }

  // --- Whole responses.

  void AnswerNow(Response response) {
    if (phase_ != Phase::kAwaiting) return;  // The client is gone.
    phase_ = Phase::kResponding;
    response.version(version_);
    response.keep_alive(keep_alive_);
    const bool no_body = HasNoBody(response.result());
    if (no_body) response.body().clear();
    if (head_ && !no_body) {
      // The headers GET would send, Content-Length included, and no body.
      const size_t length = response.body().size();
      response.body().clear();
      response.content_length(length);
    } else {
      response.prepare_payload();
    }
    response_.emplace(std::move(response));
    serializer_.emplace(*response_);
    close_after_ = response_->need_eof();
    SetDeadline(worker_.shared().write_timeout);
    writing_ = true;
    bhttp::async_write(
        transport_, *serializer_,
        [self = shared_from_this()](beast::error_code error, size_t) {
          self->OnResponseWritten(error);
        });
  }

  void OnResponseWritten(beast::error_code error) {
    writing_ = false;
    serializer_.reset();
    response_.reset();
    if (phase_ == Phase::kClosed) return;
    if (error) return Close();
    EndExchange();
  }

  // --- Streams.

  void BeginStream(Response head, std::shared_ptr<StreamState> stream) {
    if (phase_ != Phase::kAwaiting) return;  // Closed meanwhile.
    phase_ = Phase::kStreaming;
    stream_ = std::move(stream);
    stream_head_.emplace(std::move(head.base()));
    bhttp::response<bhttp::empty_body>& header = *stream_head_;
    header.version(version_);
    header.content_length(boost::none);
    const bool no_body = HasNoBody(header.result());
    send_body_ = !head_ && !no_body;
    chunked_ = version_ >= 11 && !no_body;
    // An HTTP/1.0 client learns where the body ends from the close.
    close_after_ = !keep_alive_ || (version_ < 11 && !no_body && !head_);
    header.keep_alive(!close_after_);
    header.chunked(chunked_);
    stream_head_serializer_.emplace(header);
    SetDeadline(worker_.shared().write_timeout);
    writing_ = true;
    bhttp::async_write_header(
        transport_, *stream_head_serializer_,
        [self = shared_from_this()](beast::error_code error, size_t) {
          self->stream_head_serializer_.reset();
          self->stream_head_.reset();
          self->OnStreamWritten(error, 0, false);
        });
  }

  // Sends what the writer queued, if the connection is not writing already.
  void Pump() {
    for (;;) {
      if (writing_ || phase_ != Phase::kStreaming) return;
      bool finish, abandoned;
      {
        std::lock_guard lock(stream_->mu);
        draining_.swap(stream_->queue);
        finish = stream_->finish;
        abandoned = stream_->abandoned;
        if (draining_.empty() && !finish && !abandoned) {
          stream_->connection_busy = false;
        }
      }
      if (draining_.empty() && !finish && !abandoned) {
        ClearDeadline();  // Waiting for the owner, not the client.
        return;
      }
      for (std::string& piece : draining_) {
        if (in_flight_.empty()) {
          in_flight_ = std::move(piece);
        } else {
          in_flight_.append(piece);
        }
      }
      draining_.clear();
      size_t bytes = in_flight_.size();
      if (!send_body_ && bytes > 0) {
        // HEAD: the bytes go nowhere.
        in_flight_.clear();
        std::lock_guard lock(stream_->mu);
        stream_->queued_bytes -= bytes;
        bytes = 0;
      }
      if (bytes == 0) {
        if (finish && chunked_ && send_body_) {
          return WriteStream(bhttp::make_chunk_last(), 0, true);
        }
        if (finish) return EndExchange();
        if (abandoned) return Close();
        continue;  // Look at the queue again.
      }
      // Abandoned: what was queued goes out, then the connection closes.
      if (chunked_ && finish) {
        return WriteStream(
            beast::buffers_cat(bhttp::make_chunk(asio::buffer(in_flight_)),
                               bhttp::make_chunk_last()),
            bytes, true);
      }
      if (chunked_) {
        return WriteStream(bhttp::make_chunk(asio::buffer(in_flight_)), bytes,
                           false);
      }
      return WriteStream(asio::buffer(in_flight_), bytes, finish);
    }
  }

  template <typename Buffers>
  void WriteStream(const Buffers& buffers, size_t bytes, bool last) {
    SetDeadline(worker_.shared().write_timeout);
    writing_ = true;
    asio::async_write(transport_, buffers,
                      [self = shared_from_this(), bytes, last](
                          beast::error_code error, size_t) {
                        self->OnStreamWritten(error, bytes, last);
                      });
  }

  void OnStreamWritten(beast::error_code error, size_t bytes, bool last) {
    writing_ = false;
    in_flight_.clear();
    if (bytes > 0) {
      std::lock_guard lock(stream_->mu);
      stream_->queued_bytes -= bytes;
    }
    if (phase_ == Phase::kClosed) return;
    if (error) return Close();
    if (last) return EndExchange();
    Pump();
  }

  // --- Between exchanges.

  void EndExchange() {
    if (stream_ != nullptr) {
      stream_.reset();
      std::lock_guard lock(mu_);
      open_stream_.reset();
    }
    if (close_after_ || peer_eof_) return Close();
    StartReading();
  }

  // --- Timeouts: one timer, moved only when a deadline comes earlier than
  // it is set for, so that a kept-alive exchange does not touch it.

  void SetDeadline(Clock::duration timeout) {
    deadline_ = Clock::now() + timeout;
    if (!timer_waiting_ || deadline_ < timer_expiry_) ArmTimer();
  }

  void ClearDeadline() { deadline_ = Clock::time_point::max(); }

  void ArmTimer() {
    timer_expiry_ = deadline_;
    timer_waiting_ = true;
    timer_.expires_at(deadline_);  // Cancels a wait for a later expiry.
    timer_.async_wait([self = shared_from_this()](beast::error_code error) {
      self->OnTimer(error);
    });
  }

  void OnTimer(beast::error_code error) {
    if (error == asio::error::operation_aborted) return;
    timer_waiting_ = false;
    if (phase_ == Phase::kClosed || deadline_ == Clock::time_point::max()) {
      return;
    }
    if (Clock::now() >= deadline_) return Close();
    ArmTimer();
  }

  Worker& worker_;
  Transport transport_;
  Timer timer_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::optional<Response> response_;
  std::optional<bhttp::response_serializer<bhttp::string_body>> serializer_;
  std::optional<bhttp::response<bhttp::empty_body>> stream_head_;
  std::optional<bhttp::response_serializer<bhttp::empty_body>>
      stream_head_serializer_;
  std::shared_ptr<StreamState> stream_;  // The one being sent.
  std::string in_flight_;                // Of the stream.
  std::vector<std::string> draining_;    // Of the stream; kept for its room.

  Phase phase_ = Phase::kReading;
  bool reading_ = false;  // A read into buffer_ is posted.
  bool writing_ = false;
  bool header_checked_ = false;  // For Expect: 100-continue.
  bool peer_eof_ = false;        // Close once the answer is written.
  bool close_after_ = false;
  bool send_body_ = true;  // Of the stream: not HEAD, nor 204 or 304.
  bool chunked_ = true;
  // Of the request being answered.
  unsigned version_ = 11;
  bool keep_alive_ = false;
  bool head_ = false;

  Clock::time_point deadline_ = Clock::time_point::max();
  Clock::time_point timer_expiry_;
  bool timer_waiting_ = false;

  // What the owner of the current exchange shares with the connection.
  std::mutex mu_;  // std:: so that ThreadSanitizer sees it.
  bool gone_ ABSL_GUARDED_BY(mu_) = false;
  OnClosed on_client_gone_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<StreamState> open_stream_ ABSL_GUARDED_BY(mu_);
};

void Worker::Shutdown() {
  listener_ = nullptr;
  stopped_.store(true, std::memory_order_release);
  std::vector<std::shared_ptr<Connection>> open;
  {
    std::lock_guard lock(mu_);
    for (Connection* connection : connections_) {
      // Null for one being destroyed on another thread.
      if (auto held = connection->weak_from_this().lock()) {
        open.push_back(std::move(held));
      }
    }
  }
  for (const std::shared_ptr<Connection>& connection : open) {
    connection->Close();
  }
}

Listener::Listener(std::vector<Worker*> workers, int max_connections)
    : workers_(std::move(workers)),
      max_connections_(std::max(1, max_connections)),
      acceptor_(workers_.front()->io()),
      retry_(workers_.front()->io()) {}

void Listener::Accept() {
  Worker& worker = *workers_[next_worker_++ % workers_.size()];
  acceptor_.async_accept(
      worker.io().get_executor(),
      [this, &worker](beast::error_code error, Socket socket) {
        OnAccept(worker, error, std::move(socket));
      });
}

void Listener::OnAccept(Worker& worker, beast::error_code error,
                        Socket socket) {
  if (error == asio::error::operation_aborted || !acceptor_.is_open()) return;
  if (error) {
    // Typically out of file descriptors: retry shortly, not in a spin.
    Log(absl::StrCat("accept failed: ", error.message()));
    retry_.expires_after(std::chrono::milliseconds(100));
    retry_.async_wait([this](beast::error_code wait_error) {
      if (!wait_error) Accept();
    });
    return;
  }
  beast::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);  // Answers go out whole.
  std::shared_ptr<asio::ssl::context> tls = worker.shared().tls();
  auto connection = std::make_shared<Connection>(
      worker, tls == nullptr ? Transport(std::move(socket))
                             : Transport(std::move(socket), std::move(tls)));
  asio::dispatch(worker.io(), [connection] { connection->Start(); });
  bool more;
  {
    std::lock_guard lock(mu_);
    more = ++open_ < max_connections_;
    paused_ = !more;
  }
  if (more) Accept();
}

void Listener::ConnectionClosed() {
  bool resume;
  {
    std::lock_guard lock(mu_);
    --open_;
    resume = paused_ && open_ < max_connections_;
    if (resume) paused_ = false;
  }
  if (resume) asio::post(acceptor_.get_executor(), [this] { Accept(); });
}

void Listener::Close() {
  beast::error_code ignored;
  retry_.cancel();
  acceptor_.close(ignored);  // Frees the port now.
}

StreamWriter::StreamWriter(std::shared_ptr<Worker> worker,
                           std::shared_ptr<Connection> connection,
                           std::shared_ptr<StreamState> stream)
    : worker_(std::move(worker)),
      connection_(std::move(connection)),
      stream_(std::move(stream)) {}

StreamWriter& StreamWriter::operator=(StreamWriter&& other) noexcept {
  if (this != &other) {
    StreamWriter unfinished(std::move(*this));  // Ends it if it must.
    worker_ = std::move(other.worker_);
    connection_ = std::move(other.connection_);
    stream_ = std::move(other.stream_);
  }
  return *this;
}

StreamWriter::~StreamWriter() {
  if (stream_ == nullptr) return;
  bool wake;
  OnClosed dropped;  // The owner is gone: nobody to tell.
  {
    std::lock_guard lock(stream_->mu);
    if (!stream_->open) return;
    stream_->open = false;
    stream_->abandoned = true;
    dropped = std::move(stream_->on_closed);
    wake = !stream_->connection_busy;
    stream_->connection_busy = true;
  }
  try {
    if (wake) connection_->Wake(stream_);
  } catch (...) {
    // Out of memory: the connection closes once nothing holds it.
  }
}

bool StreamWriter::Write(std::string bytes) {
  if (stream_ == nullptr) return false;
  bool wake = false;
  bool overflow = false;
  {
    std::lock_guard lock(stream_->mu);
    if (!stream_->open) return false;
    if (bytes.empty()) return true;
    if (stream_->queued_bytes + bytes.size() > stream_->limit) {
      stream_->open = false;
      overflow = true;
    } else {
      stream_->queued_bytes += bytes.size();
      stream_->queue.push_back(std::move(bytes));
      wake = !stream_->connection_busy;
      stream_->connection_busy = true;
    }
  }
  if (overflow) {
    connection_->Drop();  // The client does not read: let it go.
    return false;
  }
  if (wake) connection_->Wake(stream_);
  return true;
}

bool StreamWriter::Finish() {
  if (stream_ == nullptr) return false;
  bool wake;
  OnClosed done;  // Not called once Finish has returned.
  {
    std::lock_guard lock(stream_->mu);
    if (!stream_->open) return false;
    stream_->open = false;
    stream_->finish = true;
    done = std::move(stream_->on_closed);
    wake = !stream_->connection_busy;
    stream_->connection_busy = true;
  }
  if (wake) connection_->Wake(stream_);
  return true;
}

size_t StreamWriter::queued_bytes() const {
  if (stream_ == nullptr) return 0;
  std::lock_guard lock(stream_->mu);
  return stream_->queued_bytes;
}

Responder& Responder::operator=(Responder&& other) noexcept {
  if (this != &other) {
    Responder unanswered(std::move(*this));  // Answers 500 if it must.
    worker_ = std::move(other.worker_);
    connection_ = std::move(other.connection_);
    registered_on_closed_ = other.registered_on_closed_;
  }
  return *this;
}

Responder::~Responder() {
  if (connection_ == nullptr) return;
  try {
    Take()->Answer(PlainText(bhttp::status::internal_server_error,
                             "the handler did not answer"));
  } catch (...) {
    // Out of memory: the connection closes once nothing holds it.
  }
}

std::shared_ptr<Connection> Responder::Take() {
  std::shared_ptr<Connection> connection = std::move(connection_);
  if (connection != nullptr && registered_on_closed_) {
    connection->ClearOnClientGone();
  }
  return connection;
}

void Responder::Send(Response response) && {
  if (std::shared_ptr<Connection> connection = Take()) {
    connection->Answer(std::move(response));
  }
}

StreamWriter Responder::StartStream(Response head, OnClosed on_closed) && {
  std::shared_ptr<Connection> connection = std::move(connection_);
  std::shared_ptr<StreamState> stream;
  if (connection == nullptr) {
    // Answered already: a writer that takes nothing.
    stream = std::make_shared<StreamState>(0);
    std::lock_guard lock(stream->mu);
    stream->open = false;
  } else {
    stream = connection->OpenStream(std::move(head), std::move(on_closed));
  }
  return StreamWriter(worker_, std::move(connection), std::move(stream));
}

void Responder::OnClientGone(OnClosed on_closed) {
  if (connection_ == nullptr) return;
  registered_on_closed_ = true;
  connection_->SetOnClientGone(std::move(on_closed));
}

Routes& Routes::Add(Verb method, std::string path, Handler handler) {
  by_path_[std::move(path)].emplace_back(method, std::move(handler));
  return *this;
}

Routes::Match Routes::Find(Verb method, absl::string_view path) const {
  Match match;
  auto it = by_path_.find(path);
  if (it == by_path_.end()) return match;
  match.route = it->first;
  const Handler* get = nullptr;
  bool has_head = false;
  for (const auto& [verb, handler] : it->second) {
    if (verb == method) match.handler = &handler;
    if (verb == Verb::get) get = &handler;
    if (verb == Verb::head) has_head = true;
  }
  if (get != nullptr && !has_head && method == Verb::head) {
    match.handler = get;
  }
  if (match.handler != nullptr) return match;  // Allow is for 405 only.
  std::vector<absl::string_view> allowed;
  for (const auto& [verb, handler] : it->second) {
    allowed.push_back(View(bhttp::to_string(verb)));
  }
  if (get != nullptr && !has_head) allowed.push_back("HEAD");
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
  const int threads = std::max(1, options.io_threads);
  const int max_connections = options.max_connections;
  const int backlog = std::max(1, options.listen_backlog);
  const std::vector<LoopGuest*> guests = options.guests;
  std::shared_ptr<asio::ssl::context> tls;
  if (options.tls.has_value()) {
    auto context = TlsContext(*options.tls);
    if (!context.ok()) return context.status();
    tls = *std::move(context);
  }
  auto shared = std::make_shared<Shared>(std::move(options), std::move(routes));
  {
    std::lock_guard lock(shared->tls_mu);
    shared->tls_context = std::move(tls);
  }
  auto server = std::unique_ptr<HttpServer>(new HttpServer());
  server->shared_ = shared;
  std::vector<Worker*> workers;
  for (int i = 0; i < threads; ++i) {
    server->workers_.push_back(std::make_shared<Worker>(shared));
    workers.push_back(server->workers_.back().get());
  }
  for (int i = 1; i < threads; ++i) {
    server->workers_.front()->KeepAlive(server->workers_[i]);
  }
  server->listener_ = std::make_unique<Listener>(workers, max_connections);
  beast::error_code error;
  tcp::resolver resolver(workers.front()->io());
  auto endpoints = resolver.resolve(host, port, tcp::resolver::passive, error);
  if (error || endpoints.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot resolve \"", host,
        "\": ", error ? error.message() : std::string("no address")));
  }
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  tcp::acceptor& acceptor = server->listener_->acceptor();
  acceptor.open(endpoint.protocol(), error);
  // SO_REUSEADDR only lets a restart bind past TIME_WAIT; a port another
  // process listens on is still refused (there is no SO_REUSEPORT).
  if (!error) acceptor.set_option(tcp::acceptor::reuse_address(true), error);
  if (!error) acceptor.bind(endpoint, error);
  if (!error) acceptor.listen(backlog, error);
  if (error == asio::error::address_in_use) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", address, ": port ", port, " is already in use"));
  }
  if (error) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", address, ": ", error.message()));
  }
  server->port_ = acceptor.local_endpoint(error).port();
  for (Worker* worker : workers) worker->set_listener(server->listener_.get());
  server->listener_->Accept();
  for (size_t i = 0; i < guests.size(); ++i) {
    workers[i % workers.size()]->Host(guests[i]);
  }
  for (Worker* worker : workers) {
    server->threads_.emplace_back([worker] { worker->Run(); });
  }
  return server;
}

absl::Status HttpServer::SetTls(const TlsIdentity& tls) {
  if (shared_->tls() == nullptr) {
    return absl::FailedPreconditionError(
        "this server was started without TLS; it cannot take it up");
  }
  auto context = TlsContext(tls);
  if (!context.ok()) return context.status();
  std::lock_guard lock(shared_->tls_mu);
  shared_->tls_context = *std::move(context);
  return absl::OkStatus();
}

HttpServer::~HttpServer() {
  for (const std::shared_ptr<Worker>& worker : workers_) worker->Stop();
  for (std::thread& thread : threads_) thread.join();
  // Before connections close: cancelling their calls needs a running loop.
  for (const std::shared_ptr<Worker>& worker : workers_) {
    worker->ReleaseGuests();
  }
  if (listener_ != nullptr) listener_->Close();
  for (const std::shared_ptr<Worker>& worker : workers_) worker->Shutdown();
  listener_.reset();  // Its sockets use the first worker's loop.
  // Connections go with their worker's loop, once no Responder or
  // StreamWriter holds it.
}

}  // namespace arbiter::http
