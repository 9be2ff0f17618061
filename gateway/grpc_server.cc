#include "gateway/grpc_server.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server_builder.h"

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

// Answers a unary call at once from a synchronous gateway method: these
// touch only local state (statistics, the document store), never a backend.
template <typename Request, typename Response, typename Method>
grpc::ServerUnaryReactor* AnswerNow(grpc::CallbackServerContext* context,
                                    const Request* request, Response* response,
                                    Method method) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto result = method(*request);
  if (result.ok()) *response = *std::move(result);
  reactor->Finish(ToGrpcStatus(result.status()));
  return reactor;
}

class GatewayService final : public v1::Gateway::CallbackService {
 public:
  explicit GatewayService(Gateway& gateway) : gateway_(gateway) {}

  grpc::ServerUnaryReactor* Infer(grpc::CallbackServerContext* context,
                                  const v1::InferRequest* request,
                                  v1::InferResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    gateway_.Infer(*request, DeadlineOf(context), response,
                   [reactor](absl::Status status) {
                     reactor->Finish(ToGrpcStatus(status));
                   });
    return reactor;
  }

  grpc::ServerUnaryReactor* Feedback(grpc::CallbackServerContext* context,
                                     const v1::FeedbackRequest* request,
                                     v1::FeedbackResponse* response) override {
    return AnswerNow(context, request, response,
                     [this](const auto& r) { return gateway_.Feedback(r); });
  }

 private:
  Gateway& gateway_;
};

class AdminService final : public v1::Admin::CallbackService {
 public:
  explicit AdminService(Gateway& gateway) : gateway_(gateway) {}

  grpc::ServerUnaryReactor* GetRouteStats(
      grpc::CallbackServerContext* context,
      const v1::GetRouteStatsRequest* request,
      v1::GetRouteStatsResponse* response) override {
    return AnswerNow(context, request, response, [this](const auto& r) {
      return gateway_.GetRouteStats(r);
    });
  }

  grpc::ServerUnaryReactor* GetExperiment(
      grpc::CallbackServerContext* context,
      const v1::GetExperimentRequest* request,
      v1::ExperimentAnalysis* response) override {
    return AnswerNow(context, request, response, [this](const auto& r) {
      return gateway_.GetExperiment(r);
    });
  }

  grpc::ServerUnaryReactor* GetEconomics(
      grpc::CallbackServerContext* context,
      const v1::GetEconomicsRequest* request,
      v1::GetEconomicsResponse* response) override {
    return AnswerNow(context, request, response, [this](const auto& r) {
      return gateway_.GetEconomics(r);
    });
  }

 private:
  Gateway& gateway_;
};

class RetrievalService final : public v1::Retrieval::CallbackService {
 public:
  explicit RetrievalService(Gateway& gateway) : gateway_(gateway) {}

  grpc::ServerUnaryReactor* Upsert(grpc::CallbackServerContext* context,
                                   const v1::UpsertRequest* request,
                                   v1::UpsertResponse* response) override {
    return AnswerNow(context, request, response,
                     [this](const auto& r) { return gateway_.Upsert(r); });
  }
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* context,
                                   const v1::DeleteRequest* request,
                                   v1::DeleteResponse* response) override {
    return AnswerNow(context, request, response,
                     [this](const auto& r) { return gateway_.Delete(r); });
  }
  grpc::ServerUnaryReactor* Search(grpc::CallbackServerContext* context,
                                   const v1::SearchRequest* request,
                                   v1::SearchResponse* response) override {
    return AnswerNow(context, request, response,
                     [this](const auto& r) { return gateway_.Search(r); });
  }
  grpc::ServerUnaryReactor* GetCollection(
      grpc::CallbackServerContext* context,
      const v1::GetCollectionRequest* request,
      v1::CollectionInfo* response) override {
    return AnswerNow(context, request, response, [this](const auto& r) {
      return gateway_.GetCollection(r);
    });
  }

 private:
  Gateway& gateway_;
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

}  // namespace

class GrpcServer::Services {
 public:
  explicit Services(Gateway& gateway)
      : gateway(gateway), admin(gateway), retrieval(gateway) {}
  GatewayService gateway;
  AdminService admin;
  RetrievalService retrieval;
};

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(
    Gateway& gateway, const std::string& address) {
  auto server = std::unique_ptr<GrpcServer>(new GrpcServer(gateway));
  server->services_ = std::make_unique<Services>(gateway);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // gRPC sets SO_REUSEPORT by default: a second gateway on the same port
  // would start and silently take part of the traffic.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(),
                           &server->port_);
  // Oversized requests get a clear INVALID_ARGUMENT from the gateway up to
  // this transport limit; beyond it gRPC refuses with RESOURCE_EXHAUSTED.
  builder.SetMaxReceiveMessageSize(
      std::max(4 << 20, 2 * gateway.config().server().max_request_bytes()));
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
  return server;
}

GrpcServer::GrpcServer(Gateway& gateway) : gateway_(gateway) {}

GrpcServer::~GrpcServer() {
  if (server_ != nullptr) Shutdown(absl::Seconds(5));
}

void GrpcServer::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
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
      gateway_.CancelInFlight();
    } while (!drained.WaitForNotificationWithTimeout(absl::Milliseconds(100)));
  }
  drain.join();
}

void GrpcServer::Wait() { server_->Wait(); }

}  // namespace arbiter
