#include "gateway/grpc_server.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <deque>
#include <exception>
#include <iostream>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "gateway/auth/authenticator.h"
#include "gateway/tls/tls_identity.h"
#include "gateway/wire_check.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/impl/server_builder_plugin.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/support/byte_buffer.h"

namespace arbiter {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

namespace {

absl::Time DeadlineOf(const grpc::CallbackServerContext* context) {
  std::chrono::system_clock::time_point deadline = context->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

// The caller of a call to `gateway`, by its authorization metadata.
absl::StatusOr<auth::Caller> CallerOf(
    const Gateway& gateway, const grpc::CallbackServerContext* context) {
  std::optional<absl::string_view> authorization;
  const auto& metadata = context->client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    authorization = absl::string_view(it->second.data(), it->second.size());
  }
  return gateway.authenticator().Identify(authorization, absl::Now());
}

// OK when the call's key may call `method`, an admin-only one.
absl::Status AdminOnly(GatewayHost& host,
                       const grpc::CallbackServerContext* context,
                       absl::string_view method) {
  // Held while the caller, which points into it, is read.
  const std::shared_ptr<Gateway> gateway = host.Current();
  auto caller = CallerOf(*gateway, context);
  if (!caller.ok()) return caller.status();
  return auth::RequireAdmin(*caller, method);
}

// Ends a unary call before it is read.
grpc::ServerUnaryReactor* Refuse(grpc::CallbackServerContext* context,
                                 const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// Serves a unary call from its raw bytes. A request that protobuf refuses
// (most often a string field that is not UTF-8) would otherwise get gRPC
// 1.51's bare UNIMPLEMENTED with no message; parsed here, it gets
// INVALID_ARGUMENT naming the field.
// `handler(request, response, done)` answers through done, possibly later
// on another thread; the call's messages live until then.
template <typename Request, typename Response, typename Handler>
grpc::ServerUnaryReactor* Serve(grpc::CallbackServerContext* context,
                                const grpc::ByteBuffer* wire_request,
                                grpc::ByteBuffer* wire_response,
                                Handler handler) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  struct Call {
    Request request;
    Response response;
  };
  auto call = std::make_unique<Call>();
  grpc::ByteBuffer buffer(*wire_request);  // Shares the slices.
  if (!grpc::SerializationTraits<Request>::Deserialize(&buffer, &call->request)
           .ok()) {
    std::string bytes;
    std::vector<grpc::Slice> slices;
    if (wire_request->Dump(&slices).ok()) {
      for (const grpc::Slice& slice : slices) {
        bytes.append(reinterpret_cast<const char*>(slice.begin()),
                     slice.size());
      }
    }
    reactor->Finish(ToGrpcStatus(WhyUnparsable(*Request::descriptor(), bytes)));
    return reactor;
  }
  const Request& request = call->request;
  Response* response = &call->response;
  handler(request, response,
          [reactor, wire_response,
           call = std::move(call)](absl::Status status) mutable {
            if (status.ok()) {
              bool own_buffer = false;
              grpc::Status serialized =
                  grpc::SerializationTraits<Response>::Serialize(
                      call->response, wire_response, &own_buffer);
              if (!serialized.ok()) {
                status = absl::InternalError("the answer could not be encoded");
              }
            }
            reactor->Finish(ToGrpcStatus(status));
          });
  return reactor;
}

// A handler over a synchronous gateway method: these touch only local
// state (statistics, the decision log), never a backend or the store.
template <typename Request, typename Response, typename Method>
auto AnswerNow(Method method) {
  return [method](const Request& request, Response* response,
                  RetrievalService::Done done) mutable {
    absl::StatusOr<Response> result =
        absl::InternalError("the request failed unexpectedly");
    try {
      result = method(request);
    } catch (const std::exception& e) {
      std::cerr << "grpc: unexpected exception: " << e.what() << std::endl;
    }
    if (result.ok()) *response = *std::move(result);
    std::move(done)(result.status());
  };
}

// An asynchronous method of the Retrieval service as a handler.
template <typename Method>
auto Answer(RetrievalService& service, Method method) {
  return [&service, method](const auto& request, auto* response,
                            RetrievalService::Done done) {
    (service.*method)(request, response, std::move(done));
  };
}

// `handler` for a caller that may read the request's collection (named by
// `collection`); PERMISSION_DENIED naming it otherwise.
template <typename Request, typename Handler>
auto Searching(const auth::Caller& caller,
               const std::string& (Request::*collection)() const,
               Handler handler) {
  return [caller, collection, handler = std::move(handler)](
             const Request& request, auto* response,
             RetrievalService::Done done) mutable {
    if (absl::Status allowed = auth::MaySearch(caller, (request.*collection)());
        !allowed.ok()) {
      return std::move(done)(allowed);
    }
    handler(request, response, std::move(done));
  };
}

// Parses a raw request as Serve does; INVALID_ARGUMENT naming the field.
template <typename Request>
absl::Status ParseRaw(const grpc::ByteBuffer& wire, Request* request) {
  grpc::ByteBuffer buffer(wire);  // Shares the slices.
  if (grpc::SerializationTraits<Request>::Deserialize(&buffer, request).ok()) {
    return absl::OkStatus();
  }
  std::string bytes;
  std::vector<grpc::Slice> slices;
  if (wire.Dump(&slices).ok()) {
    for (const grpc::Slice& slice : slices) {
      bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
  }
  return WhyUnparsable(*Request::descriptor(), bytes);
}

// InferStream: the pipeline's events as messages, written one at a time in
// order; a client that cancels cancels the request (and its backend call).
class InferStreamReactor final
    : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
      public InferSink {
 public:
  // Starts the request; the reactor deletes itself when gRPC is done.
  static InferStreamReactor* Start(std::shared_ptr<Gateway> gateway,
                                   grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer* wire_request) {
    // Owned by itself (self_) until OnDone.
    auto reactor = std::shared_ptr<InferStreamReactor>(new InferStreamReactor);
    reactor->self_ = reactor;
    reactor->gateway_ = gateway;
    absl::StatusOr<auth::Caller> caller = CallerOf(*gateway, context);
    absl::Status parsed = caller.status();
    if (parsed.ok()) parsed = ParseRaw(*wire_request, &reactor->request_);
    if (!parsed.ok()) {
      reactor->Finish(ToGrpcStatus(parsed));
      return reactor.get();
    }
    InferOptions options;
    options.deadline = DeadlineOf(context);
    options.stream = true;
    options.tenant = caller->tenant;
    std::shared_ptr<InferHandle> handle =
        gateway->pipeline().Infer(reactor->request_, options, reactor);
    {
      std::lock_guard lock(reactor->mu_);
      reactor->handle_ = std::move(handle);
      if (reactor->cancelled_) reactor->handle_->Cancel();
    }
    return reactor.get();
  }

  void OnStart(const v1::InferResponse& head) override {
    v1::InferChunk chunk;
    *chunk.mutable_start() = head;
    Queue(chunk);
  }
  void OnDelta(BackendDelta delta) override {
    v1::InferChunk chunk;
    v1::TextDelta& out = *chunk.mutable_delta();
    out.set_text(std::move(delta.text));
    out.set_passthrough_json(std::move(delta.fields_json));
    Queue(chunk);
  }
  void OnEnd(const absl::Status& status, v1::InferResponse& response) override {
    std::lock_guard lock(mu_);
    if (status.ok()) {
      v1::InferChunk chunk;
      *chunk.mutable_end() = std::move(response);
      QueueLocked(chunk);
    }
    final_status_ = ToGrpcStatus(status);
    ended_ = true;
    WriteNextLocked();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(mu_);
    writing_ = false;
    if (!ok) {  // The client is gone: the rest cannot be sent.
      queue_.clear();
      return;
    }
    WriteNextLocked();
  }

  void OnCancel() override {
    std::shared_ptr<InferHandle> handle;
    {
      std::lock_guard lock(mu_);
      cancelled_ = true;
      handle = handle_;
    }
    if (handle != nullptr) handle->Cancel();
  }

  void OnDone() override {
    std::shared_ptr<InferStreamReactor> self;
    std::lock_guard lock(mu_);
    self = std::move(self_);  // Released after the lock.
  }

 private:
  InferStreamReactor() = default;

  void Queue(const v1::InferChunk& chunk) {
    std::lock_guard lock(mu_);
    QueueLocked(chunk);
    WriteNextLocked();
  }
  void QueueLocked(const v1::InferChunk& chunk)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    grpc::ByteBuffer buffer;
    bool own = false;
    if (grpc::SerializationTraits<v1::InferChunk>::Serialize(chunk, &buffer,
                                                             &own)
            .ok()) {
      queue_.push_back(std::move(buffer));
    }
  }
  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_) return;
    if (!queue_.empty()) {
      current_ = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
      StartWrite(&current_);
      return;
    }
    if (ended_) {
      finished_ = true;
      Finish(final_status_);
    }
  }

