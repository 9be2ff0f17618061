#pragma once

#include <memory>
#include <string>

#include "grpcpp/channel.h"
#include "grpcpp/support/status.h"

namespace arbiter::cli {

inline constexpr char kDefaultTarget[] = "127.0.0.1:50051";

// An insecure channel to a gateway (loopback by default).
[[nodiscard]] std::shared_ptr<grpc::Channel> Connect(const std::string& target);

// "UNAVAILABLE", "INVALID_ARGUMENT", ...
[[nodiscard]] std::string StatusCodeName(grpc::StatusCode code);

}  // namespace arbiter::cli
