#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace arbiter {

// What a request id carries, so any replica can attribute feedback to the
// right route and task without having served the request.
struct RequestIdParts {
  std::string route;
  std::string task;
  int64_t unix_millis = 0;
  uint64_t nonce = 0;
  // The experiment and arm the request was assigned to; empty if none.
  std::string experiment;
  std::string arm;
};

// "arb1_" + base64url("route|task|millis|nonce[|experiment|arm]|check");
// check is a stable hash of the rest, so a mistyped id is caught rather than
// misattributed.
[[nodiscard]] std::string EncodeRequestId(const RequestIdParts& parts);

// NOT_FOUND when the text is not an id arbiter issued.
[[nodiscard]] absl::StatusOr<RequestIdParts> DecodeRequestId(
    absl::string_view id);

}  // namespace arbiter
