#include "gateway/auth/exposure.h"

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace arbiter::auth {
namespace {

absl::string_view HostOf(absl::string_view address) {
  const size_t colon = address.rfind(':');
  return colon == absl::string_view::npos ? address : address.substr(0, colon);
}

}  // namespace

bool IsLoopbackHost(absl::string_view host) {
  if (absl::ConsumePrefix(&host, "[")) {
    if (!absl::ConsumeSuffix(&host, "]")) return false;
  }
  return host == "localhost" || host == "::1" ||
         (absl::StartsWith(host, "127.") &&
          host.find_first_not_of("0123456789.") == absl::string_view::npos);
}

absl::Status CheckExposure(const v1::Config& config) {
  if (config.has_auth()) return absl::OkStatus();
  std::vector<std::string> exposed;
  auto check = [&](absl::string_view field, const std::string& address) {
    if (address.empty() || address == "off") return;
    if (!IsLoopbackHost(HostOf(address))) {
      exposed.push_back(absl::StrCat(field, " ", address));
    }
  };
  check("server.grpc_listen", config.server().grpc_listen());
  check("server.http_listen", config.server().http_listen());
  if (exposed.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "refusing to listen on ", absl::StrJoin(exposed, " and "),
      ", which is not a loopback address, without authentication: add an "
      "`auth` section with tenant keys (see `arbiter keys create`), or "
      "`auth: {mode: none}` to serve anyone who reaches the port"));
}

std::string OpenAccessWarning(const v1::Config& config) {
  if (!config.has_auth() || config.auth().mode() != v1::AUTH_MODE_NONE) {
    return "";
  }
  return "warning: auth mode none: no API keys are checked; anyone who "
         "reaches the gRPC or HTTP port may call everything, Admin and "
         "Retrieval writes included";
}

}  // namespace arbiter::auth
