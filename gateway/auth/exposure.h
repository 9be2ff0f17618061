#pragma once

// Secure by default: a gateway without an `auth` section serves anyone who
// reaches it, so it listens on loopback addresses only.
//
//   CheckExposure(config);  // FAILED_PRECONDITION for grpc_listen
//                           // 0.0.0.0:50051 and no auth section

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "arbiter/v1/config.pb.h"

namespace arbiter::auth {

// 127.0.0.0/8, ::1 and localhost, with or without brackets.
[[nodiscard]] bool IsLoopbackHost(absl::string_view host);

// FAILED_PRECONDITION naming each of server.grpc_listen and
// server.http_listen that is not on a loopback address when the config has
// no auth section, saying how to add one; OK otherwise.
[[nodiscard]] absl::Status CheckExposure(const v1::Config& config);

// The warning `auth: {mode: none}` earns at start, or "" for any other.
[[nodiscard]] std::string OpenAccessWarning(const v1::Config& config);

}  // namespace arbiter::auth
