#include "gateway/sim/sim_server.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <iostream>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "boost/asio/dispatch.hpp"
#include "boost/asio/executor_work_guard.hpp"
#include "boost/asio/io_context.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/steady_timer.hpp"
#include "boost/asio/strand.hpp"
#include "boost/asio/write.hpp"
#include "boost/beast/core/bind_handler.hpp"
#include "boost/beast/core/error.hpp"
#include "boost/beast/core/flat_buffer.hpp"
#include "boost/beast/core/tcp_stream.hpp"
#include "boost/beast/http/chunk_encode.hpp"
#include "boost/beast/http/empty_body.hpp"
#include "boost/beast/http/error.hpp"
#include "boost/beast/http/parser.hpp"
#include "boost/beast/http/read.hpp"
#include "boost/beast/http/serializer.hpp"
#include "boost/beast/http/string_body.hpp"
#include "boost/beast/http/write.hpp"
#include "common/json.h"
#include "nlohmann/json.hpp"
#include "retrieval/embedder.h"
#include "retrieval/tokenizer.h"

namespace arbiter::sim {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using ::arbiter::json::Dump;
using ::arbiter::json::View;
using nlohmann::json;
using Response = bhttp::response<bhttp::string_body>;

// Handlers only parse and format; the waiting is done by timers.
constexpr int kIoThreads = 2;
// Larger request bodies get 413 before they are read into memory.
constexpr size_t kMaxRequestBytes = 8 << 20;
constexpr uint32_t kMaxHeaderBytes = 64 << 10;
// For a request to arrive (also on a kept-alive connection), and for one
// write to a client that does not read.
constexpr std::chrono::seconds kReadTimeout(60);
constexpr std::chrono::seconds kWriteTimeout(30);
// How long a refused request's body is read and dropped before closing, so
// that the client reads the refusal instead of a reset connection.
constexpr std::chrono::seconds kLingerTimeout(5);
constexpr int64_t kMaxTokensLimit = 1'000'000;
constexpr int64_t kMaxDimensions = 8192;

void Log(absl::string_view message) {
  std::cerr << absl::StrCat("arbiter: sim-server: ", message, "\n")
            << std::flush;
}

Response JsonResponse(bhttp::status status, const json& body) {
  Response response(status, 11);
  response.set(bhttp::field::content_type, "application/json");
  response.body() = Dump(body);
  return response;
}

Response ErrorResponse(bhttp::status status, absl::string_view type,
                       absl::string_view message) {
  return JsonResponse(status,
                      json{{"error", {{"type", type}, {"message", message}}}});
}

Response BadRequest(absl::string_view message) {
  return ErrorResponse(bhttp::status::bad_request, "invalid_request_error",
                       message);
}

// The request's JSON object; INVALID_ARGUMENT with the 400's message.
absl::StatusOr<json> ParseBody(absl::string_view text) {
  auto body = arbiter::json::Parse(text);
  if (!body.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("body: not JSON: ", body.status().message()));
  }
  if (!body->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "body: expected an object, got ", arbiter::json::TypeName(*body)));
  }
  return *std::move(body);
}

// A chat completion request, read and answered by the simulator; to be
// sent when its time comes.
struct ChatCall {
  std::string id;
  std::string model;
  SimAnswer answer;
  int64_t prompt_tokens = 0;
  std::string finish_reason;
  bool stream = false;
  bool include_usage = false;
  int64_t created = 0;
};

