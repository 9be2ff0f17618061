#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "gateway/gateway.h"
#include "grpcpp/server.h"

namespace arbiter {

// Converts an internal status to the wire; the one place this happens.
[[nodiscard]] grpc::Status ToGrpcStatus(const absl::Status& status);

// The gRPC front: Gateway and Admin services on the callback API (no thread
// waits on a backend), plus health checking and reflection.
class GrpcServer final {
 public:
  // Listens on `address` (port 0 lets the OS choose; see port()).
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(
      Gateway& gateway, const std::string& address);
  ~GrpcServer();

  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  [[nodiscard]] int port() const { return port_; }
  // Stops taking calls, lets running ones finish for up to `grace`.
  void Shutdown(absl::Duration grace);
  void Wait();

  class Services;

 private:
  GrpcServer() = default;

  std::unique_ptr<Services> services_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace arbiter
