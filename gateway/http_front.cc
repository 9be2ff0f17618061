#include "gateway/http_front.h"

#include <iostream>
#include <mutex>
#include <optional>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gateway/auth/authenticator.h"
#include "gateway/openai/chat_request.h"
#include "gateway/openai/chat_response.h"
#include "gateway/openai/endpoints.h"
#include "gateway/openai/errors.h"
#include "nlohmann/json.hpp"
#include "retrieval/tokenizer.h"

namespace arbiter {
namespace {

namespace beast_http = boost::beast::http;

http::Response JsonResponse(int status, std::string body) {
  http::Response response(static_cast<beast_http::status>(status), 11);
  response.set(beast_http::field::content_type, "application/json");
  response.body() = std::move(body);
  return response;
}

http::Response ErrorResponse(const openai::HttpError& error) {
  http::Response response = JsonResponse(error.status, error.body);
  for (const auto& [name, value] : error.headers) response.set(name, value);
  return response;
}

void Reply(http::Responder responder, const openai::HttpError& error) {
  std::move(responder).Send(ErrorResponse(error));
}

std::vector<std::pair<absl::string_view, absl::string_view>> HeaderFields(
    const http::Request& request) {
  std::vector<std::pair<absl::string_view, absl::string_view>> fields;
  for (const auto& field : request) {
    fields.emplace_back(
        absl::string_view(field.name_string().data(),
                          field.name_string().size()),
        absl::string_view(field.value().data(), field.value().size()));
  }
  return fields;
}

// The caller of `request` to `gateway`, by its Authorization header.
absl::StatusOr<auth::Caller> CallerOf(const Gateway& gateway,
                                      const http::Request& request) {
  std::optional<absl::string_view> authorization;
  if (auto it = request.find(beast_http::field::authorization);
      it != request.end()) {
    authorization = absl::string_view(it->value().data(), it->value().size());
  }
  return gateway.authenticator().Identify(authorization, absl::Now());
}

// One chat completion between the pipeline and its client: the sink of the
// request, answering once at the end (unary) or as a stream of SSE events.
class ChatExchange final : public InferSink,
                           public std::enable_shared_from_this<ChatExchange> {
 public:
  ChatExchange(openai::ChatCompletion chat, http::Responder responder,
               std::shared_ptr<std::atomic<int>> in_flight)
      : chat_(std::move(chat)),
        in_flight_(std::move(in_flight)),
        responder_(std::move(responder)) {
    ++*in_flight_;
  }

  // Runs on `gateway`, which it holds until it ends, for `tenant` (see
  // InferOptions).
  void Start(std::shared_ptr<Gateway> gateway,
             const auth::TenantGrant* tenant) {
    gateway_ = gateway;
    RequestPipeline& pipeline = gateway->pipeline();
    {
      std::lock_guard lock(mu_);
      responder_->OnClientGone(CancelOnClose());
    }
    InferOptions options;
    options.stream = chat_.stream;
    options.tenant = tenant;
    if (chat_.timeout.has_value()) {
      options.deadline = absl::Now() + *chat_.timeout;
    }
    std::shared_ptr<InferHandle> handle =
        pipeline.Infer(chat_.request, options, shared_from_this());
    bool gone;
    {
      std::lock_guard lock(handle_mu_);
      handle_ = handle;
      gone = client_gone_;
    }
    if (gone) handle->Cancel();
  }

  void OnStart(const v1::InferResponse& head) override {
    if (!chat_.stream) return;
    std::lock_guard lock(mu_);
    if (!responder_.has_value()) return;
    header_ = openai::MakeCompletionHeader(chat_, head, absl::Now());
    header_.include_usage = chat_.include_usage;
    http::Response start(beast_http::status::ok, 11);
    start.set(beast_http::field::content_type, "text/event-stream");
    start.set(beast_http::field::cache_control, "no-cache");
    for (const auto& [name, value] : openai::ArbiterHeaders(head, false)) {
      start.set(name, value);
    }
    start.body() = openai::RenderFirstChunk(head, header_);
    writer_.emplace(
        std::move(*responder_).StartStream(std::move(start), CancelOnClose()));
    responder_.reset();
  }

  void OnDelta(BackendDelta delta) override {
    if (!chat_.stream) {
      text_ += delta.text;
      return;
    }
    v1::TextDelta wire;
    wire.set_text(std::move(delta.text));
    wire.set_passthrough_json(std::move(delta.fields_json));
    std::lock_guard lock(mu_);
    if (writer_.has_value()) {
      writer_->Write(openai::RenderDeltaChunk(wire, header_));
    }
  }

  void OnEnd(const absl::Status& status, v1::InferResponse& response) override {
    // Counted out once answered: after the reply below, whichever it is.
    absl::Cleanup answered = [this] { --*in_flight_; };
    std::lock_guard lock(mu_);
    if (writer_.has_value()) {  // The stream started: end it.
      writer_->Write(status.ok() ? openai::RenderStreamEnd(response, header_)
                                 : openai::RenderStreamError(status));
      writer_->Finish();
      writer_.reset();
      return;
    }
    if (!responder_.has_value()) return;
    http::Responder responder = std::move(*responder_);
    responder_.reset();
    if (!status.ok()) {
      Reply(std::move(responder), status.code() == absl::StatusCode::kCancelled
                                      ? openai::ClientClosed()
                                      : openai::ErrorFor(status));
      return;
    }
    response.set_text(std::move(text_));
    const openai::CompletionHeader header =
        openai::MakeCompletionHeader(chat_, response, absl::Now());
    http::Response answer =
        JsonResponse(200, openai::RenderChatCompletion(response, header));
    for (const auto& [name, value] : openai::ArbiterHeaders(response, true)) {
      answer.set(name, value);
    }
    std::move(responder).Send(std::move(answer));
  }

 private:
  // Cancels the request when its client goes away. Takes only handle_mu_,
  // so the server may call it while mu_ is held.
  http::OnClosed CancelOnClose() {
    return [weak = weak_from_this()] {
      auto self = weak.lock();
      if (self == nullptr) return;
      std::shared_ptr<InferHandle> handle;
      {
        std::lock_guard lock(self->handle_mu_);
        self->client_gone_ = true;
        handle = self->handle_;
      }
      if (handle != nullptr) handle->Cancel();
    };
  }

  // The request the pipeline reads until OnEnd: it lives here.
  const openai::ChatCompletion chat_;
  const std::shared_ptr<std::atomic<int>> in_flight_;
  std::string text_;  // A unary answer's deltas.
  std::mutex mu_;     // std:: so ThreadSanitizer sees it.
  std::optional<http::Responder> responder_ ABSL_GUARDED_BY(mu_);
  std::optional<http::StreamWriter> writer_ ABSL_GUARDED_BY(mu_);
  openai::CompletionHeader header_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<Gateway> gateway_;  // Set once, by Start.
  std::mutex handle_mu_;              // Never held while taking mu_.
  std::shared_ptr<InferHandle> handle_ ABSL_GUARDED_BY(handle_mu_);
  bool client_gone_ ABSL_GUARDED_BY(handle_mu_) = false;
};

}  // namespace

class HttpFront::Handlers {
 public:
  explicit Handlers(HttpFront& front)
      : front_(front),
        host_(front.host_),
        started_(absl::ToUnixSeconds(absl::Now())) {}

