#include "gateway/openai/errors.h"

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "gateway/openai/render.h"

namespace arbiter::openai {
namespace {

absl::string_view SourceName(ErrorSource source) {
  switch (source) {
    case ErrorSource::kBackend:
      return "backend";
    case ErrorSource::kArbiter:
      return "arbiter";
    case ErrorSource::kClient:
      return "client";
  }
  return "backend";
}

bool IsPathChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' ||
         c == '.' || c == '[' || c == ']' || c == '-';
}

// "messages[2].content" from "messages[2].content: must not be empty"; empty
// when the message does not start with a field path ("backend \"x\": ...",
// "not valid JSON at byte 3: ...").
std::string LeadingPath(absl::string_view message) {
  const size_t colon = message.find(": ");
  if (colon == 0 || colon == absl::string_view::npos || colon > 256) return "";
  const absl::string_view path = message.substr(0, colon);
  if (!absl::ascii_isalpha(static_cast<unsigned char>(path[0]))) return "";
  for (char c : path) {
    if (!IsPathChar(c)) return "";
  }
  // The pipeline's "request: N bytes exceeds..." is about no one field.
  if (path == "request") return "";
  return std::string(path);
}

struct Mapping {
  int status;
  absl::string_view type;
  absl::string_view code;  // Empty: JSON null.
  bool do_not_retry = false;
};

Mapping MappingFor(const absl::Status& status,
                   const std::optional<std::string>& param) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return {400, "invalid_request_error", ""};
    case absl::StatusCode::kFailedPrecondition:
      return {400, "invalid_request_error", "failed_precondition"};
    case absl::StatusCode::kNotFound:
      return {404, "invalid_request_error",
              param == "model" ? "model_not_found" : "not_found"};
    case absl::StatusCode::kAlreadyExists:
      return {409, "invalid_request_error", "already_exists", true};
    case absl::StatusCode::kAborted:
      return {409, "invalid_request_error", "conflict"};
    case absl::StatusCode::kUnauthenticated:
      return {401, "authentication_error", "invalid_api_key"};
    case absl::StatusCode::kPermissionDenied:
      return {403, "permission_error", "permission_denied"};
    case absl::StatusCode::kResourceExhausted:
      return {429, "rate_limit_error", "rate_limit_exceeded"};
    case absl::StatusCode::kCancelled:
      return {499, "invalid_request_error", "client_closed_request"};
    case absl::StatusCode::kDeadlineExceeded:
      if (SourceOf(status) == ErrorSource::kClient) {
        return {408, "invalid_request_error", "request_timeout"};
      }
      return {504, "server_error", "backend_timeout"};
    case absl::StatusCode::kUnavailable:
      if (SourceOf(status) == ErrorSource::kArbiter) {
        return {503, "server_error", "service_unavailable"};
      }
      return {502, "server_error", "backend_unavailable"};
    case absl::StatusCode::kUnimplemented:
      return {501, "invalid_request_error", "unsupported", true};
    default:
      return {500, "server_error", ""};
  }
}

Out ErrorJson(const ErrorObject& error) {
  Out object = Out::object();
  object["message"] = error.message;
  object["type"] = error.type;
  object["param"] = error.param.has_value() ? Out(*error.param) : Out(nullptr);
  object["code"] = error.code.has_value() ? Out(*error.code) : Out(nullptr);
  Out out = Out::object();
  out["error"] = std::move(object);
  return out;
}

}  // namespace

absl::Status InvalidField(absl::string_view param, absl::string_view message) {
  return WithParam(
      absl::InvalidArgumentError(absl::StrCat(param, ": ", message)), param);
}

absl::Status WithParam(absl::Status status, absl::string_view param) {
  if (!status.ok()) status.SetPayload(kParamPayload, absl::Cord(param));
  return status;
}

std::optional<std::string> ParamOf(const absl::Status& status) {
  if (auto payload = status.GetPayload(kParamPayload); payload.has_value()) {
    return std::string(*payload);
  }
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists: {
      std::string path = LeadingPath(status.message());
      if (!path.empty()) return path;
      return std::nullopt;
    }
    default:
      return std::nullopt;
  }
}

absl::Status WithSource(absl::Status status, ErrorSource source) {
  if (!status.ok()) {
    status.SetPayload(kSourcePayload, absl::Cord(SourceName(source)));
  }
  return status;
}

ErrorSource SourceOf(const absl::Status& status) {
  const auto payload = status.GetPayload(kSourcePayload);
  if (payload.has_value()) {
    if (*payload == SourceName(ErrorSource::kArbiter)) {
      return ErrorSource::kArbiter;
    }
    if (*payload == SourceName(ErrorSource::kClient)) {
      return ErrorSource::kClient;
    }
  }
  return ErrorSource::kBackend;
}

HttpError ErrorFor(const absl::Status& status) {
  const absl::Status failed =
      status.ok()
          ? absl::InternalError("the gateway reported an error without one")
          : status;
  HttpError out;
  out.error.param = ParamOf(failed);
  const Mapping mapping = MappingFor(failed, out.error.param);
  out.status = mapping.status;
  out.error.type = std::string(mapping.type);
  if (!mapping.code.empty()) out.error.code = std::string(mapping.code);
  out.error.message =
      failed.message().empty()
          ? absl::StrCat(absl::StatusCodeToString(failed.code()), " (HTTP ",
                         mapping.status, ")")
          : std::string(failed.message());
  out.body = RenderErrorBody(out.error);
  if (mapping.do_not_retry) out.headers.emplace_back("x-should-retry", "false");
  // RFC 6750: a 401 names the scheme the client should authenticate with.
  if (out.status == 401) out.headers.emplace_back("www-authenticate", "Bearer");
  return out;
}

HttpError ClientTimeout(absl::string_view message) {
  return ErrorFor(
      WithSource(absl::DeadlineExceededError(message), ErrorSource::kClient));
}

HttpError ClientClosed() {
  return ErrorFor(WithSource(
      absl::CancelledError("the client closed the connection before the "
                           "answer"),
      ErrorSource::kClient));
}

HttpError BodyTooLarge(size_t limit_bytes, absl::string_view limit_name) {
  HttpError out;
  out.status = 413;
  out.error.message = absl::StrCat("the request body exceeds the limit of ",
                                   limit_bytes, " bytes (", limit_name, ")");
  out.error.type = "invalid_request_error";
  out.error.code = "request_too_large";
  out.body = RenderErrorBody(out.error);
  return out;
}

std::string RenderErrorBody(const ErrorObject& error) {
  return Dump(ErrorJson(error));
}

std::string RenderStreamError(const absl::Status& status) {
  return absl::StrCat("data: ", ErrorFor(status).body, "\n\n");
}

}  // namespace arbiter::openai