// INVALID_ARGUMENT with the 400's message, naming the field.
absl::StatusOr<ChatCall> ReadChat(const Simulator& simulator,
                                  absl::string_view text) {
  auto body = ParseBody(text);
  if (!body.ok()) return body.status();
  const View root(*body);
  ChatCall call;
  auto stream = root["stream"].OptionalBool();
  if (!stream.ok()) return stream.status();
  call.stream = stream->value_or(false);
  auto include_usage = root["stream_options"]["include_usage"].OptionalBool();
  if (!include_usage.ok()) return include_usage.status();
  call.include_usage = include_usage->value_or(false);
  auto model = root["model"].String();
  if (!model.ok()) return model.status();
  call.model = *std::move(model);
  const View messages_json = root["messages"];
  if (!messages_json.is_array() || messages_json.size() == 0) {
    return absl::InvalidArgumentError("messages: must be a non-empty array");
  }
  std::vector<SimMessage> messages;
  for (size_t i = 0; i < messages_json.size(); ++i) {
    auto role = messages_json[i]["role"].String();
    if (!role.ok()) return role.status();
    auto content = messages_json[i]["content"].String();
    if (!content.ok()) return content.status();
    messages.push_back({*std::move(role), *std::move(content)});
    call.prompt_tokens += retrieval::CountTokens(messages.back().content) + 4;
  }
  auto max_tokens = root["max_tokens"].OptionalInt();
  if (!max_tokens.ok()) return max_tokens.status();
  if (max_tokens->value_or(0) < 0 ||
      max_tokens->value_or(0) > kMaxTokensLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens: must be in [0, ", kMaxTokensLimit, "]"));
  }
  auto seed = root["seed"].OptionalInt();
  if (!seed.ok()) return seed.status();
  const int limit = static_cast<int>(max_tokens->value_or(0));
  call.answer = simulator.Answer(call.model, messages, limit, *seed);
  call.finish_reason =
      limit > 0 && call.answer.output_tokens >= limit ? "length" : "stop";
  thread_local absl::BitGen gen;
  call.id = absl::StrCat("chatcmpl-sim-", absl::Uniform<uint64_t>(gen));
  call.created = absl::ToUnixSeconds(absl::Now());
  return call;
}

json Usage(const ChatCall& call) {
  return {{"prompt_tokens", call.prompt_tokens},
          {"completion_tokens", call.answer.output_tokens},
          {"total_tokens", call.prompt_tokens + call.answer.output_tokens}};
}

json Completion(const ChatCall& call) {
  return {
      {"id", call.id},
      {"object", "chat.completion"},
      {"created", call.created},
      {"model", call.model},
      {"choices",
       json::array({{{"index", 0},
                     {"message",
                      {{"role", "assistant"}, {"content", call.answer.text}}},
                     {"finish_reason", call.finish_reason}}})},
      {"usage", Usage(call)}};
}

// One SSE event holding a chat.completion.chunk.
std::string ChunkEvent(const ChatCall& call, json choices,
                       std::optional<json> usage = std::nullopt) {
  json chunk = {{"id", call.id},
                {"object", "chat.completion.chunk"},
                {"created", call.created},
                {"model", call.model},
                {"choices", std::move(choices)}};
  if (usage.has_value()) chunk["usage"] = *std::move(usage);
  return absl::StrCat("data: ", Dump(chunk), "\n\n");
}

std::string DeltaEvent(const ChatCall& call, json delta,
                       const std::string* finish_reason) {
  return ChunkEvent(call,
                    json::array({{{"index", 0},
                                  {"delta", std::move(delta)},
                                  {"logprobs", nullptr},
                                  {"finish_reason", finish_reason != nullptr
                                                        ? json(*finish_reason)
                                                        : json(nullptr)}}}));
}

// The embeddings for the request; INVALID_ARGUMENT with the 400's message.
absl::StatusOr<json> Embeddings(int default_dim, absl::string_view text) {
  auto body = ParseBody(text);
  if (!body.ok()) return body.status();
  const View root(*body);
  std::vector<std::string> inputs;
  const View input = root["input"];
  if (auto single = input.String(); single.ok()) {
    inputs.push_back(*std::move(single));
  } else if (input.is_array() && input.size() > 0) {
    for (size_t i = 0; i < input.size(); ++i) {
      auto item = input[i].String();
      if (!item.ok()) return item.status();
      inputs.push_back(*std::move(item));
    }
  } else {
    return absl::InvalidArgumentError(
        "input: a string or a non-empty array of strings");
  }
  auto dimensions = root["dimensions"].OptionalInt();
  if (!dimensions.ok() || dimensions->value_or(default_dim) < 1 ||
      dimensions->value_or(default_dim) > kMaxDimensions) {
    return absl::InvalidArgumentError(
        absl::StrCat("dimensions: an integer in [1, ", kMaxDimensions, "]"));
  }
  auto model = root["model"].OptionalString();
  if (!model.ok()) return model.status();
  const retrieval::HashedNgramEmbedder embedder(
      static_cast<int>(dimensions->value_or(default_dim)));
  json data = json::array();
  int64_t tokens = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    tokens += static_cast<int64_t>(retrieval::Words(inputs[i]).size());
    data.push_back({{"object", "embedding"},
                    {"index", i},
                    {"embedding", embedder.Embed(inputs[i])}});
  }
  return json{{"object", "list"},
              {"model", model->value_or("sim-embedding")},
              {"data", std::move(data)},
              {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}};
}