  void ChatCompletions(http::Request request, http::Responder responder) {
    std::shared_ptr<Gateway> gateway = host_.Current();
    auto caller = CallerOf(*gateway, request);
    if (!caller.ok())
      return Reply(std::move(responder), openai::ErrorFor(caller.status()));
    const auto headers = HeaderFields(request);
    auto chat = openai::ParseChatCompletionRequest(request.body(), headers);
    if (!chat.ok())
      return Reply(std::move(responder), openai::ErrorFor(chat.status()));
    if (!chat->request.route().empty() &&
        !gateway->parts().route_index.contains(chat->request.route())) {
      std::vector<std::string> route_names;
      for (const v1::Route& route : gateway->config().routes()) {
        route_names.push_back(route.name());
      }
      return Reply(std::move(responder),
                   openai::ErrorFor(openai::UnknownModel(*chat, route_names)));
    }
    if (front_.draining_) {
      return Reply(std::move(responder),
                   openai::ErrorFor(openai::WithSource(
                       absl::UnavailableError("the gateway is shutting down"),
                       openai::ErrorSource::kArbiter)));
    }
    auto exchange = std::make_shared<ChatExchange>(
        *std::move(chat), std::move(responder), front_.in_flight_);
    exchange->Start(std::move(gateway), caller->tenant);
  }

