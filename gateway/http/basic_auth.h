#pragma once

#include <string>

#include "gateway/http/http_server.h"

namespace arbiter::http {

// Who may call a handler: HTTP basic auth (RFC 7617) against a username and
// the hex SHA-256 of the password, so that no password sits in the config.
struct BasicAuthCredentials {
  std::string username;
  std::string password_sha256;  // 64 hex digits, either case.
};

// `inner`, answered only for a request whose Authorization header carries
// `credentials`; anything else gets 401 with a Basic challenge for `realm`.
// Both parts are compared in constant time.
//
//   routes.Add(Verb::get, "/metrics",
//              RequireBasicAuth({"prometheus", hash}, "arbiter metrics",
//                               MetricsHandler(registry)));
[[nodiscard]] Handler RequireBasicAuth(BasicAuthCredentials credentials,
                                       std::string realm, Handler inner);

}  // namespace arbiter::http