json Models(const Simulator& simulator) {
  json models = json::array();
  for (const v1::SimModel& model : simulator.config().models()) {
    models.push_back({{"id", model.name()},
                      {"object", "model"},
                      {"owned_by", "arbiter-sim"}});
  }
  return json{{"object", "list"}, {"data", std::move(models)}};
}

std::chrono::steady_clock::duration Until(absl::Time when) {
  return absl::ToChronoNanoseconds(
      std::max(absl::ZeroDuration(), when - absl::Now()));
}

}  // namespace

struct SimServer::State {
  State(std::shared_ptr<const Simulator> simulator, int embedding_dim)
      : simulator(std::move(simulator)),
        embedding_dim(embedding_dim),
        io(kIoThreads),
        work(asio::make_work_guard(io)),
        acceptor(asio::make_strand(io)) {}

  void Accept();

  const std::shared_ptr<const Simulator> simulator;
  const int embedding_dim;
  // Declared before what holds its executors, so destroyed after them.
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  tcp::acceptor acceptor;
  std::mutex threads_mu;  // std:: so ThreadSanitizer sees it.
  std::vector<std::thread> threads;
};

namespace {

// One client connection: reads a request, answers it when the simulated
// model would have (a timer, not a thread), and reads the next one. Every
// step runs on the connection's strand.
class Connection final : public std::enable_shared_from_this<Connection> {
 public:
  Connection(SimServer::State& state, tcp::socket socket)
      : state_(state),
        stream_(std::move(socket)),
        timer_(stream_.get_executor()) {}

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void Start() {
    asio::dispatch(stream_.get_executor(),
                   [self = shared_from_this()] { self->Read(); });
  }

 private:
  void Read() {
    parser_.emplace();
    parser_->header_limit(kMaxHeaderBytes);
    parser_->body_limit(kMaxRequestBytes);
    stream_.expires_after(kReadTimeout);
    bhttp::async_read(
        stream_, buffer_, *parser_,
        beast::bind_front_handler(&Connection::OnRead, shared_from_this()));
  }

  void OnRead(beast::error_code error, size_t /*bytes*/) {
    stream_.expires_never();
    if (error == bhttp::error::body_limit) {
      return Refuse(ErrorResponse(bhttp::status::payload_too_large,
                                  "invalid_request_error",
                                  "request body too large"));
    }
    if (error == bhttp::error::header_limit) {
      return Refuse(ErrorResponse(
          bhttp::status::request_header_fields_too_large,
          "invalid_request_error", "request header fields too large"));
    }
    if (error) {
      static const beast::error_category& kParseErrors =
          bhttp::make_error_code(bhttp::error::bad_method).category();
      if (&error.category() == &kParseErrors &&
          error != bhttp::error::end_of_stream &&
          error != bhttp::error::partial_message) {
        return Refuse(BadRequest("malformed HTTP request"));
      }
      return Close();
    }
    bhttp::request<bhttp::string_body> request = parser_->release();
    version_ = request.version();
    keep_alive_ = request.keep_alive();
    // The last line of defence: a handler's exception is this request's
    // 500 (handlers throw before they start anything).
    try {
      Dispatch(request);
    } catch (const std::exception& e) {
      Log(absl::StrCat("a handler threw: ", e.what()));
      Send(ErrorResponse(bhttp::status::internal_server_error, "internal_error",
                         e.what()));
    } catch (...) {
      Send(ErrorResponse(bhttp::status::internal_server_error, "internal_error",
                         "unknown exception"));
    }
  }

