#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/status.h"

namespace arbiter::cli {

inline constexpr char kDefaultTarget[] = "127.0.0.1:50051";

// An insecure channel to a gateway (loopback by default).
[[nodiscard]] std::shared_ptr<grpc::Channel> Connect(const std::string& target);

// "UNAVAILABLE", "INVALID_ARGUMENT", ...
[[nodiscard]] std::string StatusCodeName(grpc::StatusCode code);

// Print "arbiter: <why>" to stderr and return the exit code 1.
int Fail(absl::string_view message);
int Fail(const absl::Status& status);
int FailRpc(const grpc::Status& status);

}  // namespace arbiter::cli
