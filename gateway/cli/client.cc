#include "gateway/cli/client.h"

#include <iostream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace arbiter::cli {

GatewayChannel::GatewayChannel(std::string target)
    : target_(std::move(target)),
      channel_(
          grpc::CreateChannel(target_, grpc::InsecureChannelCredentials())) {}

std::string GatewayChannel::Unreachable(absl::string_view why) const {
  return absl::StrCat("cannot reach a gateway at ", target_, " (", why,
                      "); `arbiter serve` must be running there, or point "
                      "--target at one");
}

std::string GatewayChannel::Describe(const grpc::Status& status) const {
  std::string answer = absl::StrCat(StatusCodeName(status.error_code()), ": ",
                                    status.error_message());
  // A gateway's own UNAVAILABLE (a backend down) comes over a ready channel;
  // a refused or unresolvable address leaves it unconnected.
  const bool never_connected =
      (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
       status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) &&
      channel_->GetState(/*try_to_connect=*/false) != GRPC_CHANNEL_READY;
  return never_connected ? Unreachable(answer) : answer;
}

int GatewayChannel::Fail(const grpc::Status& status) const {
  return cli::Fail(Describe(status));
}

absl::Status GatewayChannel::WaitUntilConnected(absl::Duration timeout) const {
  const auto deadline = absl::ToChronoTime(absl::Now() + timeout);
  grpc_connectivity_state state = channel_->GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY) {
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE ||
        state == GRPC_CHANNEL_SHUTDOWN) {
      return absl::UnavailableError(Unreachable("the connection failed"));
    }
    if (!channel_->WaitForStateChange(state, deadline)) {
      return absl::UnavailableError(Unreachable(absl::StrCat(
          "no connection within ", absl::FormatDuration(timeout))));
    }
    state = channel_->GetState(/*try_to_connect=*/true);
  }
  return absl::OkStatus();
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

}  // namespace arbiter::cli