  // The generation it started on, which it finishes on.
  std::shared_ptr<Gateway> gateway_;
  v1::InferRequest request_;  // Lives until OnDone, past the sink's end.
  std::mutex mu_;             // std:: so ThreadSanitizer sees it.
  std::shared_ptr<InferStreamReactor> self_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<InferHandle> handle_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<grpc::ByteBuffer> queue_ ABSL_GUARDED_BY(mu_);
  grpc::ByteBuffer current_ ABSL_GUARDED_BY(mu_);  // Being written.
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
};

using grpc::ByteBuffer;

class GatewayGrpc final : public v1::Gateway::WithRawCallbackMethod_Infer<
                              v1::Gateway::WithRawCallbackMethod_InferStream<
                                  v1::Gateway::WithRawCallbackMethod_Feedback<
                                      v1::Gateway::Service>>> {
 public:
  explicit GatewayGrpc(GatewayHost& host) : host_(host) {}

  grpc::ServerUnaryReactor* Infer(grpc::CallbackServerContext* context,
                                  const ByteBuffer* request,
                                  ByteBuffer* response) override {
    std::shared_ptr<Gateway> gateway = host_.Current();
    absl::StatusOr<auth::Caller> caller = CallerOf(*gateway, context);
    if (!caller.ok()) return Refuse(context, caller.status());
    return Serve<v1::InferRequest, v1::InferResponse>(
        context, request, response,
        [context, tenant = caller->tenant, gateway = std::move(gateway)](
            const v1::InferRequest& r, v1::InferResponse* out,
            RetrievalService::Done done) mutable {
          RequestPipeline& pipeline = gateway->pipeline();
          // Held until the call ends: it finishes on the config it began on.
          InferWhole(
              pipeline, r, DeadlineOf(context), out,
              [done = std::move(done),
               gateway = std::move(gateway)](absl::Status status) mutable {
                std::move(done)(std::move(status));
              },
              tenant);
        });
  }

  grpc::ServerWriteReactor<ByteBuffer>* InferStream(
      grpc::CallbackServerContext* context,
      const ByteBuffer* request) override {
    return InferStreamReactor::Start(host_.Current(), context, request);
  }

  grpc::ServerUnaryReactor* Feedback(grpc::CallbackServerContext* context,
                                     const ByteBuffer* request,
                                     ByteBuffer* response) override {
    std::shared_ptr<Gateway> gateway = host_.Current();
    absl::StatusOr<auth::Caller> caller = CallerOf(*gateway, context);
    if (!caller.ok()) return Refuse(context, caller.status());
    std::optional<std::string> tenant;
    if (caller->role == auth::Role::kTenant) tenant = caller->tenant->name;
    return Serve<v1::FeedbackRequest, v1::FeedbackResponse>(
        context, request, response,
        AnswerNow<v1::FeedbackRequest, v1::FeedbackResponse>(
            [gateway = std::move(gateway),
             tenant = std::move(tenant)](const auto& r) {
              return gateway->feedback().Record(r, tenant);
            }));
  }

 private:
  GatewayHost& host_;
};