  void Models(http::Request request, http::Responder responder) const {
    std::shared_ptr<Gateway> gateway = host_.Current();
    auto caller = CallerOf(*gateway, request);
    if (!caller.ok())
      return Reply(std::move(responder), openai::ErrorFor(caller.status()));
    std::vector<openai::ModelEntry> models;
    const auto& routes = gateway->config().routes();
    for (int r = 0; r < routes.size(); ++r) {
      // A tenant sees the routes it may use; arbiter/auto chooses among them.
      if (caller->tenant != nullptr && !caller->tenant->routes[r]) continue;
      models.push_back({routes[r].name(), "arbiter"});
    }
    std::move(responder).Send(
        JsonResponse(200, openai::RenderModelsList(models, started_)));
  }

  void Embeddings(http::Request request, http::Responder responder) {
    std::shared_ptr<Gateway> gateway = host_.Current();
    if (auto caller = CallerOf(*gateway, request); !caller.ok())
      return Reply(std::move(responder), openai::ErrorFor(caller.status()));
    auto parsed = openai::ParseEmbeddingsRequest(request.body());
    absl::Status valid = parsed.status();
    const int dim = gateway->config().retrieval().embedding_dim();
    if (valid.ok()) valid = openai::CheckDimensions(*parsed, dim);
    if (!valid.ok())
      return Reply(std::move(responder), openai::ErrorFor(valid));
    // An embedding server's round trip must not hold an I/O thread.
    auto held = std::make_shared<http::Responder>(std::move(responder));
    const GatewayParts& parts = gateway->parts();
    parts.retrieval_pool->Submit([&parts, gateway, held, dim,
                                  embeddings = *std::move(parsed)](
                                     absl::Status admitted) mutable {
      if (!admitted.ok()) {
        return Reply(std::move(*held),
                     openai::ErrorFor(openai::WithSource(
                         admitted, openai::ErrorSource::kArbiter)));
      }
      std::vector<std::vector<float>> vectors;
      int64_t tokens = 0;
      for (const std::string& text : embeddings.inputs) {
        tokens += static_cast<int64_t>(retrieval::Words(text).size());
        if (parts.corpus != nullptr) {
          auto vector = parts.corpus->Embed(text);
          if (!vector.ok())
            return Reply(std::move(*held), openai::ErrorFor(vector.status()));
          vectors.push_back(*std::move(vector));
        } else if (parts.prompt_embedder != nullptr) {
          vectors.push_back(parts.prompt_embedder->Embed(text));
        } else {
          vectors.emplace_back(dim);
        }
      }
      std::move(*held).Send(JsonResponse(
          200, openai::RenderEmbeddings(vectors, embeddings.model, tokens,
                                        embeddings.encoding)));
    });
  }

