#include "gateway/grpc_server.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"
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
  auto server = std::unique_ptr<GrpcServer>(new GrpcServer());
  server->services_ = std::make_unique<Services>(gateway);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(),
                           &server->port_);
  // Oversized requests get a clear INVALID_ARGUMENT from the gateway up to
  // this transport limit; beyond it gRPC refuses with RESOURCE_EXHAUSTED.
  // In 64 bits: twice a large limit does not fit an int.
  const int64_t receive_limit = std::max<int64_t>(
      4 << 20, int64_t{2} * gateway.config().server().max_request_bytes());
  builder.SetMaxReceiveMessageSize(static_cast<int>(
      std::min<int64_t>(receive_limit, std::numeric_limits<int>::max())));
  builder.RegisterService(&server->services_->gateway);
  builder.RegisterService(&server->services_->admin);
  builder.RegisterService(&server->services_->retrieval);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for gRPC on ", address));
  }
  return server;
}

GrpcServer::~GrpcServer() {
  if (server_ != nullptr) Shutdown(absl::Seconds(5));
}

void GrpcServer::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
}

void GrpcServer::Wait() { server_->Wait(); }

}  // namespace arbiter
