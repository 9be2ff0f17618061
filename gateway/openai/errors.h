#pragma once

// Errors as OpenAI's clients read them: an HTTP status and a body
// {"error": {"message", "type", "param", "code"}}, from any absl::Status.
//
//   // A parser or the pipeline says which field is wrong:
//   absl::Status bad = InvalidField("messages[2].content", "must not be
//   empty");
//   // An HTTP handler answers whatever failed:
//   HttpError error = ErrorFor(bad);
//   // error.status == 400, error.body ==
//   //   {"error":{"message":"messages[2].content: must not be empty",
//   //             "type":"invalid_request_error",
//   //             "param":"messages[2].content","code":null}}
//
// The status code picks the HTTP status (the table is in ErrorFor). Two
// codes need to know where the failure came from, which a status payload
// set with WithSource carries:
//   UNAVAILABLE        502 from a backend (unmarked)  | 503 from arbiter
//                      itself (kArbiter: shutting down, overloaded)
//   DEADLINE_EXCEEDED  504 from a backend (unmarked)  | 408 when the client
//                      was too slow (kClient: body not sent in time)
// An unmarked status is taken as the backend's, the common case: backends
// fail far more often than the front.

#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace arbiter::openai {

// Who failed, where the status code alone is ambiguous (see above).
enum class ErrorSource {
  kBackend,  // The backend that was to answer: 502, 504.
  kArbiter,  // arbiter cannot serve now (shutting down, overloaded): 503.
  kClient,   // The client (too slow, went away): 408, 499.
};

// Status payloads: the field path for OpenAI's "param", and the source.
inline constexpr absl::string_view kParamPayload =
    "type.arbiter.dev/arbiter.openai.Param";
inline constexpr absl::string_view kSourcePayload =
    "type.arbiter.dev/arbiter.openai.ErrorSource";

// INVALID_ARGUMENT "param: message", with param attached.
[[nodiscard]] absl::Status InvalidField(absl::string_view param,
                                        absl::string_view message);
// `status` (code and message kept) with param attached; OK stays OK.
[[nodiscard]] absl::Status WithParam(absl::Status status,
                                     absl::string_view param);
// The attached param; otherwise, for a client error (400, 404, 409) whose
// message starts with a field path ("route: unknown route ..."), that path;
// otherwise nullopt (JSON null).
[[nodiscard]] std::optional<std::string> ParamOf(const absl::Status& status);

[[nodiscard]] absl::Status WithSource(absl::Status status, ErrorSource source);
// kBackend when unmarked.
[[nodiscard]] ErrorSource SourceOf(const absl::Status& status);

// OpenAI's error object. param and code are JSON null when unset.
struct ErrorObject {
  std::string message;
  std::string type;
  std::optional<std::string> param;
  std::optional<std::string> code;
};

struct HttpError {
  int status = 500;
  ErrorObject error;
  // {"error": {...}}, UTF-8 whatever the message held.
  std::string body;
  // Response headers to add: "x-should-retry: false" where the official
  // clients would otherwise retry an answer that cannot change (409).
  std::vector<std::pair<std::string, std::string>> headers;
};

// HTTP status, type and code for a failed status:
//   INVALID_ARGUMENT, OUT_OF_RANGE  400 invalid_request_error
//   FAILED_PRECONDITION    400 invalid_request_error "failed_precondition"
//                          (not 409: the official clients retry 409, and
//                          the request cannot succeed as sent)
//   NOT_FOUND              404 invalid_request_error "model_not_found" when
//                          the param is model (else "not_found")
//   ALREADY_EXISTS         409 invalid_request_error "already_exists",
//                          x-should-retry: false
//   ABORTED                409 invalid_request_error "conflict"
//   UNAUTHENTICATED        401 authentication_error "invalid_api_key",
//                          www-authenticate: Bearer
//   PERMISSION_DENIED      403 permission_error "permission_denied"
//   RESOURCE_EXHAUSTED     429 rate_limit_error "rate_limit_exceeded"
//   CANCELLED              499 invalid_request_error "client_closed_request"
//   DEADLINE_EXCEEDED      504 server_error "backend_timeout", or 408
//                          invalid_request_error "request_timeout" (kClient)
//   UNAVAILABLE            502 server_error "backend_unavailable", or 503
//                          server_error "service_unavailable" (kArbiter)
//   UNIMPLEMENTED          501 invalid_request_error "unsupported",
//                          x-should-retry: false
//   INTERNAL, UNKNOWN, DATA_LOSS (and OK, a caller's bug)  500 server_error
[[nodiscard]] HttpError ErrorFor(const absl::Status& status);

// What the front answers itself. 408: the client did not send its request
// in time (the front's read timeout). 499 (nginx's "client closed
// request"): the client went away before the answer; nobody reads it, but
// logs and access metrics say so. 413: the body is over the limit.
[[nodiscard]] HttpError ClientTimeout(absl::string_view message);
[[nodiscard]] HttpError ClientClosed();
[[nodiscard]] HttpError BodyTooLarge(size_t limit_bytes,
                                     absl::string_view limit_name);

// {"error": {...}} for the object.
[[nodiscard]] std::string RenderErrorBody(const ErrorObject& error);

// An error after a stream's 200 went out, as OpenAI sends it (the official
// clients throw an APIError with this message): one SSE event
// `data: {"error": {...}}\n\n`. The stream ends after it, without [DONE].
[[nodiscard]] std::string RenderStreamError(const absl::Status& status);

}  // namespace arbiter::openai