  void Feedback(http::Request request, http::Responder responder) {
    std::shared_ptr<Gateway> gateway = host_.Current();
    auto caller = CallerOf(*gateway, request);
    if (!caller.ok())
      return Reply(std::move(responder), openai::ErrorFor(caller.status()));
    auto parsed = openai::ParseFeedbackRequest(request.body());
    if (!parsed.ok())
      return Reply(std::move(responder), openai::ErrorFor(parsed.status()));
    std::optional<absl::string_view> tenant;
    if (caller->role == auth::Role::kTenant) tenant = caller->tenant->name;
    auto recorded = gateway->feedback().Record(*parsed, tenant);
    if (!recorded.ok())
      return Reply(std::move(responder), openai::ErrorFor(recorded.status()));
    std::move(responder).Send(JsonResponse(
        200, openai::RenderFeedbackResponse(parsed->request_id(), *recorded)));
  }

  void Healthz(http::Request, http::Responder responder) const {
    std::move(responder).Send(JsonResponse(200, R"({"status":"ok"})"));
  }

  void Readyz(http::Request, http::Responder responder) const {
    if (front_.draining_) {
      return std::move(responder).Send(JsonResponse(
          503,
          R"({"status":"draining","reason":"the gateway is shutting down"})"));
    }
    const Readiness::Report report = front_.readiness_.Check(absl::Now());
    nlohmann::json backends = nlohmann::json::object();
    for (const Readiness::BackendState& backend : report.backends) {
      backends[backend.name] = backend.state;
    }
    nlohmann::json body = {{"status", report.ready ? "ready" : "unready"},
                           {"backends", backends}};
    if (!report.ready) body["reason"] = Readiness::kUnreadyReason;
    std::move(responder).Send(
        JsonResponse(report.ready ? 200 : 503, body.dump()));
  }

 private:
  HttpFront& front_;
  GatewayHost& host_;
  const int64_t started_;
};

HttpFront::HttpFront(GatewayHost& host, const Readiness& readiness)
    : host_(host), readiness_(readiness) {}

absl::StatusOr<std::unique_ptr<HttpFront>> HttpFront::Start(
    GatewayHost& host, const Readiness& readiness,
    std::optional<TlsIdentity> tls) {
  const v1::Server server = host.Current()->config().server();
  auto front = std::unique_ptr<HttpFront>(new HttpFront(host, readiness));
  front->handlers_ = std::make_unique<Handlers>(*front);
  Handlers* h = front->handlers_.get();
  http::Routes routes;
  routes.Add(http::Verb::post, "/v1/chat/completions",
             [h](http::Request r, http::Responder s) {
               h->ChatCompletions(std::move(r), std::move(s));
             });
  routes.Add(http::Verb::get, "/v1/models",
             [h](http::Request r, http::Responder s) {
               h->Models(std::move(r), std::move(s));
             });
  routes.Add(http::Verb::post, "/v1/embeddings",
             [h](http::Request r, http::Responder s) {
               h->Embeddings(std::move(r), std::move(s));
             });
  routes.Add(http::Verb::post, "/v1/feedback",
             [h](http::Request r, http::Responder s) {
               h->Feedback(std::move(r), std::move(s));
             });
  routes.Add(http::Verb::get, "/healthz",
             [h](http::Request r, http::Responder s) {
               h->Healthz(std::move(r), std::move(s));
             });
  routes.Add(http::Verb::get, "/readyz",
             [h](http::Request r, http::Responder s) {
               h->Readyz(std::move(r), std::move(s));
             });
  http::HttpServerOptions options;
  options.address = server.http_listen();
  options.io_threads = server.http_io_threads();
  options.max_connections = server.http_max_connections();
  options.max_body_bytes = static_cast<size_t>(server.max_request_bytes());
  // A chat completion and its backend call then run on one thread.
  options.guests = host.foundation().BackendLoops();
  options.tls = std::move(tls);
  auto started = http::HttpServer::Start(std::move(options), std::move(routes));
  if (!started.ok()) return started.status();
  front->server_ = *std::move(started);
  return front;
}

HttpFront::~HttpFront() { server_.reset(); }

bool HttpFront::WaitIdle(absl::Time deadline) const {
  while (in_flight_->load() > 0) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

}  // namespace arbiter