class AdminGrpc final
    : public v1::Admin::WithRawCallbackMethod_GetRouteStats<
          v1::Admin::WithRawCallbackMethod_GetExperiment<
              v1::Admin::WithRawCallbackMethod_GetEconomics<
                  v1::Admin::WithRawCallbackMethod_ReloadConfig<
                      v1::Admin::Service>>>> {
 public:
  explicit AdminGrpc(GatewayHost& host) : host_(host) {}

  grpc::ServerUnaryReactor* GetRouteStats(grpc::CallbackServerContext* context,
                                          const ByteBuffer* request,
                                          ByteBuffer* response) override {
    if (absl::Status admitted =
            AdminOnly(host_, context, "Admin.GetRouteStats");
        !admitted.ok()) {
      return Refuse(context, admitted);
    }
    return Serve<v1::GetRouteStatsRequest, v1::GetRouteStatsResponse>(
        context, request, response,
        AnswerNow<v1::GetRouteStatsRequest, v1::GetRouteStatsResponse>(
            [this](const auto& r) {
              return host_.Current()->admin().GetRouteStats(r);
            }));
  }

  grpc::ServerUnaryReactor* GetExperiment(grpc::CallbackServerContext* context,
                                          const ByteBuffer* request,
                                          ByteBuffer* response) override {
    if (absl::Status admitted =
            AdminOnly(host_, context, "Admin.GetExperiment");
        !admitted.ok()) {
      return Refuse(context, admitted);
    }
    return Serve<v1::GetExperimentRequest, v1::ExperimentAnalysis>(
        context, request, response,
        AnswerNow<v1::GetExperimentRequest, v1::ExperimentAnalysis>(
            [this](const auto& r) {
              return host_.Current()->admin().GetExperiment(r);
            }));
  }

  grpc::ServerUnaryReactor* GetEconomics(grpc::CallbackServerContext* context,
                                         const ByteBuffer* request,
                                         ByteBuffer* response) override {
    if (absl::Status admitted = AdminOnly(host_, context, "Admin.GetEconomics");
        !admitted.ok()) {
      return Refuse(context, admitted);
    }
    return Serve<v1::GetEconomicsRequest, v1::GetEconomicsResponse>(
        context, request, response,
        AnswerNow<v1::GetEconomicsRequest, v1::GetEconomicsResponse>(
            [this](const auto& r) {
              return host_.Current()->admin().GetEconomics(r);
            }));
  }

  grpc::ServerUnaryReactor* ReloadConfig(grpc::CallbackServerContext* context,
                                         const ByteBuffer* request,
                                         ByteBuffer* response) override {
    if (absl::Status admitted = AdminOnly(host_, context, "Admin.ReloadConfig");
        !admitted.ok()) {
      return Refuse(context, admitted);
    }
    return Serve<v1::ReloadConfigRequest, v1::ReloadConfigResponse>(
        context, request, response,
        AnswerNow<v1::ReloadConfigRequest, v1::ReloadConfigResponse>(
            [this](const auto&) -> absl::StatusOr<v1::ReloadConfigResponse> {
              auto report = host_.Reload();
              if (!report.ok()) return report.status();
              v1::ReloadConfigResponse answer;
              answer.set_config_hash(report->config_hash);
              for (const std::string& line : report->changes) {
                answer.add_changes(line);
              }
              return answer;
            }));
  }

 private:
  GatewayHost& host_;
};