  void Dispatch(const bhttp::request<bhttp::string_body>& request) {
    const absl::string_view target(request.target().data(),
                                   request.target().size());
    const absl::string_view path = target.substr(0, target.find_first_of("?#"));
    const bhttp::verb method = request.method();
    const absl::string_view body(request.body().data(), request.body().size());
    if (path == "/v1/chat/completions" && method == bhttp::verb::post) {
      absl::StatusOr<ChatCall> call = ReadChat(*state_.simulator, body);
      if (!call.ok()) return Send(BadRequest(call.status().message()));
      start_ = absl::Now();
      call_ = *std::move(call);
      if (call_->stream) return StartStream();
      timer_.expires_after(Until(start_ + call_->answer.delay));
      return timer_.async_wait(
          [self = shared_from_this()](beast::error_code error) {
            if (error) return self->Close();
            ChatCall call = *std::move(self->call_);
            self->call_.reset();
            self->Send(JsonResponse(bhttp::status::ok, Completion(call)));
          });
    }
    if (path == "/v1/embeddings" && method == bhttp::verb::post) {
      absl::StatusOr<json> reply = Embeddings(state_.embedding_dim, body);
      if (!reply.ok()) return Send(BadRequest(reply.status().message()));
      return Send(JsonResponse(bhttp::status::ok, *reply));
    }
    if (path == "/v1/models" && method == bhttp::verb::get) {
      return Send(JsonResponse(bhttp::status::ok, Models(*state_.simulator)));
    }
    if (path == "/health" && method == bhttp::verb::get) {
      Response response(bhttp::status::ok, 11);
      response.set(bhttp::field::content_type, "text/plain");
      response.body() = "ok\n";
      return Send(std::move(response));
    }
    Send(ErrorResponse(bhttp::status::not_found, "not_found",
                       absl::StrCat("no route for ", std::string(path))));
  }

  // The headers now; the chunks as the simulator paces them.
  void StartStream() {
    header_.emplace(bhttp::status::ok, version_);
    header_->set(bhttp::field::content_type, "text/event-stream");
    header_->set(bhttp::field::cache_control, "no-cache");
    header_->keep_alive(keep_alive_);
    header_->chunked(true);
    serializer_.emplace(*header_);
    stream_.expires_after(kWriteTimeout);
    bhttp::async_write_header(
        stream_, *serializer_,
        [self = shared_from_this()](beast::error_code error, size_t) {
          if (error) return self->Close();
          self->NextStreamStep();
        });
  }

  void NextStreamStep() {
    stream_.expires_never();
    const std::string& text = call_->answer.text;
    if (sent_ < text.size() || !role_sent_) {
      // An empty answer still has its first (and last) chunk.
      const SimChunk chunk =
          text.empty()
              ? SimChunk{0, 0,
                         absl::Seconds(state_.simulator->config()
                                           .time_to_first_token_seconds())}
              : state_.simulator->NextChunk(text, sent_, tokens_sent_);
      timer_.expires_after(Until(start_ + chunk.at));
      return timer_.async_wait(
          [self = shared_from_this(), chunk](beast::error_code error) {
            if (error) return self->Close();
            self->WriteChunk(chunk);
          });
    }
    // The usage and the end when the last token is done.
    timer_.expires_after(Until(start_ + call_->answer.delay));
    timer_.async_wait([self = shared_from_this()](beast::error_code error) {
      if (error) return self->Close();
      self->WriteEnd();
    });
  }

  void WriteChunk(const SimChunk& chunk) {
    const ChatCall& call = *call_;
    std::string events;
    if (!role_sent_) {
      role_sent_ = true;
      events =
          DeltaEvent(call, {{"role", "assistant"}, {"content", ""}}, nullptr);
    }
    const std::string piece = call.answer.text.substr(sent_, chunk.end - sent_);
    sent_ = chunk.end;
    tokens_sent_ += chunk.tokens;
    const bool last = sent_ >= call.answer.text.size();
    absl::StrAppend(&events, DeltaEvent(call, {{"content", piece}},
                                        last ? &call.finish_reason : nullptr));
    WriteEvents(std::move(events), [this] { NextStreamStep(); });
  }

  void WriteEnd() {
    std::string events;
    if (call_->include_usage) {
      events = ChunkEvent(*call_, json::array(), Usage(*call_));
    }
    absl::StrAppend(&events, "data: [DONE]\n\n");
    WriteEvents(std::move(events), [this] {
      stream_.expires_after(kWriteTimeout);
      asio::async_write(
          stream_, bhttp::make_chunk_last(),
          [self = shared_from_this()](beast::error_code error, size_t) {
            self->EndStream(error);
          });
    });
  }

  // Writes `events` as one HTTP chunk, then runs `next` (on success).
  template <typename Next>
  void WriteEvents(std::string events, Next next) {
    events_ = std::move(events);
    stream_.expires_after(kWriteTimeout);
    asio::async_write(stream_, bhttp::make_chunk(asio::buffer(events_)),
                      [self = shared_from_this(), next](beast::error_code error,
                                                        size_t) mutable {
                        // A client that went away ends the stream here.
                        if (error) return self->Close();
                        next();
                      });
  }

  void EndStream(beast::error_code error) {
    const bool close = error || !keep_alive_;
    call_.reset();
    serializer_.reset();
    header_.reset();
    events_ = std::string();
    sent_ = 0;
    tokens_sent_ = 0;
    role_sent_ = false;
    if (close) return Close();
    Read();
  }

