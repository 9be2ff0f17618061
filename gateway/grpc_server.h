#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "gateway/gateway_host.h"
#include "gateway/readiness.h"
#include "grpcpp/server.h"

namespace arbiter {

// Converts an internal status to the wire; the one place this happens.
[[nodiscard]] grpc::Status ToGrpcStatus(const absl::Status& status);

// The gRPC front: Gateway and Admin services on the callback API (no thread
// waits on a backend), plus health checking and reflection. Each call's
// `authorization` metadata is checked by the generation's authenticator
// (gateway/auth) before the call is read: Admin and Retrieval writes need
// an admin key, Search a collection the tenant may read.
class GrpcServer final {
 public:
  // Listens on `address` (port 0 lets the OS choose; see port()), alone:
  // UNAVAILABLE saying so when another process listens there. With
  // server.tls, over TLS (mutual with a client CA), taking rotated files
  // within seconds; INVALID_ARGUMENT naming a file that does not read. Health checks
  // follow `readiness` (NOT_SERVING when no route can serve), which must
  // outlive the server; without one they say SERVING until Shutdown.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(
      GatewayHost& host, const std::string& address,
      Readiness* readiness = nullptr);
  ~GrpcServer();

  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  [[nodiscard]] int port() const { return port_; }
  // Reports NOT_SERVING to health checks (load balancers stop sending),
  // stops taking calls and lets running ones finish for up to `grace`; then
  // fails what backends still hold (GatewayFoundation::CancelInFlight) so that
  // every call ends. Returns when all have.
  void Shutdown(absl::Duration grace);

  class Services;

 private:
  explicit GrpcServer(GatewayHost& host);

  GatewayHost& host_;
  Readiness* readiness_ = nullptr;
  std::unique_ptr<Services> services_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace arbiter