// Every method runs on a worker pool; the reactor is finished from there.
class RetrievalGrpc final
    : public v1::Retrieval::WithRawCallbackMethod_Upsert<
          v1::Retrieval::WithRawCallbackMethod_Delete<
              v1::Retrieval::WithRawCallbackMethod_Search<
                  v1::Retrieval::WithRawCallbackMethod_GetCollection<
                      v1::Retrieval::Service>>>> {
 public:
  explicit RetrievalGrpc(GatewayHost& host) : host_(host) {}

  grpc::ServerUnaryReactor* Upsert(grpc::CallbackServerContext* context,
                                   const ByteBuffer* request,
                                   ByteBuffer* response) override {
    if (absl::Status admitted = AdminOnly(host_, context, "Retrieval.Upsert");
        !admitted.ok()) {
      return Refuse(context, admitted);
    }
    return Serve<v1::UpsertRequest, v1::UpsertResponse>(
        context, request, response,
        Answer(host_.foundation().retrieval(), &RetrievalService::Upsert));
  }
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* context,
                                   const ByteBuffer* request,
                                   ByteBuffer* response) override {
    if (absl::Status admitted = AdminOnly(host_, context, "Retrieval.Delete");
        !admitted.ok()) {
      return Refuse(context, admitted);
    }
    return Serve<v1::DeleteRequest, v1::DeleteResponse>(
        context, request, response,
        Answer(host_.foundation().retrieval(), &RetrievalService::Delete));
  }
  grpc::ServerUnaryReactor* Search(grpc::CallbackServerContext* context,
                                   const ByteBuffer* request,
                                   ByteBuffer* response) override {
    const std::shared_ptr<Gateway> gateway = host_.Current();
    absl::StatusOr<auth::Caller> caller = CallerOf(*gateway, context);
    if (!caller.ok()) return Refuse(context, caller.status());
    return Serve<v1::SearchRequest, v1::SearchResponse>(
        context, request, response,
        Searching(
            *caller, &v1::SearchRequest::collection,
            Answer(host_.foundation().retrieval(), &RetrievalService::Search)));
  }
  grpc::ServerUnaryReactor* GetCollection(grpc::CallbackServerContext* context,
                                          const ByteBuffer* request,
                                          ByteBuffer* response) override {
    const std::shared_ptr<Gateway> gateway = host_.Current();
    absl::StatusOr<auth::Caller> caller = CallerOf(*gateway, context);
    if (!caller.ok()) return Refuse(context, caller.status());
    return Serve<v1::GetCollectionRequest, v1::CollectionInfo>(
        context, request, response,
        Searching(*caller, &v1::GetCollectionRequest::name,
                  Answer(host_.foundation().retrieval(),
                         &RetrievalService::GetCollection)));
  }

 private:
  GatewayHost& host_;
};