  void Send(Response response) {
    response.version(version_);
    response.keep_alive(keep_alive_);
    response.prepare_payload();
    auto message = std::make_shared<Response>(std::move(response));
    stream_.expires_after(kWriteTimeout);
    bhttp::async_write(
        stream_, *message,
        [self = shared_from_this(), message](beast::error_code error, size_t) {
          if (error) return self->Close();
          if (message->need_eof()) return self->Linger();
          self->Read();
        });
  }

  // Answers a request that could not be read whole, then closes.
  void Refuse(Response response) {
    version_ = 11;
    keep_alive_ = false;
    Send(std::move(response));
  }

  // Closes after reading what the client still sends (a refused body), so
  // that it sees the answer rather than a reset.
  void Linger() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(kLingerTimeout);
    linger_.resize(64 << 10);
    stream_.async_read_some(
        asio::buffer(linger_),
        [self = shared_from_this()](beast::error_code error, size_t) {
          if (error) return self->Close();
          self->Linger();
        });
  }

  void Close() {
    timer_.cancel();
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  SimServer::State& state_;
  beast::tcp_stream stream_;
  asio::steady_timer timer_;  // The simulated model's time.
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  unsigned version_ = 11;
  bool keep_alive_ = false;
  std::string linger_;

  // The request being answered.
  absl::Time start_;
  std::optional<ChatCall> call_;
  // Of a stream.
  std::optional<bhttp::response<bhttp::empty_body>> header_;
  std::optional<bhttp::response_serializer<bhttp::empty_body>> serializer_;
  std::string events_;  // Being written.
  size_t sent_ = 0;
  int64_t tokens_sent_ = 0;
  bool role_sent_ = false;
};

}  // namespace

void SimServer::State::Accept() {
  acceptor.async_accept(asio::make_strand(io), [this](beast::error_code error,
                                                      tcp::socket socket) {
    if (error == asio::error::operation_aborted || !acceptor.is_open()) {
      return;
    }
    if (!error) {
      // Small chunks go out at once instead of waiting on Nagle.
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      std::make_shared<Connection>(*this, std::move(socket))->Start();
    } else {
      Log(absl::StrCat("accept failed: ", error.message()));
    }
    Accept();
  });
}

absl::StatusOr<std::unique_ptr<SimServer>> SimServer::Start(
    std::shared_ptr<const Simulator> simulator, const std::string& host,
    int port, int embedding_dim) {
  auto state = std::make_shared<State>(std::move(simulator), embedding_dim);
  auto cannot_listen = [&](absl::string_view why) {
    return absl::UnavailableError(absl::StrCat("sim-server: cannot listen on ",
                                               host, ":", port, ": ", why));
  };
  beast::error_code error;
  tcp::resolver resolver(state->io);
  auto endpoints = resolver.resolve(host, std::to_string(port),
                                    tcp::resolver::passive, error);
  if (error || endpoints.empty()) {
    return cannot_listen(error ? error.message() : "no address");
  }
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  tcp::acceptor& acceptor = state->acceptor;
  acceptor.open(endpoint.protocol(), error);
  if (!error) acceptor.set_option(tcp::acceptor::reuse_address(true), error);
  if (!error) acceptor.bind(endpoint, error);
  if (!error) acceptor.listen(asio::socket_base::max_listen_connections, error);
  if (error) return cannot_listen(error.message());
  auto server = std::unique_ptr<SimServer>(new SimServer());
  server->port_ = acceptor.local_endpoint(error).port();
  server->state_ = state;
  state->Accept();
  std::lock_guard lock(state->threads_mu);
  for (int i = 0; i < kIoThreads; ++i) {
    state->threads.emplace_back([state = state.get()] {
      // An exception out of a completion handler loses that connection,
      // never the process.
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

SimServer::~SimServer() {
  Stop();
  Wait();
  if (state_ == nullptr) return;
  beast::error_code ignored;
  state_->acceptor.close(ignored);  // Frees the port now.
}

void SimServer::Stop() {
  if (state_ != nullptr) state_->io.stop();
}

void SimServer::Wait() {
  if (state_ == nullptr) return;
  std::lock_guard lock(state_->threads_mu);
  for (std::thread& thread : state_->threads) {
    if (thread.joinable()) thread.join();
  }
}

}  // namespace arbiter::sim
