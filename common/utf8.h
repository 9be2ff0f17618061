#pragma once

// UTF-8 checks for text that enters from outside: files, requests and
// backends. Protobuf strings, JSON and Prometheus labels must be UTF-8;
// invalid bytes are found or repaired at the boundary, never passed on.
//
//   if (auto bad = FirstInvalidUtf8(text)) {
//     return absl::InvalidArgumentError(
//         absl::StrCat("text: invalid UTF-8 at byte ", *bad));
//   }
//   std::string clean = RepairUtf8(text);  // Each bad sequence -> U+FFFD.

#include <cstddef>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace arbiter {

// The byte offset of the first byte that does not start a well-formed
// UTF-8 sequence (overlong forms, surrogates and code points above
// U+10FFFF are ill-formed), or nullopt when all of `text` is valid.
[[nodiscard]] std::optional<size_t> FirstInvalidUtf8(absl::string_view text);

[[nodiscard]] inline bool IsValidUtf8(absl::string_view text) {
  return !FirstInvalidUtf8(text).has_value();
}

// `text` with each maximal ill-formed subsequence replaced by U+FFFD, as
// the Unicode standard recommends; counts the replacements in *replaced.
[[nodiscard]] std::string RepairUtf8(absl::string_view text,
                                     size_t* replaced = nullptr);

// At text[i] (i < text.size()): the length of the well-formed sequence
// there, or the length of the maximal ill-formed prefix to replace with one
// U+FFFD, negated (-1 for a byte that starts no sequence).
[[nodiscard]] int Utf8SequenceAt(absl::string_view text, size_t i);

// The longest prefix of at most max_bytes that does not split a character.
[[nodiscard]] absl::string_view TruncateUtf8(absl::string_view text,
                                             size_t max_bytes);

}  // namespace arbiter