// Whether another socket listens on `address` ("host:port"): gRPC logs why
// it could not bind but does not return it, so a bind of our own tells.
bool PortInUse(const std::string& address) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos) return false;
  std::string host = address.substr(0, colon);
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), address.c_str() + colon + 1, &hints, &found) !=
      0) {
    return false;
  }
  bool in_use = false;
  for (addrinfo* a = found; a != nullptr && !in_use; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    int on = 1;  // As gRPC binds: a port in TIME_WAIT is free.
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    in_use = bind(fd, a->ai_addr, a->ai_addrlen) != 0 && errno == EADDRINUSE;
    close(fd);
  }
  freeaddrinfo(found);
  return in_use;
}

// Takes out the reflection plugin, which gRPC adds to every server once its
// library is loaded.
class WithoutReflection final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>*
                         plugins) override {
    std::erase_if(*plugins, [](const auto& plugin) {
      return plugin->name() == "proto_server_reflection";
    });
  }
};

// How often gRPC looks at server.tls's files for a rotated certificate.
constexpr unsigned kTlsRefreshSeconds = 5;

// Plain text, or TLS from server.tls's files (checked first, so that a bad
// file fails the start naming it); mutual TLS with a client CA.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> CredentialsFor(
    const v1::Tls& tls) {
  if (!TlsConfigured(tls)) return grpc::InsecureServerCredentials();
  if (auto checked = ReadTlsIdentity(tls); !checked.ok()) {
    return checked.status();
  }
  auto files =
      std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          tls.key_file(), tls.cert_file(), tls.client_ca_file(),
          kTlsRefreshSeconds);
  grpc::experimental::TlsServerCredentialsOptions options(files);
  options.watch_identity_key_cert_pairs();
  if (tls.client_ca_file().empty()) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    options.watch_root_certs();
    options.set_cert_request_type(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

}  // namespace

