#pragma once

// Reading JSON that came from outside (backends, embedding servers, files,
// the command line) without exceptions. nlohmann::json throws on a wrong
// type (`value()`, `get<>()`) and on invalid UTF-8 (`dump()`); an exception
// on a library thread (the curl loop, a gRPC callback) ends the process.
// Everything here reports problems as absl::Status naming the field path:
//
//   auto body = json::Parse(text);
//   if (!body.ok()) return body.status();   // "line 1, column 9: ..."
//   json::View root(*body);
//   auto content = root["choices"][0]["message"]["content"].String();
//   // content.status(): "choices[0].message.content: expected a string,
//   //                    got null"

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace arbiter::json {

// Deeper JSON is refused before parsing: nlohmann copies, compares and
// serializes recursively, and a server's "[[[[..." must not run a thread
// out of stack.
inline constexpr int kMaxDepth = 256;

// INVALID_ARGUMENT saying where the text stops being JSON (the byte offset
// and why, never the text itself: it may be a server's and reach a client),
// or that it nests deeper than kMaxDepth. Never throws.
[[nodiscard]] absl::StatusOr<nlohmann::json> Parse(absl::string_view text);

// The byte at which `text` opens its (depth + 1)-th nested array or object
// (brackets inside strings do not count), or npos.
[[nodiscard]] size_t DeeperThanAt(absl::string_view text, int depth);

// Parse after replacing invalid UTF-8 with U+FFFD: for answers of servers,
// where a stray byte must not fail fields the reader never looks at.
[[nodiscard]] absl::StatusOr<nlohmann::json> ParseRepairingUtf8(
    absl::string_view text);

// Serializes; invalid UTF-8 in strings becomes U+FFFD instead of throwing.
// indent < 0: compact.
[[nodiscard]] std::string Dump(const nlohmann::json& value, int indent = -1);

// The JSON type's name as a message would say it: "null", "a string"...
[[nodiscard]] absl::string_view TypeName(const nlohmann::json& value);

// A read-only position in a JSON document that remembers its path. Indexing
// a missing key, a non-object or an out-of-range element gives a missing
// view rather than throwing; the typed getters then say what was expected.
// Cheap to copy; the document must outlive it.
class View final {
 public:
  explicit View(const nlohmann::json& value, std::string path = "");

  // A member ("a.b") or an element ("a[2]").
  [[nodiscard]] View operator[](absl::string_view key) const;
  [[nodiscard]] View operator[](size_t index) const;

  [[nodiscard]] bool exists() const { return value_ != nullptr; }
  // Missing or JSON null.
  [[nodiscard]] bool is_null() const {
    return value_ == nullptr || value_->is_null();
  }
  [[nodiscard]] bool is_object() const {
    return value_ != nullptr && value_->is_object();
  }
  [[nodiscard]] bool is_array() const {
    return value_ != nullptr && value_->is_array();
  }
  // Elements of an array or members of an object; 0 otherwise.
  [[nodiscard]] size_t size() const;
  // "choices[0].message", or "the document" at the root.
  [[nodiscard]] const std::string& path() const { return path_; }
  // nullptr when missing.
  [[nodiscard]] const nlohmann::json* get() const { return value_; }

  // INVALID_ARGUMENT "path: missing" or "path: expected ..., got ...".
  [[nodiscard]] absl::StatusOr<std::string> String() const;
  [[nodiscard]] absl::StatusOr<bool> Bool() const;
  // Any finite number.
  [[nodiscard]] absl::StatusOr<double> Number() const;
  // An integral number (2.0 counts) that fits int64.
  [[nodiscard]] absl::StatusOr<int64_t> Int() const;
  // Fails unless the value is an object (or an array).
  [[nodiscard]] absl::Status RequireObject() const;
  [[nodiscard]] absl::Status RequireArray() const;

  // As above, but a missing or null field is nullopt rather than an error;
  // a present field of the wrong type is still an error.
  [[nodiscard]] absl::StatusOr<std::optional<std::string>> OptionalString()
      const;
  [[nodiscard]] absl::StatusOr<std::optional<bool>> OptionalBool() const;
  [[nodiscard]] absl::StatusOr<std::optional<double>> OptionalNumber() const;
  [[nodiscard]] absl::StatusOr<std::optional<int64_t>> OptionalInt() const;

 private:
  View(const nlohmann::json* value, std::string path)
      : value_(value), path_(std::move(path)) {}
  absl::Status WrongType(absl::string_view expected) const;

  const nlohmann::json* value_;
  std::string path_;
};

}  // namespace arbiter::json
