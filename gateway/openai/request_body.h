#pragma once

// Reading a request body of the OpenAI-compatible front: a JSON object,
// UTF-8, nested at most kMaxJsonDepth levels, every error naming the field
// (its path, also attached as the param; see errors.h):
//
//   auto body = ParseRequestBody(text);
//   if (!body.ok()) return body.status();
//   //   "messages[0].content: invalid UTF-8 at byte 61 of the body"
//   json::View root(*body);
//   if (absl::Status s = CheckMembers(root, {"model", "input"}); !s.ok())
//     return s;  // "inptu: unknown field"
//   auto model = Read(root["model"], &json::View::String);
//   //   "model: expected a string, got a number", param "model"

#include <initializer_list>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/json.h"
#include "gateway/openai/errors.h"
#include "nlohmann/json.hpp"

namespace arbiter::openai {

// Deeper bodies are refused before parsing: nlohmann copies, compares and
// serializes recursively, and the front's threads must not run out of
// stack on "[[[[...". OpenAI requests nest a few levels; tools' JSON
// schemas a dozen at most.
inline constexpr int kMaxJsonDepth = 64;

// INVALID_ARGUMENT (param attached where a field is to blame) unless `body`
// is one JSON object, UTF-8, nested at most kMaxJsonDepth. Never throws.
[[nodiscard]] absl::StatusOr<nlohmann::json> ParseRequestBody(
    absl::string_view body);

// Whether JSON text opens more than `depth` arrays or objects at once
// (strings' brackets do not count).
[[nodiscard]] bool NestedDeeperThan(absl::string_view text, int depth);

// A member name or path as a message and param show it: at most 64 bytes
// of what the client sent ("..." after a cut), so a 1 MB key cannot make a
// 1 MB error.
[[nodiscard]] std::string ShownName(absl::string_view name);

// 400 naming the first member of `object` not in `known` ("temprature:
// unknown field"; "messages[1].nmae: unknown field").
[[nodiscard]] absl::Status CheckMembers(
    const json::View& object, std::initializer_list<absl::string_view> known);

// A typed getter's result with the field's path attached as param.
template <typename T>
[[nodiscard]] absl::StatusOr<T> Param(absl::StatusOr<T> value,
                                      const json::View& at) {
  if (!value.ok()) return WithParam(value.status(), at.path());
  return value;
}

[[nodiscard]] inline absl::Status Param(absl::Status status,
                                        const json::View& at) {
  return WithParam(std::move(status), at.path());
}

// Reads a field with one of View's getters, param attached:
//   Read(root["seed"], &json::View::OptionalInt)  // nullopt when absent
//   Read(root["model"], &json::View::String)      // "model: missing ..."
template <typename Getter>
[[nodiscard]] auto Read(const json::View& at, Getter getter) {
  return Param((at.*getter)(), at);
}

}  // namespace arbiter::openai
