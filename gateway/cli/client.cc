#include "gateway/cli/client.h"

#include <iostream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace arbiter::cli {

std::shared_ptr<grpc::Channel> Connect(const std::string& target) {
  return grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
}

std::string StatusCodeName(grpc::StatusCode code) {
  // gRPC and absl share code numbers.
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

int Fail(absl::string_view message) {
  std::cerr << "arbiter: " << message << "\n";
  return 1;
}

int Fail(const absl::Status& status) { return Fail(status.message()); }

int FailRpc(const grpc::Status& status) {
  return Fail(absl::StrCat(StatusCodeName(status.error_code()), ": ",
                           status.error_message()));
}

}  // namespace arbiter::cli
