#pragma once

// How an error message shows what a caller sent: in quotes, at most
// kMaxQuotedBytes of it, control characters escaped and invalid UTF-8
// repaired, so a 100 KB request id cannot make the answer itself too big
// for gRPC's metadata, nor a stray byte make it invalid.
//
//   QuoteInput("faq")            -> "\"faq\""
//   QuoteInput(100'000 x 'a')    -> "\"aaaa...aaa\"... (100000 bytes)"

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace arbiter {

inline constexpr size_t kMaxQuotedBytes = 128;

[[nodiscard]] std::string QuoteInput(absl::string_view input,
                                     size_t max_bytes = kMaxQuotedBytes);

}  // namespace arbiter