class GrpcServer::Services {
 public:
  explicit Services(GatewayHost& host)
      : gateway(host), admin(host), retrieval(host) {}
  GatewayGrpc gateway;
  AdminGrpc admin;
  RetrievalGrpc retrieval;
};

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(
    GatewayHost& host, const std::string& address, Readiness* readiness) {
  auto credentials = CredentialsFor(host.Current()->config().server().tls());
  if (!credentials.ok()) return credentials.status();
  auto server = std::unique_ptr<GrpcServer>(new GrpcServer(host));
  server->services_ = std::make_unique<Services>(host);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // gRPC sets SO_REUSEPORT by default: a second gateway on the same port
  // would start and silently take part of the traffic.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  if (!host.Current()->config().server().reflection()) {
    builder.SetOption(std::make_unique<WithoutReflection>());
  }
  builder.AddListeningPort(address, *credentials, &server->port_);
  // Oversized requests get a clear INVALID_ARGUMENT from the gateway up to
  // this transport limit; beyond it gRPC refuses with RESOURCE_EXHAUSTED.
  // In 64 bits: twice a large limit does not fit an int.
  const int64_t receive_limit = std::max<int64_t>(
      4 << 20,
      int64_t{2} * host.Current()->config().server().max_request_bytes());
  builder.SetMaxReceiveMessageSize(static_cast<int>(
      std::min<int64_t>(receive_limit, std::numeric_limits<int>::max())));
  builder.RegisterService(&server->services_->gateway);
  builder.RegisterService(&server->services_->admin);
  builder.RegisterService(&server->services_->retrieval);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    server->server_.reset();
    if (PortInUse(address)) {
      return absl::UnavailableError(absl::StrCat(
          "cannot listen for gRPC on ", address, ": port ",
          address.substr(address.rfind(':') + 1), " is already in use"));
    }
    return absl::UnavailableError(
        absl::StrCat("cannot listen for gRPC on ", address));
  }
  grpc::HealthCheckServiceInterface* health =
      server->server_->GetHealthCheckService();
  if (readiness != nullptr && health != nullptr) {
    server->readiness_ = readiness;
    readiness->Watch([health](bool ready) { health->SetServingStatus(ready); });
  }
  return server;
}

GrpcServer::GrpcServer(GatewayHost& host) : host_(host) {}

GrpcServer::~GrpcServer() {
  if (server_ != nullptr) Shutdown(absl::Seconds(5));
}

void GrpcServer::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  if (readiness_ != nullptr) readiness_->Watch(nullptr);
  if (grpc::HealthCheckServiceInterface* health =
          server_->GetHealthCheckService()) {
    health->SetServingStatus(false);
  }
  const absl::Time grace_over = absl::Now() + grace;
  // gRPC cancels the calls left at its deadline but still waits for their
  // reactors to Finish: at the end of the grace, fail what backends hold so
  // that they do, a moment before gRPC's deadline so that these failures,
  // which say why, reach their clients first. Again while calls remain, for
  // those that reach a backend only now.
  constexpr absl::Duration kFlush = absl::Milliseconds(200);
  absl::Notification drained;
  std::thread drain([&] {
    server_->Shutdown(absl::ToChronoTime(grace_over + kFlush));
    drained.Notify();
  });
  if (!drained.WaitForNotificationWithDeadline(grace_over)) {
    do {
      host_.foundation().CancelInFlight();
    } while (!drained.WaitForNotificationWithTimeout(absl::Milliseconds(100)));
  }
  drain.join();
}

}  // namespace arbiter
